// Cluster benchmark on 3 real machines: submit→active latency over 100 units (p50/p99) and the
// failover time after a machine is powered off. Prints figures only; asserts nothing.
//   npx tsx bench/cluster.ts [--units=100]

import { Cluster } from "../test/harness/index.js";
import { EtcdView, httpRequest, waitFor } from "../test/integration/support.js";

const count = Number(process.argv.find((a) => a.startsWith("--units="))?.split("=")[1] ?? 100);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function putUnit(api: string, name: string): Promise<void> {
  const res = await httpRequest("PUT", api, `/fleet/v1/units/${encodeURIComponent(name)}`, {
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      desiredState: "launched",
      options: [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }],
    }),
  });
  if (res.status !== 201) throw new Error(`PUT ${name}: ${res.status} ${res.text}`);
}

const cluster = await Cluster.start({ machines: 3 });
const etcd = new EtcdView(cluster.endpoint);
try {
  const api = cluster.machines[0]?.apiURL as string;
  await waitFor("a leader", async () => (await etcd.leader()) !== undefined, 30_000);

  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const name = `bench-${i}.service`;
    const t0 = performance.now();
    await putUnit(api, name);
    await waitFor(`${name} active`, () => etcd.activeOn(name), 60_000, 10);
    latencies.push(performance.now() - t0);
  }
  latencies.sort((a, b) => a - b);
  console.log(
    `submit→active over ${count} units (sequential, 3 machines): p50 ${percentile(latencies, 50).toFixed(0)} ms, p99 ${percentile(latencies, 99).toFixed(0)} ms, max ${latencies[latencies.length - 1]?.toFixed(0)} ms`,
  );

  const victimID = (await etcd.activeOn("bench-0.service")) as string;
  const victim = cluster.machines.find((m) => m.id === victimID);
  if (!victim) throw new Error("bench-0.service is not active anywhere");
  // An abrupt power loss (SIGKILL of the whole machine): the units move when its lease expires.
  // A clean power-off is faster, since the agent hands its units over as it stops.
  const t0 = performance.now();
  await victim.kill();
  await waitFor(
    "bench-0.service active elsewhere",
    async () => {
      const on = await etcd.activeOn("bench-0.service");
      return on !== undefined && on !== victimID;
    },
    60_000,
    20,
  );
  const done = performance.now();
  console.log(
    `failover after an abrupt power-off (TTL 5 s): unit active elsewhere ${((done - t0) / 1000).toFixed(1)} s after the machine died`,
  );
} finally {
  etcd.close();
  await cluster.teardown();
}
