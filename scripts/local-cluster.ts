// Keeps the local cluster of scripts/up (mutual TLS throughout) running until SIGTERM
// (scripts/down). It writes .cache/up/cluster.json once the cluster is ready, and
// .cache/up/fleetctl.env with fleetctl's settings (scripts/lib/local-cluster.ts). It answers
// scripts/machine on a root-only unix
// socket (.cache/up/control.sock): power a machine off, kill it, start it again, or run a command
// in it. Only this process can do that: the machines are its children, in its harness run.
//   npx tsx scripts/local-cluster.ts [--machines=3]

import { chmodSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import type { Machine } from "../test/harness/index.js";
import { DEMO_REGISTRY, startLocalCluster } from "./lib/local-cluster.js";
import { type ControlRequest, parseControlRequest } from "./lib/machine-control.js";

const STATE_DIR = join(import.meta.dirname, "../.cache/up");
const CONTROL_SOCKET = join(STATE_DIR, "control.sock");
const machines = Number(process.argv.find((a) => a.startsWith("--machines="))?.split("=")[1] ?? 3);

mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
const local = await startLocalCluster({ machines, stateDir: STATE_DIR });
const { cluster } = local;
/** Users name machines m1, m2, … (their `name` metadata), or by machine ID (prefix). */
function byName(name: string): Machine | undefined {
  const index = /^m(\d+)$/.exec(name)?.[1];
  if (index !== undefined) return cluster.machines[Number(index) - 1];
  return name.length >= 4 ? cluster.machines.find((m) => m.id.startsWith(name)) : undefined;
}

async function handle(req: ControlRequest): Promise<{ code: number; stdout: string; stderr: string }> {
  const m = byName(req.machine);
  if (m === undefined)
    return { code: 2, stdout: "", stderr: `no machine ${req.machine} (m1…m${machines})\n` };
  const done = (what: string) => ({ code: 0, stdout: "", stderr: `${req.machine}: ${what}\n` });
  switch (req.action) {
    case "poweroff":
      await m.powerOff();
      return done("powered off");
    case "kill":
      await m.kill();
      return done("killed (abrupt power loss)");
    case "start":
      if (m.running) return { code: 1, stdout: "", stderr: `${req.machine} is already running\n` };
      await m.start();
      return done("booted");
    case "exec":
      if (!m.running) return { code: 1, stdout: "", stderr: `${req.machine} is not running\n` };
      return m.exec(req.argv, { timeoutMs: 60_000 });
  }
}

rmSync(CONTROL_SOCKET, { force: true });
const control = net.createServer((sock) => {
  sock.setTimeout(5_000, () => sock.destroy());
  let buf = "";
  sock.on("data", (chunk) => {
    buf += chunk.toString();
    const nl = buf.indexOf("\n");
    if (nl < 0) {
      if (buf.length > 64 * 1024) sock.destroy();
      return;
    }
    sock.removeAllListeners("data");
    sock.setTimeout(0);
    let req: ControlRequest;
    try {
      req = parseControlRequest(buf.slice(0, nl));
    } catch (err) {
      sock.end(`${JSON.stringify({ code: 2, stdout: "", stderr: `${(err as Error).message}\n` })}\n`);
      return;
    }
    handle(req).then(
      (res) => sock.end(`${JSON.stringify(res)}\n`),
      (err: unknown) => sock.end(`${JSON.stringify({ code: 1, stdout: "", stderr: `${String(err)}\n` })}\n`),
    );
  });
});
control.maxConnections = 16;
await new Promise<void>((resolve) => control.listen(CONTROL_SOCKET, resolve));
chmodSync(CONTROL_SOCKET, 0o600);

const state = {
  pid: process.pid,
  etcd: cluster.endpoint,
  endpoint: local.env.FLEETCTL_ENDPOINT,
  envFile: local.envFile,
  tls: {
    ca: local.env.FLEETCTL_CA_FILE,
    cert: local.env.FLEETCTL_CERT_FILE,
    key: local.env.FLEETCTL_KEY_FILE,
  },
  registry: { url: local.registry.url, name: DEMO_REGISTRY },
  runDir: cluster.runDir,
  machines: cluster.machines.map((m, i) => ({ name: `m${i + 1}`, id: m.id, ip: m.ip, apiURL: m.apiURL })),
};
writeFileSync(join(STATE_DIR, "cluster.json"), `${JSON.stringify(state, null, 2)}\n`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  control.close();
  rmSync(CONTROL_SOCKET, { force: true });
  await local.teardown();
  for (const f of ["cluster.json", "fleetctl.env", "tls"])
    rmSync(join(STATE_DIR, f), { recursive: true, force: true });
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
setInterval(() => undefined, 1 << 30);
