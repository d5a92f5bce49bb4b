import { describe, expect, it } from "vitest";
import {
  classifyLeader,
  type Election,
  LeaderKeyState,
  type LeaderView,
  leaderKeyProblem,
} from "../../agent/cluster/leader.js";
import { batches, Engine, type EngineRegistry } from "../../agent/engine/engine.js";
import type { EngineAction } from "../../agent/engine/scheduler.js";
import { createLogger } from "../../agent/log.js";
import type { FailureRecord, Machine, Placement, UnitRecord } from "../../agent/model.js";
import {
  type ClusterSnapshot,
  ENGINE_TXN_MAX_WRITES,
  type EngineWrite,
  type PendingReason,
  RegistryUnavailableError,
} from "../../agent/registry/registry.js";

// The engine loop against an in-memory etcd: the registry keeps revisions and checks the leader
// fence and each unschedule's guard the way the etcd transaction does; the election is whatever
// the test says the watch last saw.

const ME = `aaaaaaaa${"1".repeat(24)}`;
const PEER = `bbbbbbbb${"2".repeat(24)}`;
const OTHER = `cccccccc${"3".repeat(24)}`;
const TTL = 5;
const NOW = 1_000_000;

function machine(id: string): Machine {
  return { id, publicIP: "10.0.0.1", metadata: {}, version: "test" };
}

function unit(name: string): UnitRecord {
  return { name, options: [], hash: "h1", desiredState: "launched" };
}

class FakeEtcd implements EngineRegistry {
  revision = 1;
  /** The leader key's holder. */
  leader: string | undefined;
  reachable = true;
  units: UnitRecord[] = [];
  machines: Machine[] = [machine(ME), machine(PEER)];
  readonly schedule = new Map<string, { placement: Placement; mod: number }>();
  readonly pending = new Map<string, PendingReason>();
  readonly failures = new Map<string, FailureRecord>();
  snapshots = 0;
  /** Every transaction's writes, refused ones included. */
  readonly txns: EngineWrite[][] = [];
  /** Runs after each transaction, to change the world mid-pass. */
  afterTxn: (() => void) | undefined;

  async snapshot(): Promise<ClusterSnapshot> {
    this.snapshots++;
    if (!this.reachable) throw new RegistryUnavailableError(new Error("connection refused"));
    return {
      revision: this.revision,
      units: this.units.map((u) => ({ ...u })),
      schedule: new Map([...this.schedule].map(([name, { placement }]) => [name, placement])),
      pending: new Map(this.pending),
      failures: new Map(this.failures),
      machines: this.machines.map((m) => ({ ...m })),
      states: [],
    };
  }

  async writeAsLeader(writes: readonly EngineWrite[], leader: string): Promise<boolean> {
    this.txns.push([...writes]);
    try {
      if (!this.reachable) throw new RegistryUnavailableError(new Error("connection refused"));
      if (writes.length > ENGINE_TXN_MAX_WRITES) throw new Error("too many operations in txn request");
      const keys = writes.map((w) => `${w.kind === "unschedule" ? "schedule" : w.kind}/${w.unit}`);
      if (new Set(keys).size !== keys.length) throw new Error("duplicate key given in txn request");
      if (this.leader !== leader) return false;
      for (const w of writes) {
        if (w.kind !== "unschedule") continue;
        const current = this.schedule.get(w.unit);
        const ok =
          "placement" in w.expect
            ? JSON.stringify(current?.placement) === JSON.stringify(w.expect.placement)
            : (current?.mod ?? 0) < w.expect.unchangedSince + 1;
        if (!ok) return false;
      }
      this.revision++;
      for (const w of writes) {
        if (w.kind === "schedule") this.schedule.set(w.unit, { placement: w.placement, mod: this.revision });
        if (w.kind === "unschedule") this.schedule.delete(w.unit);
        if (w.kind === "pending") {
          if (w.reason) this.pending.set(w.unit, w.reason);
          else this.pending.delete(w.unit);
        }
        if (w.kind === "failures") {
          if (w.record) this.failures.set(w.unit, w.record);
          else this.failures.delete(w.unit);
        }
      }
      return true;
    } finally {
      this.afterTxn?.();
    }
  }

  place(name: string, machineID: string): void {
    this.revision++;
    this.schedule.set(name, { placement: { machineID, at: 0, reason: "test" }, mod: this.revision });
  }

