import { describe, expect, it } from "vitest";
import {
  ableToRun,
  conflicts,
  displacedBy,
  placementView,
  replaces,
  type UnitRef,
} from "../../agent/engine/eligibility.js";
import { LoadHeap } from "../../agent/engine/load-heap.js";
import { RuleIndexOfUnits } from "../../agent/engine/rule-index.js";
import { decide, type SchedUnit } from "../../agent/engine/scheduler.js";
import type { Machine, Placement, Requirements } from "../../agent/model.js";

function unit(name: string, req: Partial<Requirements> = {}): UnitRef {
  return {
    name,
    requirements: { machineOf: [], metadata: {}, conflicts: [], global: false, replaces: [], ...req },
  };
}

/** A small deterministic generator, so a failure names a reproducible case. */
function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

const NAMES = [
  "a.service",
  "ab.service",
  "b.service",
  "web@1.service",
  "web@2.service",
  "web@10.service",
  "db.service",
  "dé.service",
  "x/y.service",
];
const PATTERNS = [
  "*",
  "web@*.service",
  "web@?.service",
  "a*",
  "[ab]*.service",
  "[^a]*",
  "db.service",
  "d\\é.service",
  "*.service",
  "x/*",
  "[",
  "*b*",
];

describe("RuleIndexOfUnits", () => {
  it("finds exactly the units the pairwise rules relate, for random units and patterns", () => {
    for (let seed = 1; seed <= 200; seed++) {
      const rnd = random(seed);
      const some = (list: string[]) => list.filter(() => rnd() < 0.15);
      const units = NAMES.filter(() => rnd() < 0.8).map((name) =>
        unit(name, { conflicts: some(PATTERNS), replaces: some(PATTERNS) }),
      );
      const index = new RuleIndexOfUnits(units);
      for (const u of units) {
        const others = units.filter((o) => o.name !== u.name);
        const conflicting = new Set(index.conflicting(u).flatMap((set) => [...set]));
        conflicting.delete(u.name);
        const want = (holds: (o: UnitRef) => boolean) =>
          others
            .filter(holds)
            .map((o) => o.name)
            .sort();
        const context = `seed ${seed}, unit ${u.name}`;
        expect([...conflicting].sort(), context).toEqual(want((o) => conflicts(u, o) || conflicts(o, u)));
        expect([...index.replacing(u)].sort(), context).toEqual(want((o) => replaces(o, u)));
        expect([...index.replaced(u)].sort(), context).toEqual(want((o) => replaces(u, o)));
      }
    }
  });
});

describe("LoadHeap", () => {
  it("yields the least-loaded machine that fits, ties to the lower ID, as loads change", () => {
    const loads = new Map([
      ["m3", 0],
      ["m1", 0],
      ["m2", 1],
    ]);
    const heap = new LoadHeap((id) => loads.get(id) ?? 0);
    for (const id of loads.keys()) heap.touch(id);
    expect(heap.first(() => true)).toBe("m1");
    expect(heap.first((id) => id !== "m1")).toBe("m3");
    loads.set("m1", 2);
    loads.set("m3", 2);
    heap.touch("m1");
    heap.touch("m3");
    expect(heap.first(() => true)).toBe("m2");
    expect(heap.first((id) => id !== "m2")).toBe("m1");
    expect(heap.first(() => false)).toBeUndefined();
    // Nothing is lost by walking: every machine is still there, in order.
    const order: string[] = [];
    heap.first((id) => {
      order.push(id);
      return false;
    });
    expect(order).toEqual(["m2", "m1", "m3"]);
  });
});

describe("decide with indexes agrees with the scanning rules", () => {
  const ids = Array.from(
    { length: 6 },
    (_, i) => `${i % 2 ? "1a2b3c4d" : "5e6f7a8b"}${String(i).padStart(24, "0")}`,
  );
  const names = [
    "a.service",
    "b.service",
    "web@1.service",
    "web@2.service",
    "web@3.service",
    "db.service",
    "new.service",
    "old.service",
    "g.service",
    "side.service",
  ];
  const patterns = ["web@*.service", "*", "?.service", "[ab].service", "old*", "db.service", "g.service"];

  it("a settled cluster breaks no rule, as eligibility.ts checks it without an index", () => {
    let checked = 0;
    for (let seed = 1; seed <= 150; seed++) {
      const rnd = random(seed);
      const pick = <T>(list: readonly T[]) => list[Math.floor(rnd() * list.length)] as T;
      const machines: Machine[] = ids
        .filter(() => rnd() < 0.85)
        .map((id) => ({ id, publicIP: "", version: "", metadata: { region: pick(["a", "b"]) } }));
      const units: SchedUnit[] = names.map((name) => ({
        name,
        options: [],
        hash: "h",
        desiredState: pick(["launched", "launched", "loaded", "inactive"] as const),
        requirements: {
          machineOf: rnd() < 0.15 ? [pick(names)].filter((p) => p !== name) : [],
          metadata: rnd() < 0.2 ? { region: ["a"] } : ({} as Record<string, string[]>),
          conflicts: rnd() < 0.3 ? [pick(patterns)] : [],
          global: rnd() < 0.1,
          replaces: rnd() < 0.15 ? [pick(patterns)] : [],
        },
      }));
      let schedule = new Map<string, Placement>();
      for (let pass = 0; pass < 6; pass++) {
        const actions = decide({
          now: 0,
          units,
          schedule,
          pending: new Map(),
          failures: new Map(),
          machines,
          states: [],
          settling: false,
          policy: { maxMoves: 3, backoffBaseMs: 1000 },
        });
        schedule = new Map(schedule);
        for (const a of actions) {
          if (a.kind === "schedule")
            schedule.set(a.unit, { machineID: a.machineID, at: 0, reason: a.reason });
          if (a.kind === "unschedule") schedule.delete(a.unit);
        }
      }
      const view = placementView(units, { schedule }, machines);
      for (const [name, { machineID }] of schedule) {
        const u = units.find((x) => x.name === name) as SchedUnit;
        const m = machines.find((x) => x.id === machineID);
        const context = `seed ${seed}: ${name} on ${machineID.slice(0, 8)}`;
        expect(m, context).toBeDefined();
        expect(u.desiredState, context).not.toBe("inactive");
        expect(ableToRun(u, m as Machine, view), context).toEqual({ ok: true });
        expect(displacedBy(u, machineID, view), context).toBeUndefined();
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(500); // the random clusters do place units
  });
});
