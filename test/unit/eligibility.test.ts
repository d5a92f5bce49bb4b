import { describe, expect, it } from "vitest";
import {
  ableToRun,
  displacedBy,
  formatMetadata,
  globalUnitsFor,
  matchesMachineID,
  type PlacementView,
  placementView,
  replaces,
  type UnitRef,
} from "../../agent/engine/eligibility.js";
import type { DesiredState, Machine, Requirements } from "../../agent/model.js";

const A = "aaaaaaaa11111111111111111111111a";
const B = "bbbbbbbb22222222222222222222222b";

function machine(id: string, metadata: Record<string, string> = {}): Machine {
  return { id, publicIP: "10.0.0.1", metadata, version: "test" };
}

function unit(
  name: string,
  req: Partial<Requirements> = {},
  desiredState: DesiredState = "launched",
): UnitRef & { desiredState: DesiredState } {
  return {
    name,
    desiredState,
    requirements: { machineOf: [], metadata: {}, conflicts: [], global: false, replaces: [], ...req },
  };
}

/** A view with the given units on each machine. */
function view(on: Record<string, UnitRef[]>): PlacementView {
  return new Map(Object.entries(on).map(([id, units]) => [id, new Map(units.map((u) => [u.name, u]))]));
}

const empty = view({});

describe("ableToRun", () => {
  describe("MachineID", () => {
    it("matches the full ID", () => {
      expect(ableToRun(unit("a.service", { machineID: A }), machine(A), empty)).toEqual({ ok: true });
    });

    it("matches the 8-character short ID", () => {
      expect(ableToRun(unit("a.service", { machineID: "aaaaaaaa" }), machine(A), empty).ok).toBe(true);
    });

    it("rejects another machine, and a prefix that is not the short ID", () => {
      expect(ableToRun(unit("a.service", { machineID: A }), machine(B), empty)).toEqual({
        ok: false,
        rule: "machineID",
        reason: `unit is pinned to machine ${A}`,
      });
      expect(ableToRun(unit("a.service", { machineID: "aaaa" }), machine(A), empty).ok).toBe(false);
    });
  });

  describe("MachineMetadata", () => {
    const req = { metadata: { region: ["us-east", "us-west"], disk: ["ssd"] } };

    it("ORs the values of one key and ANDs the keys", () => {
      expect(
        ableToRun(unit("a.service", req), machine(A, { region: "us-west", disk: "ssd" }), empty).ok,
      ).toBe(true);
      expect(
        ableToRun(unit("a.service", req), machine(A, { region: "us-east", disk: "ssd" }), empty).ok,
      ).toBe(true);
    });

    it("names the first key the machine lacks, and what it has instead", () => {
      expect(ableToRun(unit("a.service", req), machine(A, { region: "us-east" }), empty)).toEqual({
        ok: false,
        rule: "metadata",
        reason: "lacks metadata disk=ssd",
      });
      expect(ableToRun(unit("a.service", req), machine(A, { region: "eu", disk: "ssd" }), empty)).toEqual({
        ok: false,
        rule: "metadata",
        reason: "lacks metadata region=us-east|us-west (has region=eu)",
      });
    });

    it("ignores metadata the unit does not ask for", () => {
      expect(ableToRun(unit("a.service"), machine(A, { region: "eu" }), empty).ok).toBe(true);
    });
  });

  describe("MachineOf", () => {
    const follower = unit("f.service", { machineOf: ["db.service", "cache.service"] });

    it("needs every peer on the machine", () => {
      const v = view({ [A]: [unit("db.service"), unit("cache.service")], [B]: [unit("db.service")] });
      expect(ableToRun(follower, machine(A), v).ok).toBe(true);
      expect(ableToRun(follower, machine(B), v)).toEqual({
        ok: false,
        rule: "machineOf",
        reason: "peer cache.service is not on this machine",
        other: "cache.service",
      });
    });

    it("counts a global unit running on the machine as a local peer", () => {
      const f = unit("f.service", { machineOf: ["log.service"] });
      expect(ableToRun(f, machine(A), view({ [A]: [unit("log.service", { global: true })] })).ok).toBe(true);
    });
  });

  describe("Conflicts", () => {
    it("rejects a machine holding a unit the unit's pattern matches", () => {
      const web = unit("web@2.service", { conflicts: ["web@*.service"] });
      expect(ableToRun(web, machine(A), view({ [A]: [unit("web@1.service")] }))).toEqual({
        ok: false,
        rule: "conflicts",
        reason: "conflicts with web@1.service",
        other: "web@1.service",
      });
    });

    it("is two-way: a placed unit's pattern matching the newcomer is enough", () => {
      const placed = unit("web@1.service", { conflicts: ["web@*.service"] });
      expect(ableToRun(unit("web@2.service"), machine(A), view({ [A]: [placed] })).ok).toBe(false);
    });

    it("does not conflict with itself", () => {
      const web = unit("web@1.service", { conflicts: ["web@*.service"] });
      expect(ableToRun(web, machine(A), view({ [A]: [web] })).ok).toBe(true);
    });

    it("checks global units running on the machine", () => {
      const agent = unit("agent.service", { global: true, conflicts: ["noisy.service"] });
      expect(ableToRun(unit("noisy.service"), machine(A), view({ [A]: [agent] })).ok).toBe(false);
    });

    it("names the first conflicting unit by name", () => {
      const u = unit("x.service", { conflicts: ["*"] });
      const v = view({ [A]: [unit("b.service"), unit("a.service")] });
      expect(ableToRun(u, machine(A), v)).toMatchObject({ other: "a.service" });
    });
  });

  it("checks the rules in order: MachineID before metadata", () => {
    const u = unit("a.service", { machineID: B, metadata: { region: ["x"] } });
    expect(ableToRun(u, machine(A), empty)).toMatchObject({ rule: "machineID" });
  });

  it("does not let Replaces make a machine ineligible", () => {
    const u = unit("new.service", { replaces: ["old.service"] });
    expect(ableToRun(u, machine(A), view({ [A]: [unit("old.service")] })).ok).toBe(true);
  });
});

