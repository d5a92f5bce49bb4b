// Fencing of SingleInstance units on 3 real machines (docs/units.md, "SingleInstance"): every
// machine's systemd is sampled every 100 ms over D-Bus from the host (one clock for all), and a
// SingleInstance unit must never be active (or activating, deactivating, reloading) on two
// machines in one sample, when an agent is SIGKILLed and held down while its machine lives, and
// when a machine is cut off from etcd for 30 s. Units without the option keep running through the
// cut-off (fleet#1289), and after the heal nothing that did not move restarts.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { MachineBus } from "../harness/dbus.js";
import { Cluster, type Machine } from "../harness/index.js";
import {
  destroyAllUnits,
  EtcdView,
  fleetctl,
  invocationID,
  machineByID,
  unitDir,
  waitFor,
} from "./support.js";

const TTL_MS = 5000;
const MANAGER = "org.freedesktop.systemd1.Manager";
/** Any state in which some process of the unit may run. */
const RUNNING = new Set(["active", "activating", "deactivating", "reloading"]);

let cluster: Cluster;
let etcd: EtcdView;
const api = () => (cluster.machines.find((m) => m.running) as Machine).apiURL;
const fc = (args: string[], files: Record<string, string> = {}) => fleetctl(api(), args, unitDir(files));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A SingleInstance unit that ignores SIGTERM and restarts whenever it dies: only a kill that
 * systemd does not undo stops it within its 15 s stop timeout.
 */
const SOLO = [
  "[Service]",
  `ExecStart=/bin/bash -c 'trap "" TERM; while :; do sleep 0.2; done'`,
  "Restart=always",
  "RestartSec=100ms",
  "TimeoutStopSec=15",
  "",
  "[X-Fleet]",
  "SingleInstance=true",
  "",
].join("\n");
const sleeper = (xfleet = "") =>
  `[Service]\nExecStart=/bin/sleep infinity\n${xfleet ? `\n[X-Fleet]\n${xfleet}\n` : ""}`;

interface Sample {
  /** performance.now() when the round was sent. */
  t: number;
  /** machine name -> unit -> ActiveState. */
  states: Map<string, Map<string, string>>;
}

/** Samples every machine's systemd every 100 ms, all machines in each round. */
class Sampler {
  readonly samples: Sample[] = [];
  failures = 0;
  private running = true;
  private loop: Promise<void> | undefined;
  private buses = new Map<string, MachineBus>();

  constructor(
    private readonly machines: readonly Machine[],
    private readonly units: string[],
  ) {}

  async start(): Promise<void> {
    for (const m of this.machines) this.buses.set(m.name, await MachineBus.connect(m.dbusAddress));
    this.loop = this.run();
    await waitFor("a first sample", async () => this.samples.length > 0, 5000, 20);
  }

