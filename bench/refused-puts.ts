// Memory of a real agent (on one nspawn machine) under refused unit PUTs, for issue 11's bar: RSS
// flat within 10% after 1 000 refused 1 MB PUTs. Phases, each 1 000 PUTs on new TLS connections:
//   1. 1 MB bodies with a Content-Length (refused from the header, the body never read),
//   2. 1 MB bodies sent chunked (no Content-Length: counted as they arrive, cut off past the cap),
//   then a settle, then two controls: 3. small PUTs refused for their name (what any request
//   costs), 4. 450 KB bodies that are read and parsed and then refused by the 64 KiB unit cap.
// The agent's RSS (/proc/PID/status of its real process) is printed idle, after each phase and
// after each settle, with the change against idle, beside the agent's V8 heap and external memory
// from its /metrics (growth outside both is native: TLS buffers, the C allocator's free pages).
// Prints figures only.
//   npx tsx bench/refused-puts.ts [--puts=1000] [--settle-s=30]

import https from "node:https";
import { Cluster, harnessPki, type Machine } from "../test/harness/index.js";
import { httpRequest, waitFor } from "../test/integration/support.js";

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const puts = Number(arg("puts") ?? 1000);
const settleSeconds = Number(arg("settle-s") ?? 30);

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
    // The server answers and closes before the whole body is sent: an error before any answer
    // (the answer lost) is counted as status -1.
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
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

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
  /** The agent's V8 heap and external (ArrayBuffer, native) memory, from its own /metrics. */
  const heap = async () => {
    const text = (await httpRequest("GET", m.apiURL, "/metrics")).text;
    const metric = (name: string) =>
      Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
    const f = (name: string) => `${(metric(name) / 2 ** 20).toFixed(1)} MiB`;
    return `heap ${f("nodejs_heap_size_used_bytes")} used of ${f("nodejs_heap_size_total_bytes")}, external ${f("nodejs_external_memory_bytes")}`;
  };
  const idle = await agentRssKiB(m);
  const report = async (what: string, rss: number) =>
    console.log(
      `agent RSS ${what}: ${mib(rss)} (${(((rss - idle) / idle) * 100).toFixed(1)}% vs idle); ${await heap()}`,
    );
  await report("idle", idle);

  const run = async (what: string, body: string, chunked: boolean, name: (i: number) => string) => {
    const statuses = new Map<number, number>();
    const t0 = performance.now();
    for (let i = 0; i < puts; i++) {
      const status = await put(m.apiURL, name(i), body, chunked);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(`${puts} ${what}: statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${seconds} s`);
    await report(`after ${puts} ${what}`, await agentRssKiB(m));
  };
  const settle = async () => {
    await new Promise((r) => setTimeout(r, settleSeconds * 1000));
    await report(`after ${settleSeconds} s idle`, await agentRssKiB(m));
  };
  const refusedName = (i: number) => `refused-${i}.service`;
  const megaWhat = `${(mega.length / 1e6).toFixed(2)} MB PUTs`;

  await run(`${megaWhat} with a Content-Length`, mega, false, refusedName);
  await run(`${megaWhat} chunked`, mega, true, refusedName);
  await settle();
  await run(
    "small PUTs refused for their name (control)",
    JSON.stringify({ options: options(1_000) }),
    false,
    (i) => `bad-${i}.busname`,
  );
  await run(
    `${(large.length / 1e3).toFixed(0)} KB units (read, parsed, over 64 KiB)`,
    large,
    false,
    refusedName,
  );
  await settle();

  const health = await httpRequest("GET", m.apiURL, "/flotilla/v1/health");
  const units = JSON.parse((await httpRequest("GET", m.apiURL, "/fleet/v1/units")).text) as {
    units?: unknown[];
  };
  console.log(`agent health after: ${health.status}; units stored: ${units.units?.length ?? 0}`);
} finally {
  await cluster.teardown();
}
