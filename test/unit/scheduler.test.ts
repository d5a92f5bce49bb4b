import { describe, expect, it } from "vitest";
import { decide, type EngineAction, type EngineInput, type SchedUnit } from "../../agent/engine/scheduler.js";
import type {
  DesiredState,
  FailureRecord,
  Machine,
  Placement,
  Requirements,
  UnitState,
} from "../../agent/model.js";

// Machine IDs are 32 hex characters; reasons and the `lines` below use the first 8.
const M1 = `1a2b3c4d${"1".repeat(24)}`;
const M2 = `5e6f7a8b${"2".repeat(24)}`;
const M3 = `9c0d1e2f${"3".repeat(24)}`;
const NOW = 1_000_000;

function machine(id: string, metadata: Record<string, string> = {}): Machine {
  return { id, publicIP: "10.0.0.1", metadata, version: "test" };
}

function unit(
  name: string,
  req: Partial<Requirements> = {},
  opts: { state?: DesiredState; hash?: string } = {},
): SchedUnit {
  return {
    name,
    options: [],
    hash: opts.hash ?? "h1",
    desiredState: opts.state ?? "launched",
    requirements: { machineOf: [], metadata: {}, conflicts: [], global: false, replaces: [], ...req },
  };
}

/** A schedule: unit name → machine, placed at `at`. */
function placed(on: Record<string, string>, at = 0): Map<string, Placement> {
  return new Map(Object.entries(on).map(([name, machineID]) => [name, { machineID, at, reason: "test" }]));
}

function input(over: Partial<EngineInput> = {}): EngineInput {
  return {
    now: NOW,
    units: [],
    schedule: new Map(),
    pending: new Map(),
    failures: new Map(),
    machines: [machine(M1), machine(M2)],
    states: [],
    settling: false,
    policy: { maxMoves: 3, backoffBaseMs: 1000 },
    ...over,
  };
}

/** Actions as log lines, with short machine IDs. */
function lines(actions: EngineAction[]): string[] {
  return actions.map((a) => {
    switch (a.kind) {
      case "schedule":
        return `schedule ${a.unit} on ${a.machineID.slice(0, 8)}: ${a.reason}`;
      case "unschedule":
        return `unschedule ${a.unit} from ${a.machineID.slice(0, 8)}: ${a.reason}`;
      case "pending":
        return `pending ${a.unit}: ${a.reason}`;
      case "clear-pending":
        return `clear-pending ${a.unit}`;
      default:
        return `failures ${a.unit}: ${a.record ? (a.record.gaveUp ?? `${a.record.moves.length} moves`) : "cleared"}`;
    }
  });
}

const run = (over: Partial<EngineInput>) => lines(decide(input(over)));

/** Where each unit ends up after the actions, by short machine ID. */
function placementsAfter(inp: EngineInput, actions: EngineAction[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, p] of next(inp, actions).schedule) out[name] = p.machineID.slice(0, 8);
  return out;
}

/** Applies the actions the way the engine's adapter does, giving the next pass's input. */
function next(inp: EngineInput, actions: EngineAction[]): EngineInput {
  const schedule = new Map(inp.schedule);
  const pending = new Map(inp.pending);
  const failures = new Map(inp.failures);
  for (const a of actions) {
    if (a.kind === "schedule")
      schedule.set(a.unit, { machineID: a.machineID, at: inp.now, reason: a.reason });
    if (a.kind === "unschedule") schedule.delete(a.unit);
    if (a.kind === "pending") pending.set(a.unit, { reason: a.reason, at: inp.now });
    if (a.kind === "clear-pending") pending.delete(a.unit);
    if (a.kind === "failures") {
      if (a.record) failures.set(a.unit, a.record);
      else failures.delete(a.unit);
    }
  }
  return { ...inp, schedule, pending, failures };
}

function failedOn(name: string, machineID: string, hash = "h1"): UnitState {
  return { name, hash, machineID, loadState: "loaded", activeState: "failed", subState: "failed" };
}