  where(name: string): string | undefined {
    return this.schedule.get(name)?.placement.machineID;
  }
}

/** The election as the leader-key watch last saw it; campaigning takes the key only if it is vacant. */
class FakeElection implements Election {
  campaigns = 0;
  constructor(
    private readonly etcd: FakeEtcd,
    public view: LeaderView = "vacant",
  ) {}

  observed(): LeaderView {
    return this.view;
  }

  async campaign(): Promise<boolean> {
    this.campaigns++;
    if (this.etcd.leader === undefined) this.etcd.leader = ME;
    this.view = this.etcd.leader === ME ? "leader" : "follower";
    return this.view === "leader";
  }

  /** What the watch reports once it sees the key. */
  sync(): void {
    this.view = this.etcd.leader === undefined ? "vacant" : this.etcd.leader === ME ? "leader" : "follower";
  }
}

function setup(over: { leader?: string; view?: LeaderView; youngCampaignDelayMs?: number } = {}) {
  const etcd = new FakeEtcd();
  etcd.leader = over.leader;
  const election = new FakeElection(etcd, over.view ?? (over.leader ? "follower" : "vacant"));
  const engine = new Engine(
    etcd,
    election,
    {
      machineID: ME,
      ttlSeconds: TTL,
      maxMoves: 3,
      backoffBaseMs: 1000,
      // The delay has a test of its own; elsewhere a vacant key is taken at the first pass.
      youngCampaignDelayMs: over.youngCampaignDelayMs ?? 0,
    },
    createLogger("silent"),
  );
  return { etcd, election, engine };
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `u${String(i).padStart(4, "0")}.service`);

describe("engine: election", () => {
  it("calls a leader key bad when it names no machine or is bound to no lease", () => {
    const id = "0123456789abcdef0123456789abcdef";
    expect(leaderKeyProblem({ value: Buffer.from(id), lease: "7" })).toBeUndefined();
    expect(leaderKeyProblem({ value: Buffer.from("null"), lease: "7" })).toBe(
      'want a machine ID (32 lowercase hex characters), got "null"',
    );
    expect(leaderKeyProblem({ value: Buffer.from(id), lease: "0" })).toBe(
      "bound to no lease, so it would never expire",
    );
  });

  it("a young agent lets a vacant key be for a moment before it campaigns; an older one campaigns at once", async () => {
    const { etcd, election, engine } = setup({ youngCampaignDelayMs: 1500 });
    await engine.pass(NOW);
    await engine.pass(NOW + 1000);
    expect(election.campaigns).toBe(0);
    await engine.pass(NOW + 1500);
    expect(election.campaigns).toBe(1);
    expect(etcd.leader).toBe(ME);

    const older = setup({ youngCampaignDelayMs: 1500 });
    await older.engine.pass(NOW);
    // A TTL later it is no longer young: a key seen vacant is campaigned for at once.
    older.etcd.leader = OTHER;
    older.election.sync();
    await older.engine.pass(NOW + TTL * 1000);
    older.etcd.leader = undefined;
    older.election.sync();
    await older.engine.pass(NOW + TTL * 1000 + 10);
    expect(older.election.campaigns).toBe(1);
  });

  it("a follower's passes do no etcd work at all", async () => {
    const { etcd, election, engine } = setup({ leader: OTHER });
    etcd.units = [unit("a.service")];
    for (let i = 0; i < 10; i++) await engine.pass(NOW + i * 1000);
    expect({ snapshots: etcd.snapshots, txns: etcd.txns.length, campaigns: election.campaigns }).toEqual({
      snapshots: 0,
      txns: 0,
      campaigns: 0,
    });
    expect(engine.isLeader).toBe(false);
  });

  it("a young agent leaves an existing leadership alone, and campaigns once the key is vacant", async () => {
    const { etcd, election, engine } = setup({ leader: OTHER });
    etcd.units = [unit("a.service")];
    etcd.place("a.service", OTHER); // on the old leader's machine, which is gone
    etcd.machines = [machine(ME), machine(PEER)];
    for (let t = 0; t <= TTL * 1000; t += 1000) await engine.pass(NOW + t);
    expect(election.campaigns).toBe(0);
    expect(etcd.where("a.service")).toBe(OTHER);

    etcd.leader = undefined; // the old leader's lease expired with its key
    election.sync();
    await engine.pass(NOW + TTL * 1000 + 100);
    expect(election.campaigns).toBe(1);
    expect(engine.isLeader).toBe(true);
    // No settling on takeover: the machine missing from the snapshot really is gone.
    expect(etcd.where("a.service")).toBe(ME);
  });

  it("a lost campaign leaves the engine a follower that writes nothing", async () => {
    const { etcd, election, engine } = setup();
    etcd.units = [unit("a.service")];
    etcd.leader = OTHER; // another machine won the race the watch had not reported yet
    await engine.pass(NOW);
    expect(election.campaigns).toBe(1);
    expect(engine.isLeader).toBe(false);
    expect({ snapshots: etcd.snapshots, txns: etcd.txns.length }).toEqual({ snapshots: 0, txns: 0 });
  });

  it("classifies the leader key: a key with our ID from an earlier run (another lease) is not ours", () => {
    expect(classifyLeader(null, ME, "7")).toBe("unknown");
    expect(classifyLeader(undefined, ME, "7")).toBe("vacant");
    expect(classifyLeader({ holder: ME, lease: "7" }, ME, "7")).toBe("leader");
    expect(classifyLeader({ holder: ME, lease: "6" }, ME, "7")).toBe("follower");
    expect(classifyLeader({ holder: ME, lease: "7" }, ME, undefined)).toBe("follower");
    expect(classifyLeader({ holder: OTHER, lease: "7" }, ME, "7")).toBe("follower");
  });

  it("keeps the newest observation of the leader key, whatever order reads and events arrive in", () => {
    const state = new LeaderKeyState();
    expect(state.key).toBeNull();
    expect(state.observe({ holder: ME, lease: "7" }, 20)).toBe(true); // our campaign's transaction
    expect(state.observe(undefined, 19)).toBe(false); // the old holder's deletion, reported late
    expect(state.key).toEqual({ holder: ME, lease: "7" });
    expect(state.observe({ holder: ME, lease: "7" }, 20)).toBe(false); // the watch's echo of our put
    expect(state.observe(undefined, 30)).toBe(true);
    expect(state.key).toBeUndefined();
  });
});

