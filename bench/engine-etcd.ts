// Engine bench against real etcd, on 3 real machines (systemd-nspawn, the harness): the etcd
// transactions the agents make while the cluster is idle, and those the engine makes to place
// a batch of units submitted at once. Counts come from etcd's own /metrics. Prints figures only.
//   npx tsx bench/engine-etcd.ts [--units=300] [--idle-seconds=20] [--dist=DIR]
// --dist runs another build of the agent (e.g. an older commit's dist/) for a before/after.

import { Cluster } from "../test/harness/index.js";
import { EtcdView, waitFor } from "../test/integration/support.js";

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const units = Number(arg("units") ?? 300);
const idleSeconds = Number(arg("idle-seconds") ?? 20);
const distDir = arg("dist");

/** etcd's count of finished gRPC calls, by method. */
async function grpcCalls(endpoint: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$/.exec(line);
    if (m) out.set(m[1] as string, (out.get(m[1] as string) ?? 0) + Number(m[2]));
  }
  return out;
}

function delta(after: Map<string, number>, before: Map<string, number>, method: string): number {
  return (after.get(method) ?? 0) - (before.get(method) ?? 0);
}

const cluster = await Cluster.start({ machines: 3, ...(distDir ? { distDir } : {}) });
const etcd = new EtcdView(cluster.endpoint);
try {
  const api = cluster.machines[0]?.apiURL as string;
  await waitFor("a leader", async () => (await etcd.leader()) !== undefined, 30_000);
  await new Promise((r) => setTimeout(r, 5000)); // let start-up settle

  const idle0 = await grpcCalls(cluster.endpoint);
  await new Promise((r) => setTimeout(r, idleSeconds * 1000));
  const idle1 = await grpcCalls(cluster.endpoint);
  const rate = (method: string) => (delta(idle1, idle0, method) / idleSeconds).toFixed(2);
  console.log(
    `idle, 3 machines, ${idleSeconds} s: Txn ${rate("Txn")}/s, Range ${rate("Range")}/s, Put ${rate("Put")}/s`,
  );

  const before = await grpcCalls(cluster.endpoint);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: units }, async (_, i) => {
      const res = await fetch(`${api}/fleet/v1/units/${encodeURIComponent(`b${i}.service`)}`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          desiredState: "loaded",
          options: [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }],
        }),
      });
      if (res.status !== 201) throw new Error(`PUT b${i}.service: ${res.status} ${await res.text()}`);
    }),
  );
  const submitted = (performance.now() - t0) / 1000;
  await waitFor(
    `${units} units scheduled`,
    async () => {
      const n = (await etcd.client.getAll().prefix(etcd.keys.schedules()).keys()).length;
      return n === units;
    },
    120_000,
    100,
  );
  const placed = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 2000));
  const after = await grpcCalls(cluster.endpoint);
  const idleTxn = Number(rate("Txn")) * ((performance.now() - t0) / 1000);
  console.log(
    `${units} units submitted at once (PUTs done in ${submitted.toFixed(1)} s): all scheduled in ${placed.toFixed(1)} s; ` +
      `etcd Txn meanwhile ${delta(after, before, "Txn")} (of which ~${idleTxn.toFixed(0)} at the idle rate), ` +
      `Range ${delta(after, before, "Range")}, Put ${delta(after, before, "Put")}`,
  );
  // A refused engine transaction (fence or guard) costs a pass: say how many there were.
  let refused = 0;
  for (const m of cluster.machines) {
    const log = await m.exec(["journalctl", "-u", "flotilla-agent", "-o", "cat", "--no-pager"]);
    refused += log.stdout.split("\n").filter((l) => l.includes("engine write refused")).length;
  }
  console.log(`engine transactions refused: ${refused}`);
} finally {
  etcd.close();
  await cluster.teardown();
}