  private async run(): Promise<void> {
    while (this.running) {
      const t = performance.now();
      const states = new Map<string, Map<string, string>>();
      await Promise.all(
        [...this.buses].map(async ([name, bus]) => {
          try {
            const [rows] = (await bus.call(MANAGER, "ListUnitsByNames", "as", [this.units], 2000)) as [
              string[][],
            ];
            states.set(name, new Map(rows.map((r) => [r[0] as string, r[3] as string])));
          } catch {
            this.failures++;
          }
        }),
      );
      this.samples.push({ t, states });
      await sleep(Math.max(0, 100 - (performance.now() - t)));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    for (const bus of this.buses.values()) bus.close();
    this.buses.clear();
  }

  /** Machines where `unit` runs in the latest sample. */
  runningOn(unit: string): string[] {
    const last = this.samples.at(-1);
    return [...(last?.states ?? [])].filter(([, s]) => RUNNING.has(s.get(unit) ?? "")).map(([n]) => n);
  }

  /** Samples in which `unit` ran on more than one machine. */
  overlaps(unit: string): { t: number; on: string[] }[] {
    return this.samples
      .map((s) => ({
        t: s.t,
        on: [...s.states].filter(([, st]) => RUNNING.has(st.get(unit) ?? "")).map(([n]) => n),
      }))
      .filter((s) => s.on.length > 1);
  }

  /** The gap between the last sample with `unit` running on `from` and the first on another machine. */
  gap(unit: string, from: string): { lastOnFrom: number; firstElsewhere: number } | undefined {
    const runs = (s: Sample, m: string) => RUNNING.has(s.states.get(m)?.get(unit) ?? "");
    const firstElsewhereIdx = this.samples.findIndex((s) =>
      [...s.states.keys()].some((m) => m !== from && runs(s, m)),
    );
    if (firstElsewhereIdx < 0) return undefined;
    const before = this.samples.slice(0, firstElsewhereIdx);
    const lastOnFrom = before.filter((s) => runs(s, from)).at(-1);
    if (!lastOnFrom) return undefined;
    return { lastOnFrom: lastOnFrom.t, firstElsewhere: (this.samples[firstElsewhereIdx] as Sample).t };
  }
}

async function freshCluster(): Promise<void> {
  etcd?.close();
  await cluster?.teardown();
  cluster = await Cluster.start({
    machines: 3,
    metadata: [{ name: "m1" }, { name: "m2" }, { name: "m3" }],
  });
  etcd = new EtcdView(cluster.endpoint);
  await waitFor(
    "3 machines and a leader",
    async () => (await machinesListed()) === 3 && (await etcd.leader()) !== undefined,
    30_000,
  );
}

async function machinesListed(): Promise<number> {
  return (await fc(["list-machines", "--no-legend"])).stdout.trim().split("\n").filter(Boolean).length;
}

async function activeOn(unit: string): Promise<Machine> {
  const id = await waitFor("the unit active", () => etcd.activeOn(unit), 30_000);
  return machineByID(cluster, id);
}

/** The guard's own account, from the machine's journal. */
async function guardLog(m: Machine): Promise<string> {
  return (await m.exec(["journalctl", "-u", "flotilla-fence-guard", "-o", "cat", "--no-pager"])).stdout;
}

function report(sampler: Sampler, unit: string, from: Machine, t0: number, what: string): void {
  const gap = sampler.gap(unit, from.name);
  const stopped = gap ? (gap.lastOnFrom - t0) / 1000 : Number.NaN;
  const down = gap ? (gap.firstElsewhere - gap.lastOnFrom) / 1000 : Number.NaN;
  const elsewhere = gap ? (gap.firstElsewhere - t0) / 1000 : Number.NaN;
  console.log(
    `${what}: ${unit} last seen running on ${from.name} ${stopped.toFixed(1)} s after the incident, ` +
      `running elsewhere after ${elsewhere.toFixed(1)} s: down ${down.toFixed(1)} s ` +
      `(${sampler.samples.length} samples, ${sampler.failures} failed)`,
  );
}

beforeAll(freshCluster, 120_000);
afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

describe("fencing SingleInstance units", () => {
  beforeEach(async () => {
    if (cluster.machines.some((m) => !m.running)) await freshCluster();
  }, 120_000);
  afterEach(() => destroyAllUnits(fc), 60_000);

  it("the agent SIGKILLed and held down 15 s: the unit is killed before the lease ends, then runs elsewhere, never on two machines", async () => {
    expect((await fc(["start", "solo.service"], { "solo.service": SOLO })).code).toBe(0);
    const from = await activeOn("solo.service");
    const sampler = new Sampler(cluster.machines, ["solo.service"]);
    await sampler.start();
    try {
      const t0 = performance.now();
      // Stopped while it is dead, so systemd does not restart it: held down until started again.
      await from.exec([
        "sh",
        "-c",
        "systemctl kill --signal=KILL flotilla-agent.service && systemctl stop flotilla-agent.service",
      ]);
      const to = await waitFor(
        "solo.service running on another machine",
        async () => sampler.runningOn("solo.service").find((n) => n !== from.name),
        TTL_MS + 10_000,
        100,
      );
      const heldFor = 15_000 - (performance.now() - t0);
      if (heldFor > 0) await sleep(heldFor);
      // Killed, so "failed"; not restarted.
      expect((await from.exec(["systemctl", "is-active", "flotilla-agent.service"])).stdout.trim()).toMatch(
        /^(failed|inactive)$/,
      );
      await from.exec(["systemctl", "start", "flotilla-agent.service"]);
      await waitFor("the machine back in the cluster", async () => (await machinesListed()) === 3, 20_000);
      // The returning agent must not start it again where it was.
      await sleep(5000);
      await sampler.stop();
      report(sampler, "solo.service", from, t0, "agent held down");

      expect(sampler.failures).toBe(0);
      expect(sampler.overlaps("solo.service")).toEqual([]);
      expect(sampler.runningOn("solo.service")).toEqual([to]);
      expect(await etcd.activeOn("solo.service")).toBe(cluster.machines.find((m) => m.name === to)?.id);
      // Killed by the guard, not by an agent (there was none): its journal says so.
      expect(await guardLog(from)).toMatch(/fenced at \d+: solo\.service/);
    } finally {
      await sampler.stop();
    }
  }, 120_000);

  it("a machine cut off from etcd for 30 s: the SingleInstance unit is fenced and moved; default units keep running, and after the heal nothing that did not move restarts", async () => {
    expect((await fc(["start", "solo.service"], { "solo.service": SOLO })).code).toBe(0);
    const from = await activeOn("solo.service");
    const pinned = `pinned.service`;
    const roamers = ["d1.service", "d2.service", "d3.service", "d4.service", "d5.service", "d6.service"];
    const files = Object.fromEntries([
      ...roamers.map((u) => [u, sleeper()]),
      [pinned, sleeper(`MachineID=${from.id}`)],
    ]);
    expect((await fc(["start", ...roamers, pinned], files)).code).toBe(0);
    const where = new Map<string, Machine>();
    const before = new Map<string, string>();
    for (const u of [...roamers, pinned]) {
      const m = await activeOn(u);
      where.set(u, m);
      before.set(u, await invocationID(m, u));
    }
    const onVictim = [...roamers, pinned].filter((u) => where.get(u) === from);
    const elsewhere = roamers.filter((u) => where.get(u) !== from);
    expect(elsewhere.length).toBeGreaterThan(0);

    const { hostname, port } = new URL(cluster.endpoint);
    const sampler = new Sampler(cluster.machines, ["solo.service", ...roamers, pinned]);
    await sampler.start();
    try {
      const t0 = performance.now();
      // Both ways: with only its requests dropped, etcd's watch events would still reach it.
      const cut = await from.exec([
        "sh",
        "-c",
        [
          "nft add table inet fencing-test",
          "nft add chain inet fencing-test out '{ type filter hook output priority 0; }'",
          "nft add chain inet fencing-test in '{ type filter hook input priority 0; }'",
          `nft add rule inet fencing-test out ip daddr ${hostname} tcp dport ${port} drop`,
          `nft add rule inet fencing-test in ip saddr ${hostname} tcp sport ${port} drop`,
        ].join(" && "),
      ]);
      expect(cut.code, cut.stderr).toBe(0);
      const to = await waitFor(
        "solo.service running on another machine",
        async () => sampler.runningOn("solo.service").find((n) => n !== from.name),
        TTL_MS + 10_000,
        100,
      );
      await sleep(Math.max(0, 28_000 - (performance.now() - t0)));
      // fleet#1289: the cut-off machine's default units keep running, the same invocation.
      for (const u of onVictim) {
        expect((await from.exec(["systemctl", "is-active", u])).stdout.trim(), u).toBe("active");
        expect(await invocationID(from, u), u).toBe(before.get(u));
      }
      await sleep(Math.max(0, 30_000 - (performance.now() - t0)));
      const heal = await from.exec(["nft", "delete", "table", "inet", "fencing-test"]);
      expect(heal.code, heal.stderr).toBe(0);
      const tHeal = performance.now();
      await waitFor("the machine back in the cluster", async () => (await machinesListed()) === 3, 20_000);
      console.log(
        `cut-off: the machine listed again ${((performance.now() - tHeal) / 1000).toFixed(1)} s after the heal`,
      );
      // Converged: every default unit active on exactly one machine again.
      await waitFor(
        "each default unit running on one machine",
        async () => roamers.every((u) => sampler.runningOn(u).length === 1),
        30_000,
        200,
      );
      await sleep(3000);
      await sampler.stop();
      report(sampler, "solo.service", from, t0, "cut off from etcd");

      expect(sampler.failures).toBe(0);
      expect(sampler.overlaps("solo.service")).toEqual([]);
      expect(sampler.runningOn("solo.service")).toEqual([to]);
      expect(await guardLog(from)).toMatch(/fenced at \d+: solo\.service/);
      // Nothing that did not move restarted.
      for (const u of elsewhere) {
        const m = where.get(u) as Machine;
        expect(sampler.runningOn(u), u).toEqual([m.name]);
        expect(await invocationID(m, u), u).toBe(before.get(u));
      }
      // The cut-off machine's roaming units moved while it was away; its copies are gone now.
      for (const u of onVictim.filter((x) => x !== pinned)) {
        expect(sampler.runningOn(u), u).toHaveLength(1);
        expect(sampler.runningOn(u), u).not.toContain(from.name);
      }
      const pinnedNow = sampler.runningOn(pinned);
      const pinnedInvocation = await invocationID(from, pinned);
      console.log(
        `cut-off: ${pinned} (pinned to the cut-off machine) runs on [${pinnedNow.join(", ")}], ` +
          `${pinnedInvocation === before.get(pinned) ? "same invocation" : "restarted"}`,
      );
    } finally {
      await sampler.stop();
    }
  }, 180_000);
});