describe("engine: writes", () => {
  it("writes N actions in ceil(N / limit) fenced transactions, each under the limit", async () => {
    const { etcd, engine } = setup();
    etcd.units = names(250).map(unit);
    await engine.pass(NOW);
    expect(etcd.schedule.size).toBe(250);
    expect(etcd.txns.map((t) => t.length)).toEqual([100, 100, 50]);
    expect(etcd.txns.length).toBe(Math.ceil(250 / ENGINE_TXN_MAX_WRITES));

    // A settled cluster: the leader's pass reads once and writes nothing.
    await engine.pass(NOW + 1000);
    expect(etcd.txns.length).toBe(3);
    expect(etcd.snapshots).toBe(2);
  });

  it("moves units off a lost machine with guarded deletes, never two writes to one key in a transaction", async () => {
    const { etcd, engine } = setup();
    etcd.units = names(150).map(unit);
    for (const name of names(150)) etcd.place(name, OTHER); // OTHER is not a member
    await engine.pass(NOW);
    expect([...etcd.schedule.values()].every((s) => s.placement.machineID !== OTHER)).toBe(true);
    expect(etcd.schedule.size).toBe(150);
    // 150 unschedules then 150 schedules, in 3 full transactions: none writes one key twice.
    expect(etcd.txns.map((t) => t.length)).toEqual([100, 100, 100]);
    for (const txn of etcd.txns) expect(new Set(txn.map((w) => w.unit)).size).toBe(txn.length);
  });

  it("stops the pass at a refused (fenced) write, and the next leader's pass decides again", async () => {
    const { etcd, election, engine } = setup();
    etcd.units = names(250).map(unit);
    await election.campaign();
    etcd.leader = OTHER; // deposed; the watch has not said so yet
    await engine.pass(NOW);
    expect(etcd.txns.length).toBe(1); // refused, and nothing more tried
    expect(etcd.schedule.size).toBe(0);
  });

  it("a placement changed since the snapshot refuses the unschedule; the next pass re-decides", async () => {
    const { etcd, engine } = setup();
    etcd.units = [{ ...unit("a.service"), desiredState: "inactive" }, unit("b.service")];
    etcd.place("a.service", PEER);
    const { snapshot } = etcd;
    // Between the snapshot and the write, a.service's placement is rewritten.
    etcd.snapshot = async () => {
      const snap = await snapshot.call(etcd);
      if (etcd.snapshots === 1) etcd.place("a.service", ME);
      return snap;
    };
    await engine.pass(NOW);
    expect(etcd.txns.length).toBe(1);
    expect(etcd.where("a.service")).toBe(ME);
    expect(etcd.where("b.service")).toBeUndefined();
    await engine.pass(NOW + 1000);
    expect(etcd.where("a.service")).toBeUndefined();
    expect(etcd.where("b.service")).toBeDefined();
  });

  it("stops between transactions when the watch reports the leadership lost mid-pass", async () => {
    const { etcd, election, engine } = setup();
    etcd.units = names(350).map(unit);
    etcd.afterTxn = () => {
      etcd.leader = OTHER;
      election.sync();
    };
    await engine.pass(NOW);
    expect(etcd.txns.length).toBe(1);
    expect(etcd.schedule.size).toBe(100);
    expect(engine.isLeader).toBe(false);
    // Now a follower: passes touch nothing.
    etcd.afterTxn = undefined;
    await engine.pass(NOW + 1000);
    expect({ snapshots: etcd.snapshots, txns: etcd.txns.length }).toEqual({ snapshots: 1, txns: 1 });
  });
});