describe("decide: placing units", () => {
  it("places units in name order on the least-loaded machine, seeing earlier placements", () => {
    const units = ["c.service", "a.service", "b.service"].map((n) => unit(n));
    expect(run({ units })).toEqual([
      "schedule a.service on 1a2b3c4d: least loaded of 2 eligible machines",
      "schedule b.service on 5e6f7a8b: least loaded of 2 eligible machines",
      "schedule c.service on 1a2b3c4d: least loaded of 2 eligible machines",
    ]);
  });

  it("breaks load ties by machine ID whatever the input order", () => {
    const out = run({ units: [unit("a.service")], machines: [machine(M3), machine(M2), machine(M1)] });
    expect(out).toEqual(["schedule a.service on 1a2b3c4d: least loaded of 3 eligible machines"]);
  });

  it("counts placed units and the global units running on a machine as its load", () => {
    const units = [
      unit("old.service"),
      unit("g.service", { global: true, metadata: { role: ["edge"] } }),
      unit("new.service"),
    ];
    const machines = [machine(M1, { role: "edge" }), machine(M2), machine(M3)];
    // M1 runs g (global), M2 holds old: M3 is the least loaded.
    expect(run({ units, machines, schedule: placed({ "old.service": M2 }) })).toEqual([
      "schedule new.service on 9c0d1e2f: least loaded of 3 eligible machines",
    ]);
  });

  it("counts a global unit that may run again once a conflicting unit left", () => {
    // x (inactive) kept g off M3; once x is unscheduled g runs there, so all three tie at one unit.
    const units = [
      unit("x.service", {}, { state: "inactive" }),
      unit("g.service", { global: true, conflicts: ["x.service"], metadata: { role: ["g"] } }),
      unit("p.service"),
      unit("q.service"),
      unit("new.service"),
    ];
    const machines = [machine(M1), machine(M2), machine(M3, { role: "g" })];
    const schedule = placed({ "x.service": M3, "p.service": M1, "q.service": M2 });
    expect(run({ units, machines, schedule })).toEqual([
      "unschedule x.service from 9c0d1e2f: desired state is inactive",
      "schedule new.service on 1a2b3c4d: least loaded of 3 eligible machines",
    ]);
  });

  it("places units whose desired state is loaded, not inactive ones", () => {
    const units = [unit("a.service", {}, { state: "loaded" }), unit("b.service", {}, { state: "inactive" })];
    expect(run({ units })).toEqual(["schedule a.service on 1a2b3c4d: least loaded of 2 eligible machines"]);
  });

  it("never places templates or global units", () => {
    expect(run({ units: [unit("web@.service"), unit("g.service", { global: true })] })).toEqual([]);
  });

  it("leaves units placed where they are valid", () => {
    expect(run({ units: [unit("a.service")], schedule: placed({ "a.service": M2 }) })).toEqual([]);
  });

  it("says when there is only one eligible machine", () => {
    const units = [unit("a.service", { metadata: { disk: ["ssd"] } })];
    expect(run({ units, machines: [machine(M1), machine(M2, { disk: "ssd" })] })).toEqual([
      "schedule a.service on 5e6f7a8b: only eligible machine",
    ]);
  });

  it("reaches a fixed point: applying the actions and deciding again changes nothing", () => {
    const units = [
      unit("a.service"),
      unit("b.service", { machineOf: ["a.service"] }),
      unit("c.service", { conflicts: ["a.service"] }),
      unit("d.service", { machineID: "5e6f7a8b" }),
    ];
    const first = input({ units });
    const second = next(first, decide(first));
    expect(decide(second)).toEqual([]);
  });
});

