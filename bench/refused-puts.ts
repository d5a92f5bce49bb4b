// Memory of a real agent (on one nspawn machine) under refused unit PUTs: its RSS idle, then after
// each of three rounds of 1 000 refused 1 MB PUTs (half with a Content-Length, half chunked; each
// body is read to its end and dropped, see readBody in agent/api/server.ts), then after 1 000 PUTs
// of 450 KB units that are read, parsed and refused by the 64 KiB unit cap. A first phase of small
// refused PUTs shows what any traffic costs. Issue 11's bar: RSS flat
// within 10%. The rounds tell a one-off rise (V8 collects dropped upload buffers only once tens of
// MB of them have piled up) from growth per request, which would be a leak. Prints figures only.
//   npx tsx bench/refused-puts.ts [--puts=1000]

import https from "node:https";
import { Cluster, harnessPki, type Machine } from "../test/harness/index.js";
import { httpRequest, waitFor } from "../test/integration/support.js";

const puts = Number(process.argv.find((a) => a.startsWith("--puts="))?.split("=")[1] ?? 1000);

async function agentRssKiB(m: Machine): Promise<number> {
  const pid = (await m.exec(["systemctl", "show", "-P", "MainPID", "flotilla-agent.service"])).stdout.trim();
  const status = (await m.exec(["cat", `/proc/${pid}/status`])).stdout;
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

/** One PUT; resolves with the status. `chunked` sends the body without a Content-Length. */
function put(api: string, name: string, body: string, chunked: boolean): Promise<number> {
  const url = new URL(api);
  return new Promise((resolve, reject) => {
    const req = https.request({
      ...harnessPki().material(),
      host: url.hostname,
      port: url.port,
      method: "PUT",
      path: `/fleet/v1/units/${name}`,
      agent: false,
      headers: {
        "Content-Type": "application/json",
        ...(chunked ? {} : { "Content-Length": Buffer.byteLength(body) }),
      },
    });
    // The server may answer and close before the whole body is sent: an error with no answer yet
    // is counted as status -1.
    req.on("error", (err: NodeJS.ErrnoException) =>
      err.code === "EPIPE" || err.code === "ECONNRESET" ? resolve(-1) : reject(err),
    );
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    if (chunked) {
      for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.slice(i, i + 64 * 1024));
      req.end();
    } else {
      req.end(body);
    }
  });
}

const options = (bytes: number) =>
  Array.from({ length: Math.ceil(bytes / 1950) }, (_, i) => ({
    section: "Service",
    name: "Environment",
    value: `V${i}=${"x".repeat(1900)}`,
  }));
const mega = JSON.stringify({ desiredState: "launched", options: options(1_000_000) });
const large = JSON.stringify({ desiredState: "launched", options: options(450_000) });

const cluster = await Cluster.start({ machines: 1 });
try {
  const m = cluster.machines[0] as Machine;
  await waitFor(
    "the agent's API",
    async () => (await httpRequest("GET", m.apiURL, "/flotilla/v1/health")).status === 200,
    60_000,
  );
  // Let the agent finish starting (first passes, JIT) before the baseline.
  await new Promise((r) => setTimeout(r, 10_000));
  const phases: [string, number][] = [["idle", await agentRssKiB(m)]];

  const run = async (
    what: string,
    body: string,
    chunked: (i: number) => boolean,
    name = (i: number) => `refused-${i}.service`,
  ) => {
    const statuses = new Map<number, number>();
    const t0 = performance.now();
    for (let i = 0; i < puts; i++) {
      const status = await put(m.apiURL, name(i), body, chunked(i));
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
    const seconds = (performance.now() - t0) / 1000;
    const rss = await agentRssKiB(m);
    phases.push([what, rss]);
    console.log(
      `${puts} ${what}: statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${seconds.toFixed(1)} s, agent RSS ${(rss / 1024).toFixed(1)} MiB`,
    );
  };
  console.log(`agent RSS idle: ${((phases[0]?.[1] ?? 0) / 1024).toFixed(1)} MiB`);
  // A control: small refused PUTs (a name systemd refuses), to tell what any traffic costs.
  await run(
    "refused small PUTs (400, bad name)",
    JSON.stringify({ options: options(1_000) }),
    () => false,
    (i) => `bad-${i}.busname`,
  );
  for (const round of [1, 2, 3]) {
    await run(
      `refused ${(mega.length / 1e6).toFixed(2)} MB PUTs (half chunked), round ${round}`,
      mega,
      (i) => i % 2 === 1,
    );
  }
  await run(`refused ${(large.length / 1e3).toFixed(0)} KB units (parsed, over 64 KiB)`, large, () => false);

  const health = await httpRequest("GET", m.apiURL, "/flotilla/v1/health");
  const base = phases[0]?.[1] ?? 1;
  const control = phases[1]?.[1] ?? 1;
  const first = phases[2]?.[1] ?? 1;
  for (const [what, rss] of phases.slice(1)) {
    console.log(
      `RSS after ${what}: ${(((rss - base) / base) * 100).toFixed(1)}% vs idle, ${(((rss - control) / control) * 100).toFixed(1)}% vs after the small PUTs, ${(((rss - first) / first) * 100).toFixed(1)}% vs after the first 1 MB round`,
    );
  }
  console.log(`agent health after: ${health.status}`);
} finally {
  await cluster.teardown();
}
