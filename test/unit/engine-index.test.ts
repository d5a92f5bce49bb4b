import { describe, expect, it } from "vitest";
import { conflicts, replaces, type UnitRef } from "../../agent/engine/eligibility.js";
import { LoadHeap } from "../../agent/engine/load-heap.js";
import { RuleIndexOfUnits } from "../../agent/engine/rule-index.js";
import type { Requirements } from "../../agent/model.js";

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