describe("decide: X-Fleet rules", () => {
  it("MachineID pins a unit by full or short ID", () => {
    const units = [unit("full.service", { machineID: M2 }), unit("short.service", { machineID: "5e6f7a8b" })];
    expect(run({ units })).toEqual([
      `schedule full.service on 5e6f7a8b: pinned to machine ${M2}`,
      "schedule short.service on 5e6f7a8b: pinned to machine 5e6f7a8b",
    ]);
  });

  it("MachineMetadata: values of a key are ORed, keys ANDed", () => {
    const units = [unit("a.service", { metadata: { region: ["us-east", "us-west"], disk: ["ssd"] } })];
    const machines = [
      machine(M1, { region: "us-east" }),
      machine(M2, { region: "us-west", disk: "ssd" }),
      machine(M3, { region: "eu", disk: "ssd" }),
    ];
    expect(run({ units, machines })).toEqual(["schedule a.service on 5e6f7a8b: only eligible machine"]);
  });

  it("Conflicts keep units apart, in both directions", () => {
    const units = [
      unit("web@1.service", { conflicts: ["web@*.service"] }),
      unit("web@2.service"),
      unit("web@3.service", { conflicts: ["web@*.service"] }),
    ];
    expect(run({ units, machines: [machine(M1), machine(M2), machine(M3)] })).toEqual([
      "schedule web@1.service on 1a2b3c4d: least loaded of 3 eligible machines",
      "schedule web@2.service on 5e6f7a8b: least loaded of 2 eligible machines",
      "schedule web@3.service on 9c0d1e2f: only eligible machine",
    ]);
  });

  it("Conflicts also apply to global units running on a machine", () => {
    const units = [
      unit("g.service", { global: true, metadata: { role: ["edge"] } }),
      unit("a.service", { conflicts: ["g.service"] }),
    ];
    expect(
      run({ units, machines: [machine(M1, { role: "edge" }), machine(M2, { role: "edge" }), machine(M3)] }),
    ).toEqual(["schedule a.service on 9c0d1e2f: only eligible machine"]);
  });

  describe("MachineOf", () => {
    it("places a follower with its target, even when it is named before the target", () => {
      const units = [
        unit("a-sidecar.service", { machineOf: ["z-main.service"] }),
        unit("z-main.service"),
        unit("m.service"),
      ];
      const inp = input({ units, schedule: placed({ "m.service": M1 }) });
      expect(lines(decide(inp))).toEqual([
        "schedule z-main.service on 5e6f7a8b: least loaded of 2 eligible machines",
        "schedule a-sidecar.service on 5e6f7a8b: with peer z-main.service",
      ]);
    });

    it("follows a chain of peers", () => {
      const units = [
        unit("c.service", { machineOf: ["b.service"] }),
        unit("b.service", { machineOf: ["a.service"] }),
        unit("a.service"),
      ];
      const inp = input({ units, schedule: placed({ "a.service": M2 }) });
      expect(placementsAfter(inp, decide(inp))).toEqual({
        "a.service": "5e6f7a8b",
        "b.service": "5e6f7a8b",
        "c.service": "5e6f7a8b",
      });
    });

    it("needs all peers on the same machine", () => {
      const units = [
        unit("f.service", { machineOf: ["a.service", "b.service"] }),
        unit("a.service"),
        unit("b.service"),
      ];
      const out = run({ units, schedule: placed({ "a.service": M1, "b.service": M2 }) });
      expect(out).toEqual(["pending f.service: peers a.service, b.service are on different machines"]);
    });

    it("never places units that name each other, and says why", () => {
      const units = [
        unit("a.service", { machineOf: ["b.service"] }),
        unit("b.service", { machineOf: ["a.service"] }),
      ];
      expect(run({ units })).toEqual([
        "pending a.service: MachineOf cycle a.service → b.service → a.service can never be scheduled",
        "pending b.service: MachineOf cycle b.service → a.service → b.service can never be scheduled",
      ]);
    });

    it("moves followers with their target when the target's machine goes away", () => {
      const units = [unit("db.service"), unit("app.service", { machineOf: ["db.service"] })];
      const inp = input({
        units,
        machines: [machine(M2), machine(M3)],
        schedule: placed({ "db.service": M1, "app.service": M1 }),
      });
      expect(lines(decide(inp))).toEqual([
        "unschedule app.service from 1a2b3c4d: machine 1a2b3c4d went away",
        "unschedule db.service from 1a2b3c4d: machine 1a2b3c4d went away",
        "schedule db.service on 5e6f7a8b: moved from 1a2b3c4d: machine went away",
        "schedule app.service on 5e6f7a8b: with peer db.service (moved from 1a2b3c4d)",
      ]);
    });
  });

  describe("Replaces", () => {
    it("moves the replaced unit off the machine the replacing unit was placed on", () => {
      const units = [unit("old.service"), unit("new.service", { replaces: ["old.service"] })];
      const inp = input({ units, machines: [machine(M1)], schedule: placed({ "old.service": M1 }) });
      expect(lines(decide(inp))).toEqual([
        "unschedule old.service from 1a2b3c4d: replaced by new.service",
        "schedule new.service on 1a2b3c4d: only eligible machine",
        "pending old.service: replaced by new.service on every eligible machine",
      ]);
    });

    it("reschedules the replaced unit elsewhere in the same pass", () => {
      const units = [
        unit("old.service"),
        unit("new.service", { replaces: ["old.service"], machineOf: ["anchor.service"] }),
        unit("anchor.service"),
      ];
      const inp = input({ units, schedule: placed({ "old.service": M1, "anchor.service": M1 }) });
      expect(lines(decide(inp))).toEqual([
        "unschedule old.service from 1a2b3c4d: replaced by new.service",
        "schedule new.service on 1a2b3c4d: with peer anchor.service",
        "schedule old.service on 5e6f7a8b: moved from 1a2b3c4d: replaced by new.service",
      ]);
    });

    it("moves a replaced unit found sharing a machine with its replacer", () => {
      const units = [unit("old.service"), unit("new.service", { replaces: ["old*"] })];
      const out = run({ units, schedule: placed({ "old.service": M1, "new.service": M1 }) });
      expect(out).toEqual([
        "unschedule old.service from 1a2b3c4d: replaced by new.service",
        "schedule old.service on 5e6f7a8b: moved from 1a2b3c4d: replaced by new.service",
      ]);
    });

    it("places a unit replaced in the pass that placed it again only in the next pass", () => {
      // a lands on M1 (ties go to the lower ID); b, which must sit beside the anchor there, replaces it.
      const units = [
        unit("a.service"),
        unit("b.service", { replaces: ["a.service"], machineOf: ["anchor.service"] }),
        unit("anchor.service"),
        unit("c.service"),
      ];
      const first = input({ units, schedule: placed({ "anchor.service": M1, "c.service": M2 }) });
      const actions = decide(first);
      expect(lines(actions)).toEqual([
        "schedule a.service on 1a2b3c4d: least loaded of 2 eligible machines",
        "unschedule a.service from 1a2b3c4d: replaced by b.service",
        "schedule b.service on 1a2b3c4d: with peer anchor.service",
        "pending a.service: replaced by b.service on 1a2b3c4d; placing it again next pass",
      ]);
      expect(lines(decide(next(first, actions)))).toEqual([
        "schedule a.service on 5e6f7a8b: only eligible machine",
        "clear-pending a.service",
      ]);
    });

    it("leaves a replaced unit pending when the only machine it may use holds its replacer", () => {
      const units = [
        unit("a.service", { machineID: "1a2b3c4d" }),
        unit("b.service", { replaces: ["a.service"] }),
      ];
      const out = run({ units, schedule: placed({ "b.service": M1 }) });
      expect(out).toEqual(["pending a.service: replaced by b.service on every eligible machine"]);
    });

    it("places each unit at most once per pass, so a ring of Replaces cannot loop", () => {
      const units = [
        unit("u.service", { replaces: ["v.service"] }),
        unit("v.service", { replaces: ["w.service"] }),
        unit("w.service", { replaces: ["u.service"] }),
      ];
      const scheduled = decide(input({ units })).filter((a) => a.kind === "schedule");
      expect(new Set(scheduled.map((a) => a.unit)).size).toBe(scheduled.length);
    });

    it("ignores circular replaces", () => {
      const units = [
        unit("a.service", { replaces: ["b.service"] }),
        unit("b.service", { replaces: ["a.service"] }),
      ];
      expect(run({ units, schedule: placed({ "a.service": M1, "b.service": M1 }) })).toEqual([]);
    });

    it("never places a unit where something replaces it", () => {
      const units = [unit("a.service"), unit("new.service", { replaces: ["a.service"] }), unit("x.service")];
      const out = run({ units, schedule: placed({ "new.service": M1, "x.service": M2 }) });
      expect(out).toEqual(["schedule a.service on 5e6f7a8b: only eligible machine"]);
    });
  });
});

