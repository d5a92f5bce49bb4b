// Cluster benchmark on 3 real machines: submit→active latency over 100 units (p50/p99), 100 units
// started at once → all active in systemd, and the failover after a machine carrying 200 units is
// powered off (its first unit, then all of them active elsewhere, per the survivors' systemd).
// Prints figures only; asserts nothing.
//   npx tsx bench/cluster.ts [--units=100] [--burst=100] [--carry=200] [--dist=DIR]
// --dist runs another build of the agent (a directory holding agent.js), e.g. to compare with main.

import { MachineBus } from "../test/harness/dbus.js";
import { Cluster, type Machine } from "../test/harness/index.js";
import { EtcdView, httpRequest, waitFor } from "../test/integration/support.js";

const count = Number(process.argv.find((a) => a.startsWith("--units="))?.split("=")[1] ?? 100);
const burst = Number(process.argv.find((a) => a.startsWith("--burst="))?.split("=")[1] ?? 100);
const carry = Number(process.argv.find((a) => a.startsWith("--carry="))?.split("=")[1] ?? 200);
const distDir = process.argv.find((a) => a.startsWith("--dist="))?.slice("--dist=".length);

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

async function deleteUnit(api: string, name: string): Promise<void> {
  const res = await httpRequest("DELETE", api, `/fleet/v1/units/${encodeURIComponent(name)}`);
  if (res.status !== 204) throw new Error(`DELETE ${name}: ${res.status} ${res.text}`);
}

/** ActiveState of each of `names` that the machine's systemd has loaded, asked over its D-Bus. */
async function activeStates(bus: MachineBus, names: string[]): Promise<Map<string, string>> {
  const [rows] = await bus.call("org.freedesktop.systemd1.Manager", "ListUnitsByNames", "as", [names]);
  const out = new Map<string, string>();
  for (const row of rows as string[][]) {
    if (row[2] !== "not-found") out.set(row[0] as string, row[3] as string);
  }
  return out;
}

/**
 * Submits `n` units at once (concurrent PUTs) and times until systemd on the machines reports all
 * of them active, read straight from each machine's systemd rather than from published states.
 * Then destroys them and waits until no machine has them loaded, so later figures start clean.
 */
async function startAtOnce(
  api: string,
  machines: readonly Machine[],
  n: number,
): Promise<{ active: number; submitted: number; placed: number }> {
  const names = Array.from({ length: n }, (_, i) => `burst-${i}.service`);
  const buses = await Promise.all(machines.map((m) => MachineBus.connect(m.dbusAddress)));
  try {
    const t0 = performance.now();
    await Promise.all(names.map((name) => putUnit(api, name)));
    const submitted = performance.now() - t0;
    // Placement is the engine's share of the figure, the rest the agents' (load, reload, start).
    let placed = Number.NaN;
    const placing = waitFor(
      `${n} units placed`,
      async () => {
        const keys = await etcd.client.getAll().prefix(etcd.keys.schedules()).keys();
        if (keys.filter((k) => k.includes("burst-")).length < n) return undefined;
        placed = performance.now() - t0;
        return true;
      },
      120_000,
      10,
    );
    const allIn = async (pred: (states: Map<string, string>) => boolean) => {
      const per = await Promise.all(buses.map((b) => activeStates(b, names)));
      return pred(new Map(per.flatMap((m) => [...m])));
    };
    await waitFor(
      `${n} units active`,
      () => allIn((s) => names.every((x) => s.get(x) === "active")),
      120_000,
      20,
    );
    const took = performance.now() - t0;
    await placing;
    await Promise.all(names.map((name) => deleteUnit(api, name)));
    await waitFor(`${n} units gone`, () => allIn((s) => s.size === 0), 120_000, 100);
    return { active: took, submitted, placed };
  } finally {
    for (const b of buses) b.close();
  }
}

const cluster = await Cluster.start({ machines: 3, ...(distDir ? { distDir } : {}) });
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

  const atOnce = await startAtOnce(api, cluster.machines, burst);
  const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(
    `${burst} units started at once → all active in systemd (3 machines): ${secs(atOnce.active)} ` +
      `(all submitted after ${secs(atOnce.submitted)}, all placed by the engine after ${secs(atOnce.placed)})`,
  );

  // Enough more units that each machine carries about `carry` (the engine spreads them evenly).
  const extra = Array.from({ length: Math.max(0, 3 * carry - count) }, (_, i) => `carry-${i}.service`);
  for (let i = 0; i < extra.length; i += 100) {
    await Promise.all(extra.slice(i, i + 100).map((name) => putUnit(api, name)));
  }
  const all = [...Array.from({ length: count }, (_, i) => `bench-${i}.service`), ...extra];
  const buses = await Promise.all(cluster.machines.map((m) => MachineBus.connect(m.dbusAddress)));
  const activeIn = async (among: readonly MachineBus[]) =>
    new Map((await Promise.all(among.map((b) => activeStates(b, all)))).flatMap((m) => [...m]));
  await waitFor(
    `${all.length} units active`,
    async () => {
      const states = await activeIn(buses);
      return all.every((n) => states.get(n) === "active");
    },
    300_000,
    200,
  );
  const victimID = (await etcd.activeOn("bench-0.service")) as string;
  const victimIndex = cluster.machines.findIndex((m) => m.id === victimID);
  const victim = cluster.machines[victimIndex];
  if (!victim) throw new Error("bench-0.service is not active anywhere");
  const carried = (await activeStates(buses[victimIndex] as MachineBus, all)).size;
  const survivors = buses.filter((_, i) => i !== victimIndex);
  buses[victimIndex]?.close();
  // An abrupt power loss (SIGKILL of the whole machine): the units move when its lease expires.
  // A clean power-off is faster, since the agent hands its units over as it stops.
  const t0 = performance.now();
  await victim.kill();
  let first = Number.NaN;
  await waitFor(
    `all ${all.length} units active on the survivors`,
    async () => {
      const states = await activeIn(survivors);
      const active = all.filter((n) => states.get(n) === "active").length;
      if (Number.isNaN(first) && active > all.length - carried) first = performance.now() - t0;
      return active === all.length;
    },
    120_000,
    50,
  );
  const done = performance.now() - t0;
  for (const b of survivors) b.close();
  console.log(
    `failover after an abrupt power-off of a machine carrying ${carried} units (TTL 5 s): ` +
      `first active elsewhere ${(first / 1000).toFixed(1)} s, all ${carried} after ${(done / 1000).toFixed(1)} s`,
  );
} finally {
  etcd.close();
  await cluster.teardown();
}