describe("globalUnitsFor", () => {
  const schedule = (on: Record<string, string>) => ({
    schedule: new Map(Object.entries(on).map(([name, machineID]) => [name, { machineID }])),
  });

  it("returns global units whose metadata matches, in name order", () => {
    const units = [
      unit("z.service", { global: true }),
      unit("a.service", { global: true, metadata: { role: ["web"] } }),
      unit("b.service", { global: true, metadata: { role: ["db"] } }),
      unit("plain.service"),
    ];
    expect(globalUnitsFor(machine(A, { role: "web" }), units, schedule({})).map((u) => u.name)).toEqual([
      "a.service",
      "z.service",
    ]);
  });

  it("admits the units placed on the machine first: a conflicting global unit yields", () => {
    const units = [unit("g.service", { global: true, conflicts: ["db.service"] }), unit("db.service")];
    expect(globalUnitsFor(machine(A), units, schedule({ "db.service": A }))).toEqual([]);
    expect(globalUnitsFor(machine(B), units, schedule({ "db.service": A })).map((u) => u.name)).toEqual([
      "g.service",
    ]);
  });

  it("between conflicting global units, the first by name wins", () => {
    const units = [
      unit("b.service", { global: true }),
      unit("a.service", { global: true, conflicts: ["b.service"] }),
      unit("c.service", { global: true }),
    ];
    expect(globalUnitsFor(machine(A), units, schedule({})).map((u) => u.name)).toEqual([
      "a.service",
      "c.service",
    ]);
  });

  it("skips templates and inactive units", () => {
    const units = [unit("t@.service", { global: true }), unit("off.service", { global: true }, "inactive")];
    expect(globalUnitsFor(machine(A), units, schedule({}))).toEqual([]);
  });

  it("is not blocked by an inactive unit still placed on the machine", () => {
    const units = [
      unit("g.service", { global: true, conflicts: ["old.service"] }),
      unit("old.service", {}, "inactive"),
    ];
    expect(globalUnitsFor(machine(A), units, schedule({ "old.service": A }))).toHaveLength(1);
  });

  it("accepts a cluster snapshot as the placements", () => {
    const snapshot = {
      revision: 1,
      schedule: new Map([["db.service", { machineID: A, at: 0, reason: "" }]]),
    };
    const units = [unit("g.service", { global: true, conflicts: ["db.service"] }), unit("db.service")];
    expect(globalUnitsFor(machine(A), units, snapshot)).toEqual([]);
  });
});

describe("placementView", () => {
  it("holds each machine's placed units and the global units it runs", () => {
    const units = [
      unit("db.service"),
      unit("g.service", { global: true }),
      unit("gone.service", { global: true }),
    ];
    const v = placementView(units, { schedule: new Map([["db.service", { machineID: A }]]) }, [
      machine(A),
      machine(B),
    ]);
    expect([...(v.get(A)?.keys() ?? [])]).toEqual(["db.service", "g.service", "gone.service"]);
    expect([...(v.get(B)?.keys() ?? [])]).toEqual(["g.service", "gone.service"]);
  });

  it("keeps placements on machines it does not know (their agents may not have registered yet)", () => {
    const v = placementView(
      [unit("db.service")],
      { schedule: new Map([["db.service", { machineID: B }]]) },
      [],
    );
    expect(v.get(B)?.has("db.service")).toBe(true);
  });
});

describe("Replaces", () => {
  const newer = unit("new.service", { replaces: ["old*.service"] });
  const old = unit("old.service");

  it("a unit replaces the units its pattern matches", () => {
    expect(replaces(newer, old)).toBe(true);
    expect(replaces(old, newer)).toBe(false);
    expect(displacedBy(old, A, view({ [A]: [newer, old] }))).toBe("new.service");
    expect(displacedBy(newer, A, view({ [A]: [newer, old] }))).toBeUndefined();
  });

  it("ignores circular replaces", () => {
    const a = unit("a.service", { replaces: ["b.service"] });
    const b = unit("b.service", { replaces: ["a.service"] });
    expect(replaces(a, b)).toBe(false);
    expect(displacedBy(b, A, view({ [A]: [a, b] }))).toBeUndefined();
  });
});

describe("helpers", () => {
  it("matchesMachineID accepts the full or short ID", () => {
    expect(matchesMachineID(machine(A), A)).toBe(true);
    expect(matchesMachineID(machine(A), "aaaaaaaa")).toBe(true);
    expect(matchesMachineID(machine(A), "aaaaaaa")).toBe(false);
  });

  it("formatMetadata sorts keys and joins ORed values with |", () => {
    expect(formatMetadata({ region: ["us-east", "us-west"], disk: ["ssd"] })).toBe(
      "disk=ssd, region=us-east|us-west",
    );
  });
});