describe("decide: unscheduling", () => {
  it("unschedules a unit whose desired state became inactive, and clears its pending record", () => {
    const units = [
      unit("a.service", {}, { state: "inactive" }),
      unit("b.service", {}, { state: "inactive" }),
    ];
    const pending = new Map([["b.service", { reason: "no machines", at: 0 }]]);
    expect(run({ units, pending, schedule: placed({ "a.service": M1 }) })).toEqual([
      "unschedule a.service from 1a2b3c4d: desired state is inactive",
      "clear-pending b.service",
    ]);
  });

  it("moves units off a machine that went away", () => {
    const units = [unit("a.service")];
    expect(run({ units, schedule: placed({ "a.service": M3 }) })).toEqual([
      "unschedule a.service from 9c0d1e2f: machine 9c0d1e2f went away",
      "schedule a.service on 1a2b3c4d: moved from 9c0d1e2f: machine went away",
    ]);
  });

  it("keeps units on a missing machine while settling", () => {
    const units = [unit("a.service"), unit("b.service", { machineOf: ["a.service"] })];
    const out = run({ units, settling: true, schedule: placed({ "a.service": M3 }) });
    // The unseen machine keeps its unit; the follower waits for it rather than being misplaced.
    expect(out).toEqual(["pending b.service: peer a.service is on 9c0d1e2f, which is not in the cluster"]);
  });

  it("keeps a SingleInstance unit on a lost machine until the grace has passed, then moves it", () => {
    const units = [unit("one.service", { singleInstance: true }), unit("any.service")];
    const schedule = placed({ "one.service": M3, "any.service": M3 });
    const policy = { maxMoves: 3, backoffBaseMs: 1000, singleInstanceGraceMs: 2000 };
    // Just seen gone (and not listed at all): only the ordinary unit moves.
    for (const missingForMs of [new Map([[M3, 1999]]), new Map<string, number>()]) {
      expect(run({ units, schedule, policy, missingForMs })).toEqual([
        "unschedule any.service from 9c0d1e2f: machine 9c0d1e2f went away",
        "schedule any.service on 1a2b3c4d: moved from 9c0d1e2f: machine went away",
      ]);
    }
    expect(run({ units, schedule, policy, missingForMs: new Map([[M3, 2000]]) })).toEqual([
      "unschedule any.service from 9c0d1e2f: machine 9c0d1e2f went away",
      "unschedule one.service from 9c0d1e2f: machine 9c0d1e2f went away",
      "schedule any.service on 1a2b3c4d: moved from 9c0d1e2f: machine went away",
      "schedule one.service on 5e6f7a8b: moved from 9c0d1e2f: machine went away",
    ]);
  });

  it("uses the default SingleInstance grace when the policy has none", () => {
    const units = [unit("one.service", { singleInstance: true })];
    const schedule = placed({ "one.service": M3 });
    expect(run({ units, schedule, missingForMs: new Map([[M3, 1999]]) })).toEqual([]);
    expect(run({ units, schedule, missingForMs: new Map([[M3, 2000]]) })).toHaveLength(2);
  });

  it("a follower of a SingleInstance unit waits for it while it waits out the grace", () => {
    const units = [
      unit("one.service", { singleInstance: true }),
      unit("f.service", { machineOf: ["one.service"] }),
    ];
    const schedule = placed({ "one.service": M3, "f.service": M3 });
    expect(run({ units, schedule, missingForMs: new Map([[M3, 500]]) })).toEqual([
      "unschedule f.service from 9c0d1e2f: machine 9c0d1e2f went away",
      "pending f.service: peer one.service is on 9c0d1e2f, which is not in the cluster",
    ]);
  });

  it("still places new units while settling", () => {
    expect(run({ units: [unit("a.service")], settling: true })).toHaveLength(1);
  });

  it("moves a unit when its machine no longer meets the rules (metadata changed)", () => {
    const units = [unit("a.service", { metadata: { disk: ["ssd"] } })];
    const machines = [machine(M1, { disk: "hdd" }), machine(M2, { disk: "ssd" })];
    expect(run({ units, machines, schedule: placed({ "a.service": M1 }) })).toEqual([
      "unschedule a.service from 1a2b3c4d: lacks metadata disk=ssd (has disk=hdd)",
      "schedule a.service on 5e6f7a8b: moved from 1a2b3c4d: lacks metadata disk=ssd (has disk=hdd)",
    ]);
  });

  it("drops placements of global units, templates and units that no longer exist", () => {
    const units = [unit("g.service", { global: true }), unit("t@.service")];
    const schedule = placed({ "g.service": M1, "gone.service": M1, "t@.service": M2 });
    expect(run({ units, schedule })).toEqual([
      "unschedule g.service from 1a2b3c4d: global units are not scheduled by the engine",
      "unschedule gone.service from 1a2b3c4d: unit no longer exists",
      "unschedule t@.service from 5e6f7a8b: templates are never scheduled",
    ]);
  });

  it("of two conflicting units found together, moves the first by name", () => {
    const units = [unit("a.service", { conflicts: ["b.service"] }), unit("b.service")];
    expect(run({ units, schedule: placed({ "a.service": M1, "b.service": M1 }) })).toEqual([
      "unschedule a.service from 1a2b3c4d: conflicts with b.service",
      "schedule a.service on 5e6f7a8b: moved from 1a2b3c4d: conflicts with b.service",
    ]);
  });
});