describe("engine: etcd outage", () => {
  it("skips passes while etcd is down, then settles one TTL before moving units off missing machines", async () => {
    const { etcd, engine } = setup();
    etcd.units = [unit("a.service"), unit("b.service")];
    etcd.place("a.service", PEER);
    etcd.place("b.service", ME);
    await engine.pass(NOW);
    expect(etcd.txns).toEqual([]);

    etcd.reachable = false;
    await engine.pass(NOW + 1000); // does not throw
    etcd.reachable = true;
    etcd.machines = [machine(ME)]; // PEER has not re-registered yet
    await engine.pass(NOW + 2000);
    await engine.pass(NOW + 2000 + TTL * 1000 - 1);
    expect(etcd.where("a.service")).toBe(PEER);
    await engine.pass(NOW + 2000 + TTL * 1000);
    expect(etcd.where("a.service")).toBe(ME);
  });

  it("a write failing because etcd went away mid-pass also makes the engine settle", async () => {
    const { etcd, engine } = setup();
    etcd.units = [unit("a.service"), unit("b.service")];
    etcd.place("b.service", PEER);
    const { writeAsLeader } = etcd;
    etcd.writeAsLeader = async () => {
      etcd.writeAsLeader = writeAsLeader;
      throw new RegistryUnavailableError(new Error("connection reset"));
    };
    await engine.pass(NOW); // the snapshot succeeds, the write fails: skipped, not thrown
    expect(etcd.where("a.service")).toBeUndefined();
    etcd.machines = [machine(ME)];
    await engine.pass(NOW + 1000);
    expect(etcd.where("a.service")).toBe(ME); // new units are still placed while settling
    expect(etcd.where("b.service")).toBe(PEER);
    await engine.pass(NOW + 1000 + TTL * 1000);
    expect(etcd.where("b.service")).toBe(ME);
  });
});

describe("batches", () => {
  const schedule = (u: string): EngineAction => ({ kind: "schedule", unit: u, machineID: ME, reason: "" });
  const unschedule = (u: string): EngineAction => ({
    kind: "unschedule",
    unit: u,
    machineID: ME,
    reason: "",
  });
  const pending = (u: string): EngineAction => ({ kind: "pending", unit: u, reason: "" });

  it("cuts at the limit, keeping the order", () => {
    const actions = names(7).map(schedule);
    expect(batches(actions, 3).map((b) => b.map((a) => a.unit))).toEqual([
      names(7).slice(0, 3),
      names(7).slice(3, 6),
      names(7).slice(6),
    ]);
  });

  it("starts a new transaction where a key repeats, not where another key of the same unit is written", () => {
    const out = batches([unschedule("a"), pending("a"), schedule("b"), schedule("a")], 100);
    expect(out.map((b) => b.map((a) => `${a.kind} ${a.unit}`))).toEqual([
      ["unschedule a", "pending a", "schedule b"],
      ["schedule a"],
    ]);
  });
});
