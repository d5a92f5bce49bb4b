// What happens when things break, on 3 real machines: the engine's agent dies, a machine is
// powered off, an agent stops gracefully, units fail, etcd goes away for 30 s.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
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

let cluster: Cluster;
let etcd: EtcdView;
const api = () => (cluster.machines.find((m) => m.running) as Machine).apiURL;
const fc = (args: string[], files: Record<string, string> = {}) => fleetctl(api(), args, unitDir(files));

const sleeper = (xfleet = "") =>
  `[Service]\nExecStart=/bin/sleep infinity\n${xfleet ? `\n[X-Fleet]\n${xfleet}\n` : ""}`;

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
    async () => {
      const n = (await fc(["list-machines", "--no-legend"])).stdout.trim().split("\n").length;
      return n === 3 && (await etcd.leader()) !== undefined;
    },
    30_000,
  );
}

/** InvocationID of each unit on the machine where it is active. */
async function invocations(units: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const u of units) {
    const on = await etcd.activeOn(u);
    if (on) out.set(u, await invocationID(machineByID(cluster, on), u));
  }
  return out;
}

beforeAll(freshCluster, 120_000);
afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

describe("failover", () => {
  beforeEach(async () => {
    if (cluster.machines.some((m) => !m.running)) await freshCluster();
  }, 120_000);
  // Each test starts from an empty cluster, even when the previous one failed half-way.
  afterEach(() => destroyAllUnits(fc));

  it("leader loss: another agent takes over and no running unit restarts", async () => {
    const units = ["l1.service", "l2.service", "l3.service"];
    const files = Object.fromEntries(units.map((u) => [u, sleeper()]));
    expect((await fc(["start", ...units], files)).code).toBe(0);
    const before = await invocations(units);
    expect(before.size).toBe(3);

    const leaderID = (await etcd.leader()) as string;
    const leader = machineByID(cluster, leaderID);
    await leader.exec(["systemctl", "kill", "--signal=KILL", "flotilla-agent.service"]);
    const newLeader = await waitFor(
      "a new engine leader",
      async () => {
        const l = await etcd.leader();
        return l !== undefined && l !== leaderID ? l : undefined;
      },
      TTL_MS + 10_000,
    );
    expect(newLeader).not.toBe(leaderID);

    // The new engine works: a new unit gets scheduled and started.
    expect((await fc(["start", "after.service"], { "after.service": sleeper() })).code).toBe(0);
    expect(await invocations(units)).toEqual(before);
    // The killed agent came back (systemd restarted it) and its units were left running.
    await waitFor(
      "the killed agent back",
      async () =>
        (await leader.exec(["systemctl", "is-active", "flotilla-agent"])).stdout.trim() === "active",
      20_000,
    );
    await new Promise((r) => setTimeout(r, 3000));
    expect(await invocations(units)).toEqual(before);
  });

  it("graceful agent stop: its units move at once", async () => {
    expect((await fc(["start", "g1.service"], { "g1.service": sleeper() })).code).toBe(0);
    const from = (await etcd.activeOn("g1.service")) as string;
    const m = machineByID(cluster, from);
    const t0 = Date.now();
    await m.exec(["systemctl", "stop", "flotilla-agent.service"]);
    const to = await waitFor(
      "g1 active elsewhere",
      async () => {
        const on = await etcd.activeOn("g1.service");
        return on !== undefined && on !== from ? on : undefined;
      },
      TTL_MS,
      100,
    );
    const moved = Date.now() - t0;
    console.log(`graceful stop: g1.service active on another machine ${moved} ms after the agent stopped`);
    expect(to).not.toBe(from);
    expect((await m.exec(["systemctl", "is-active", "g1.service"])).stdout.trim()).not.toBe("active");
    await m.exec(["systemctl", "start", "flotilla-agent.service"]);
  });

  it("machine loss (abrupt power-off): units move within TTL + 5 s; units pinned to it stay unscheduled", async () => {
    expect((await fc(["start", "roam.service"], { "roam.service": sleeper() })).code).toBe(0);
    const from = (await etcd.activeOn("roam.service")) as string;
    const victim = machineByID(cluster, from);
    const pin = await fc(["start", "pinned.service"], { "pinned.service": sleeper(`MachineID=${from}`) });
    expect(pin.code).toBe(0);

    const t0 = Date.now();
    await victim.kill();
    const to = await waitFor(
      "roam.service active on another machine",
      async () => {
        const on = await etcd.activeOn("roam.service");
        return on !== undefined && on !== from ? on : undefined;
      },
      TTL_MS + 5000,
      100,
    ).catch(async (err) => {
      // Say where the time went: the survivors' own account of the last seconds.
      for (const m of cluster.machines.filter((x) => x !== victim)) {
        const log = await m.exec(["journalctl", "-u", "flotilla-agent", "--since", "-20s", "-o", "cat"]);
        console.log(`--- ${m.name} agent log ---\n${log.stdout.split("\n").slice(-40).join("\n")}`);
      }
      throw err;
    });
    console.log(`machine loss: roam.service active elsewhere ${Date.now() - t0} ms after the machine died`);
    expect(to).not.toBe(from);
    await waitFor(
      "pinned.service unscheduled",
      async () => (await etcd.placement("pinned.service")) === undefined,
      5000,
    );
    const files = await fc(["list-unit-files", "--no-legend", "--fields", "unit,state,reason"]);
    expect(files.stdout).toMatch(/pinned\.service\t+inactive\t+.*not in the cluster/);
  });

  it("a unit that fails on some machines moves until it runs", async () => {
    // Ties go to the lowest machine ID, so the first two machines by ID get the poison file.
    const [first, second, third] = [...cluster.machines].sort((a, b) => (a.id < b.id ? -1 : 1)) as Machine[];
    for (const m of [first, second] as Machine[]) await m.exec(["touch", "/etc/flotilla-test-poison"]);
    try {
      const text = `[Service]\nExecStart=/bin/sh -c 'test ! -e /etc/flotilla-test-poison && exec sleep infinity'\nRestart=on-failure\nRestartSec=100ms\nStartLimitBurst=2\nStartLimitIntervalSec=30\n`;
      const r = await fc(["start", "--no-block", "picky.service"], { "picky.service": text });
      expect(r.code).toBe(0);
      // A simple service counts as active the moment it forks, so wait for it on the third machine
      // and check that it stays there.
      await waitFor(
        "picky.service active on the third machine",
        async () => (await etcd.activeOn("picky.service")) === third?.id,
        60_000,
        250,
      );
      await new Promise((r) => setTimeout(r, 3000));
      expect(await etcd.activeOn("picky.service")).toBe(third?.id);
      const units = await fc(["list-units", "--no-legend", "--fields", "unit,active,reason"]);
      expect(units.stdout).toMatch(
        /picky\.service\tactive\tmoved off machine [0-9a-f]{32} after it failed there/,
      );
    } finally {
      for (const m of [first, second] as Machine[]) await m.exec(["rm", "-f", "/etc/flotilla-test-poison"]);
    }
  });

  it("a unit that fails everywhere stops moving at the limit, with a clear state", async () => {
    const r = await fc(["start", "--no-block", "doomed.service"], {
      "doomed.service": "[Service]\nExecStart=/bin/false\n",
    });
    expect(r.code).toBe(0);
    const reason = await waitFor(
      "doomed.service to give up",
      async () => {
        const out = (await fc(["list-unit-files", "--no-legend", "--fields", "unit,reason"])).stdout;
        return /failed on (every eligible machine|\d machines)/.test(out) ? out : undefined;
      },
      60_000,
      500,
    );
    expect(reason).toMatch(/doomed\.service/);
    const placement = await etcd.placement("doomed.service");
    await new Promise((r) => setTimeout(r, 5000));
    expect(await etcd.placement("doomed.service")).toEqual(placement);
    const units = await fc(["list-units", "--no-legend", "--fields", "unit,active"]);
    expect(units.stdout).toContain("doomed.service\tfailed");
    const status = await fc(["status", "doomed.service"]);
    expect(status.stdout + status.stderr).toMatch(/failed/);
  });

  it("etcd stopped for 30 s: no unit stops, and the cluster converges after", async () => {
    const units = ["e1.service", "e2.service", "e3.service"];
    const files = Object.fromEntries(units.map((u) => [u, sleeper()]));
    expect((await fc(["start", ...units], files)).code).toBe(0);
    const before = await invocations(units);
    expect(before.size).toBe(3);
    const where = new Map<string, string>();
    for (const u of units) where.set(u, (await etcd.activeOn(u)) as string);

    await cluster.etcd.stop();
    await new Promise((r) => setTimeout(r, 30_000));
    // Every unit is still running, with the same invocation, on its machine.
    for (const [u, id] of before) {
      const m = machineByID(cluster, where.get(u) as string);
      expect((await m.exec(["systemctl", "is-active", u])).stdout.trim()).toBe("active");
      expect(await invocationID(m, u)).toBe(id);
    }
    await cluster.etcd.start();

    await waitFor(
      "all three units active in the registry",
      async () => (await invocations(units)).size === 3,
      30_000,
      500,
    );
    expect(await invocations(units)).toEqual(before);
    const post = await fc(["start", "post.service"], { "post.service": sleeper() });
    expect(post.code, post.stderr).toBe(0);
    const listed = await fc(["list-units", "--no-legend", "--fields", "unit,active"]);
    expect(listed.stdout.trim().split("\n").sort()).toEqual(
      [...units, "post.service"].map((u) => `${u}\tactive`).sort(),
    );
  });
});
