import { describe, expect, it } from "vitest";
import { type CurrentUnit, type DesiredUnit, plan } from "../../agent/reconcile/plan.js";

const want = (name: string, state: DesiredUnit["state"] = "launched", hash = "h1"): DesiredUnit => ({
  name,
  hash,
  state,
});

const have = (name: string, over: Partial<CurrentUnit> = {}): CurrentUnit => ({
  name,
  hash: "h1",
  launched: true,
  activeState: "active",
  ...over,
});

/** `kind unit: reason` lines, which is how the reconciler logs them. */
const lines = (desired: DesiredUnit[], current: CurrentUnit[]) =>
  plan(desired, current).map((t) => `${t.kind} ${t.unit}: ${t.reason}`);

describe("plan", () => {
  it("does nothing when the machine already matches", () => {
    expect(
      plan(
        [want("a.service"), want("b.service", "loaded")],
        [have("a.service"), have("b.service", { launched: false, activeState: "inactive" })],
      ),
    ).toEqual([]);
  });

  describe("units no longer scheduled here", () => {
    it("stops then unloads a launched unit", () => {
      expect(lines([], [have("a.service")])).toEqual([
        "stop a.service: no longer scheduled here",
        "unload a.service: no longer scheduled here",
      ]);
    });

    it("stops a unit that is active though we never started it", () => {
      expect(lines([], [have("a.service", { launched: false, activeState: "activating" })])).toEqual([
        "stop a.service: no longer scheduled here",
        "unload a.service: no longer scheduled here",
      ]);
    });

    it("only unloads a unit that is neither launched nor running", () => {
      expect(lines([], [have("a.service", { launched: false, activeState: "inactive" })])).toEqual([
        "unload a.service: no longer scheduled here",
      ]);
    });
  });

  describe("units newly scheduled here", () => {
    it("loads (with the hash) and starts a launched unit", () => {
      expect(plan([want("a.service", "launched", "abc")], [])).toEqual([
        { kind: "load", unit: "a.service", hash: "abc", reason: "scheduled here" },
        { kind: "start", unit: "a.service", reason: "scheduled here" },
      ]);
    });

    it("only loads a unit whose desired state is loaded", () => {
      expect(lines([want("a.service", "loaded")], [])).toEqual(["load a.service: scheduled here"]);
    });
  });

  describe("unit file changed", () => {
    it("stops, unloads, loads the new version and starts it again", () => {
      expect(plan([want("a.service", "launched", "new")], [have("a.service", { hash: "old" })])).toEqual([
        { kind: "stop", unit: "a.service", reason: "unit file changed" },
        { kind: "unload", unit: "a.service", reason: "unit file changed" },
        { kind: "load", unit: "a.service", hash: "new", reason: "unit file changed" },
        { kind: "start", unit: "a.service", reason: "unit file changed" },
      ]);
    });

    it("does not stop a unit that was not running, nor start one that should only be loaded", () => {
      const current = [have("a.service", { hash: "old", launched: false, activeState: "inactive" })];
      expect(lines([want("a.service", "loaded", "new")], current)).toEqual([
        "unload a.service: unit file changed",
        "load a.service: unit file changed",
      ]);
    });

    it("treats an unknown loaded version as changed", () => {
      expect(
        lines([want("a.service", "loaded")], [have("a.service", { hash: undefined, launched: false })]),
      ).toEqual([
        "stop a.service: unit file changed",
        "unload a.service: unit file changed",
        "load a.service: unit file changed",
      ]);
    });
  });

  describe("desired state changes", () => {
    it("stops a launched unit whose desired state is now loaded", () => {
      expect(lines([want("a.service", "loaded")], [have("a.service")])).toEqual([
        "stop a.service: desired state is loaded",
      ]);
    });

    it("starts a loaded unit whose desired state is now launched", () => {
      expect(
        lines([want("a.service")], [have("a.service", { launched: false, activeState: "inactive" })]),
      ).toEqual(["start a.service: desired state is launched"]);
    });
  });

  describe("launched units that stopped on their own", () => {
    it("does not restart a failed unit: the engine moves it", () => {
      expect(plan([want("a.service")], [have("a.service", { activeState: "failed" })])).toEqual([]);
    });

    it("does not restart a unit that exited", () => {
      expect(plan([want("a.service")], [have("a.service", { activeState: "inactive" })])).toEqual([]);
    });
  });

  it("orders tasks by unit name, and stop → unload → load → start within a unit", () => {
    const tasks = plan(
      [want("c.service"), want("a.service", "launched", "new")],
      [have("b.service"), have("a.service", { hash: "old" })],
    );
    expect(tasks.map((t) => `${t.kind} ${t.unit}`)).toEqual([
      "stop a.service",
      "unload a.service",
      "load a.service",
      "start a.service",
      "stop b.service",
      "unload b.service",
      "load c.service",
      "start c.service",
    ]);
  });
});
