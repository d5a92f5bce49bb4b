// Keeps a local cluster (etcd + N nspawn machines) running until SIGTERM, for scripts/up and
// scripts/down. It writes .cache/up/cluster.json once the cluster is ready.
//   npx tsx scripts/local-cluster.ts [--machines=3]

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Cluster } from "../test/harness/index.js";

const STATE_DIR = join(import.meta.dirname, "../.cache/up");
const machines = Number(process.argv.find((a) => a.startsWith("--machines="))?.split("=")[1] ?? 3);
const regions = ["east", "west"];

mkdirSync(STATE_DIR, { recursive: true });
const cluster = await Cluster.start({
  machines,
  metadata: Array.from({ length: machines }, (_, i) => ({
    name: `m${i + 1}`,
    region: regions[i % 2] as string,
  })),
});
const state = {
  pid: process.pid,
  etcd: cluster.endpoint,
  endpoint: cluster.machines[0]?.apiURL,
  runDir: cluster.runDir,
  machines: cluster.machines.map((m) => ({ name: m.name, id: m.id, ip: m.ip, apiURL: m.apiURL })),
};
writeFileSync(join(STATE_DIR, "cluster.json"), `${JSON.stringify(state, null, 2)}\n`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await cluster.teardown();
  rmSync(join(STATE_DIR, "cluster.json"), { force: true });
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
setInterval(() => undefined, 1 << 30);