describe("decide: pending reasons", () => {
  // [case, input, the pending line expected for the unit under test]
  const cases: [string, Partial<EngineInput>, string][] = [
    ["no machines", { units: [unit("a.service")], machines: [] }, "a.service: no machines"],
    [
      "MachineID of a machine not in the cluster",
      { units: [unit("a.service", { machineID: "deadbeef" })] },
      "a.service: machine deadbeef is not in the cluster",
    ],
    [
      "metadata no machine has",
      { units: [unit("a.service", { metadata: { region: ["us-east"] } })] },
      "a.service: no machine has metadata region=us-east",
    ],
    [
      "the pinned machine lacks the metadata",
      { units: [unit("a.service", { machineID: "1a2b3c4d", metadata: { region: ["us-east"] } })] },
      "a.service: machine 1a2b3c4d lacks metadata region=us-east",
    ],
    [
      "conflicts everywhere",
      {
        units: [unit("web@1.service"), unit("web@2.service", { conflicts: ["web@*"] })],
        machines: [machine(M1)],
        schedule: placed({ "web@1.service": M1 }),
      },
      "web@2.service: conflicts with web@1.service on every eligible machine",
    ],
    [
      "different conflicts on each machine",
      {
        units: [
          unit("a.service"),
          unit("b.service"),
          unit("x.service", { conflicts: ["a.service", "b.service"] }),
        ],
        schedule: placed({ "a.service": M1, "b.service": M2 }),
      },
      "x.service: conflicts with a.service, b.service on every eligible machine",
    ],
    [
      "a peer not yet scheduled",
      {
        units: [
          unit("app.service", { machineOf: ["db.service"] }),
          unit("db.service", { machineID: "deadbeef" }),
        ],
      },
      "app.service: waiting for peer db.service to be scheduled",
    ],
    [
      "an inactive peer",
      {
        units: [
          unit("app.service", { machineOf: ["db.service"] }),
          unit("db.service", {}, { state: "inactive" }),
        ],
      },
      "app.service: waiting for peer db.service, which is inactive",
    ],
    [
      "a peer that does not exist",
      { units: [unit("app.service", { machineOf: ["db.service"] })] },
      "app.service: peer db.service does not exist",
    ],
    [
      "a peer on a machine lacking the metadata",
      {
        units: [
          unit("app.service", { machineOf: ["db.service"], metadata: { disk: ["ssd"] } }),
          unit("db.service"),
        ],
        machines: [machine(M1), machine(M2, { disk: "ssd" })],
        schedule: placed({ "db.service": M1 }),
      },
      "app.service: peer db.service is on 1a2b3c4d: lacks metadata disk=ssd",
    ],
  ];

  it.each(cases)("%s", (_, over, line) => {
    expect(run(over)).toContain(`pending ${line}`);
  });

  it("is not rewritten when the reason is unchanged", () => {
    const pending = new Map([["a.service", { reason: "no machines", at: 0 }]]);
    expect(run({ units: [unit("a.service")], machines: [], pending })).toEqual([]);
  });

  it("is rewritten when the reason changed", () => {
    const pending = new Map([["a.service", { reason: "no machines", at: 0 }]]);
    const units = [unit("a.service", { metadata: { region: ["x"] } })];
    expect(run({ units, pending })).toEqual(["pending a.service: no machine has metadata region=x"]);
  });

  it("is cleared once the unit is placed", () => {
    const pending = new Map([["a.service", { reason: "no machines", at: 0 }]]);
    expect(run({ units: [unit("a.service")], pending })).toEqual([
      "schedule a.service on 1a2b3c4d: least loaded of 2 eligible machines",
      "clear-pending a.service",
    ]);
  });

  it("is cleared for units the engine does not place", () => {
    const pending = new Map([
      ["g.service", { reason: "x", at: 0 }],
      ["gone.service", { reason: "x", at: 0 }],
    ]);
    expect(run({ units: [unit("g.service", { global: true })], pending })).toEqual([
      "clear-pending g.service",
      "clear-pending gone.service",
    ]);
  });
});

