// Keeps a local cluster (etcd + N nspawn machines, mutual TLS throughout) running until SIGTERM,
// for scripts/up and scripts/down. It writes .cache/up/cluster.json once the cluster is ready,
// and .cache/up/fleetctl.env with fleetctl's settings (scripts/lib/local-cluster.ts).
//   npx tsx scripts/local-cluster.ts [--machines=3]

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startLocalCluster } from "./lib/local-cluster.js";

const STATE_DIR = join(import.meta.dirname, "../.cache/up");
const machines = Number(process.argv.find((a) => a.startsWith("--machines="))?.split("=")[1] ?? 3);

const { cluster, env, envFile } = await startLocalCluster({ machines, stateDir: STATE_DIR });
const state = {
  pid: process.pid,
  etcd: cluster.endpoint,
  endpoint: env.FLEETCTL_ENDPOINT,
  envFile,
  tls: { ca: env.FLEETCTL_CA_FILE, cert: env.FLEETCTL_CERT_FILE, key: env.FLEETCTL_KEY_FILE },
  runDir: cluster.runDir,
  machines: cluster.machines.map((m) => ({ name: m.name, id: m.id, ip: m.ip, apiURL: m.apiURL })),
};
writeFileSync(join(STATE_DIR, "cluster.json"), `${JSON.stringify(state, null, 2)}\n`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await cluster.teardown();
  for (const f of ["cluster.json", "fleetctl.env", "tls"])
    rmSync(join(STATE_DIR, f), { recursive: true, force: true });
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
setInterval(() => undefined, 1 << 30);