describe("decide: failed units", () => {
  const web = unit("web.service");
  const base = (over: Partial<EngineInput> = {}) =>
    input({
      units: [web],
      machines: [machine(M1), machine(M2), machine(M3)],
      schedule: placed({ "web.service": M1 }, NOW - 10_000),
      states: [failedOn("web.service", M1)],
      ...over,
    });

  it("moves a failed unit to another machine and records the move", () => {
    const actions = decide(base());
    expect(lines(actions)).toEqual([
      "unschedule web.service from 1a2b3c4d: failed on 1a2b3c4d",
      "failures web.service: 1 moves",
      "schedule web.service on 5e6f7a8b: moved from 1a2b3c4d: failed there (move 1/3)",
    ]);
    expect(actions[1]).toEqual({
      kind: "failures",
      unit: "web.service",
      record: { hash: "h1", moves: [{ from: M1, at: NOW }] },
    });
  });

  it("waits for the backoff, which doubles with each move, counted from the placement", () => {
    const record: FailureRecord = { hash: "h1", moves: [{ from: M3, at: 0 }] };
    const failures = new Map([["web.service", record]]);
    // One move so far: wait 1000 * 2^1 = 2000 ms after being placed.
    expect(run(base({ failures, schedule: placed({ "web.service": M1 }, NOW - 1999) }))).toEqual([]);
    expect(decide(base({ failures, schedule: placed({ "web.service": M1 }, NOW - 2000) }))).toHaveLength(3);
    // No move yet: 1000 ms.
    expect(decide(base({ schedule: placed({ "web.service": M1 }, NOW - 999) }))).toEqual([]);
  });

  it("never moves a unit back to a machine it failed on", () => {
    const failures = new Map([["web.service", { hash: "h1", moves: [{ from: M2, at: 0 }] }]]);
    const out = run(base({ failures }));
    expect(out).toContain("schedule web.service on 9c0d1e2f: moved from 1a2b3c4d: failed there (move 2/3)");
  });

  it("gives up after maxMoves moves, saying where it failed", () => {
    const moves = [
      { from: M2, at: 0 },
      { from: M3, at: 0 },
      { from: M2, at: 0 },
    ];
    const failures = new Map([["web.service", { hash: "h1", moves }]]);
    expect(run(base({ failures }))).toEqual([
      "failures web.service: failed on 3 machines (5e6f7a8b, 9c0d1e2f, 1a2b3c4d); stopped moving after 3 moves",
    ]);
  });

  it("does nothing more once it gave up", () => {
    const failures = new Map([
      ["web.service", { hash: "h1", moves: [], gaveUp: "failed on every eligible machine" }],
    ]);
    expect(run(base({ failures }))).toEqual([]);
  });

  it("gives up and stays placed when no other machine is eligible", () => {
    const failures = new Map([["web.service", { hash: "h1", moves: [{ from: M2, at: 0 }] }]]);
    const units = [unit("web.service", { conflicts: ["other.service"] }), unit("other.service")];
    const schedule = new Map([...placed({ "web.service": M1 }, 0), ...placed({ "other.service": M3 })]);
    expect(run(base({ failures, units, schedule }))).toEqual([
      "failures web.service: failed on every eligible machine",
    ]);
  });

  it("takes MachineOf followers along", () => {
    const units = [web, unit("sidecar.service", { machineOf: ["web.service"] })];
    const schedule = placed({ "web.service": M1, "sidecar.service": M1 }, 0);
    expect(run(base({ units, schedule }))).toEqual([
      "unschedule web.service from 1a2b3c4d: failed on 1a2b3c4d",
      "failures web.service: 1 moves",
      "unschedule sidecar.service from 1a2b3c4d: peer web.service is not on this machine",
      "schedule web.service on 5e6f7a8b: moved from 1a2b3c4d: failed there (move 1/3)",
      "schedule sidecar.service on 5e6f7a8b: with peer web.service (moved from 1a2b3c4d)",
    ]);
  });

  it("ignores failures of units that should not be running, or of another version", () => {
    expect(run(base({ units: [unit("web.service", {}, { state: "loaded" })] }))).toEqual([]);
    expect(run(base({ states: [failedOn("web.service", M1, "old-hash")] }))).toEqual([]);
    expect(run(base({ states: [failedOn("web.service", M2)] }))).toEqual([]);
  });

  it("starts a new record when the unit changed, clearing the old one", () => {
    const failures = new Map([
      ["web.service", { hash: "old", moves: [], gaveUp: "failed on every eligible machine" }],
    ]);
    expect(run(base({ failures, states: [] }))).toEqual(["failures web.service: cleared"]);
    // The new version failing is a first failure, not a continuation of the old record.
    expect(run(base({ failures }))).toContain("failures web.service: 1 moves");
  });

  it("clears the record of a unit that was unloaded or destroyed", () => {
    const record = { hash: "h1", moves: [{ from: M2, at: 0 }] };
    const failures = new Map([
      ["web.service", record],
      ["gone.service", record],
    ]);
    const units = [unit("web.service", {}, { state: "inactive" })];
    expect(run(base({ units, failures, states: [], schedule: new Map() }))).toEqual([
      "failures gone.service: cleared",
      "failures web.service: cleared",
    ]);
  });

  it("forgets the record of a stopped unit, so the next start retries from scratch", () => {
    const failures = new Map([["web.service", { hash: "h1", moves: [{ from: M2, at: 0 }], gaveUp: "x" }]]);
    expect(
      run(base({ units: [unit("web.service", {}, { state: "loaded" })], failures, states: [] })),
    ).toEqual(["failures web.service: cleared"]);
  });

  it("says so when the machine it was moving to was taken by an earlier unit in the same pass", () => {
    // Step 2 sees M2 free; step 3 places `a` (pinned to M2, conflicting with web) there first.
    const units = [web, unit("a.service", { machineID: "5e6f7a8b", conflicts: ["web.service"] })];
    expect(run(base({ units, machines: [machine(M1), machine(M2)] }))).toEqual([
      "unschedule web.service from 1a2b3c4d: failed on 1a2b3c4d",
      "failures web.service: 1 moves",
      "schedule a.service on 5e6f7a8b: pinned to machine 5e6f7a8b",
      "pending web.service: failed on 1a2b3c4d; no other machine is eligible",
    ]);
  });

  it("settles after a move: the next pass leaves the moved unit alone", () => {
    const first = base();
    const second = next(first, decide(first));
    expect(decide({ ...second, states: [] })).toEqual([]);
  });
});
