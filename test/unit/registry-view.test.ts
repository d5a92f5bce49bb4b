import { describe, expect, it } from "vitest";
import type { Logger } from "../../agent/log.js";
import { Keys } from "../../agent/registry/keys.js";
import { Quarantine } from "../../agent/registry/quarantine.js";
import { ClusterView } from "../../agent/registry/view.js";
import { route } from "../../agent/routing.js";

const keys = new Keys("/t/");
const unit = (name: string) => JSON.stringify({ name, options: [], hash: "h", desiredState: "launched" });
const state = (name: string, machineID: string) =>
  JSON.stringify({
    name,
    machineID,
    hash: "h",
    loadState: "loaded",
    activeState: "active",
    subState: "running",
  });
const placed = (machineID: string) => JSON.stringify({ machineID, at: 1, reason: "r" });

describe("the cluster view", () => {
  it("applies puts and deletes in order and indexes units, placements and states", () => {
    const view = new ClusterView(keys);
    view.load([{ key: keys.unit("a.service"), value: unit("a.service") }], 10);
    view.apply([
      { type: "put", key: keys.unit("b.service"), value: unit("b.service"), revision: 11 },
      { type: "put", key: keys.schedule("b.service"), value: placed("m1"), revision: 12 },
      { type: "put", key: keys.state("b.service", "m2"), value: state("b.service", "m2"), revision: 13 },
      { type: "put", key: keys.state("b.service", "m1"), value: state("b.service", "m1"), revision: 13 },
      { type: "delete", key: keys.unit("a.service"), revision: 14 },
    ]);
    expect(view.revision).toBe(14);
    expect(view.unit("a.service")).toBeUndefined();
    expect(view.placement("b.service")?.machineID).toBe("m1");
    expect(view.statesOf("b.service").map((s) => s.machineID)).toEqual(["m1", "m2"]);
    const snap = view.snapshot();
    expect(snap.units.map((u) => u.name)).toEqual(["b.service"]);
    expect(snap.states.map((s) => s.machineID)).toEqual(["m1", "m2"]);
    view.apply([{ type: "delete", key: keys.state("b.service", "m2"), revision: 15 }]);
    expect(view.statesOf("b.service")).toHaveLength(1);
  });

  it("hands out the same snapshot until something it keeps changes", () => {
    const view = new ClusterView(keys);
    view.load([{ key: keys.unit("a.service"), value: unit("a.service") }], 1);
    const first = view.snapshot();
    expect(
      view.apply([{ type: "put", key: keys.service("web", "m1", "a.service"), value: "{}", revision: 2 }]),
    ).toBe(false);
    expect(view.snapshot()).toBe(first);
    view.apply([{ type: "put", key: keys.unit("b.service"), value: unit("b.service"), revision: 3 }]);
    const second = view.snapshot();
    expect(second).not.toBe(first);
    expect(first.units).toHaveLength(1);
    expect(second.units).toHaveLength(2);
  });

  it("quarantines values of the wrong shape with a reason and drops what the key held", () => {
    const view = new ClusterView(keys);
    view.load(
      [
        { key: keys.unit("a.service"), value: unit("a.service") },
        { key: keys.unit("b.service"), value: unit("not-b.service"), revision: 7 },
        { key: keys.state("a.service", "m1"), value: state("a.service", "m2") },
        { key: keys.schedule("a.service"), value: '{"machineID": 5}' },
      ],
      1,
    );
    expect(
      view.quarantine.list().map(({ key, family, reason, revision }) => ({ key, family, reason, revision })),
    ).toEqual([
      {
        key: keys.schedule("a.service"),
        family: "schedule",
        reason: "field machineID: want a string, got number 5",
        revision: 0,
      },
      {
        key: keys.state("a.service", "m1"),
        family: "states",
        reason: "fields name and machineID differ from the key's",
        revision: 0,
      },
      {
        key: keys.unit("b.service"),
        family: "units",
        reason: 'field name: "not-b.service" differs from the key\'s',
        revision: 7,
      },
    ]);
    expect(view.snapshot().units.map((u) => u.name)).toEqual(["a.service"]);
    view.apply([{ type: "put", key: keys.unit("a.service"), value: "{oops", revision: 2 }]);
    expect(view.unit("a.service")).toBeUndefined();
    expect(view.quarantine.list().find((q) => q.key === keys.unit("a.service"))?.reason).toBe(
      'not JSON: "{oops" (5 characters)',
    );
    view.apply([{ type: "delete", key: keys.unit("b.service"), revision: 3 }]);
    expect(view.quarantine.list().map((q) => q.key)).not.toContain(keys.unit("b.service"));
    view.apply([{ type: "put", key: keys.unit("a.service"), value: unit("a.service"), revision: 4 }]);
    expect(view.unit("a.service")?.name).toBe("a.service");
    expect(view.quarantine.list().map((q) => q.key)).not.toContain(keys.unit("a.service"));
  });

  it("says what is wrong for null, wrong types and garbage in each family", () => {
    const view = new ClusterView(keys);
    const put = (key: string, value: string) => {
      view.apply([{ type: "put", key, value, revision: view.revision + 1 }]);
      return view.quarantine.list().find((q) => q.key === key)?.reason;
    };
    expect(put(keys.unit("n.service"), "null")).toBe("want a JSON object, got null");
    expect(
      put(keys.unit("s.service"), JSON.stringify({ ...JSON.parse(unit("s.service")), desiredState: 7 })),
    ).toBe("field desiredState: want a string, got number 7");
    expect(
      put(keys.unit("d.service"), JSON.stringify({ ...JSON.parse(unit("d.service")), desiredState: "up" })),
    ).toBe('field desiredState: want one of inactive, loaded, launched, got string "up"');
    expect(put(keys.schedule("x.service"), "[1]")).toBe("want a JSON object, got an array");
    expect(put(keys.pending("x.service"), '{"reason":"r","at":"now"}')).toBe(
      'field at: want a number, got string "now"',
    );
    expect(put(keys.failures("x.service"), '{"hash":"h","moves":[{"from":1,"at":2}]}')).toBe(
      "field moves[0].from: want a string, got number 1",
    );
    expect(put(keys.machine("m9"), '{"id":"m9","publicIP":"1.2.3.4","metadata":{"a":1}}')).toBe(
      "field metadata.a: want a string, got number 1",
    );
    expect(put(keys.metadata("m9", "disk"), "\uFFFD\uFFFDz")).toBe(
      "metadata value: not UTF-8 text (control characters or invalid bytes)",
    );
    expect(put(keys.state("x.service", "m9"), "\u0000\u0001garbage")).toMatch(/^not JSON: /);
    expect(view.snapshot().units).toEqual([]);
  });

  it("logs a quarantined value once per key and revision, and forgets keys a relist no longer finds bad", () => {
    const logged: string[] = [];
    const log = { error: (o: { key: string }) => logged.push(o.key), info: () => {} } as unknown as Logger;
    const view = new ClusterView(keys, new Quarantine(log));
    const bad = { key: keys.unit("a.service"), value: "null", revision: 5 };
    view.load([bad], 5);
    view.load([bad], 6);
    view.apply([{ type: "put", ...bad }]);
    expect(logged).toEqual([keys.unit("a.service")]);
    view.apply([{ type: "put", ...bad, revision: 7 }]);
    expect(logged).toHaveLength(2);
    view.load([], 8);
    expect(view.quarantine.size).toBe(0);
  });

  it("merges dynamic metadata over a machine's own", () => {
    const view = new ClusterView(keys);
    view.load(
      [
        { key: keys.machine("m1"), value: JSON.stringify({ id: "m1", publicIP: "", metadata: { az: "a" } }) },
        { key: keys.metadata("m1", "az"), value: "b" },
        { key: keys.metadata("m1", "disk"), value: "ssd" },
      ],
      1,
    );
    expect(view.machineList()[0]?.metadata).toEqual({ az: "b", disk: "ssd" });
    view.apply([{ type: "delete", key: keys.metadata("m1", "az"), revision: 2 }]);
    expect(view.snapshot().machines[0]?.metadata).toEqual({ az: "a", disk: "ssd" });
  });
});

describe("watch routing", () => {
  const ctx = (placedBefore: Record<string, string> = {}) => ({
    keys,
    machineID: "me",
    updateGroup: "default",
    placedBefore: (u: string) => placedBefore[u],
  });
  const put = (key: string, value = "{}") => ({ type: "put" as const, key, value, revision: 1 });
  const del = (key: string) => ({ type: "delete" as const, key, revision: 1 });

  it("wakes this machine's reconciler only for placements to or from it", () => {
    expect(route(ctx(), [put(keys.schedule("a.service"), placed("other"))])).toEqual({
      engine: true,
      agent: false,
      updateCheck: false,
      rebootGroup: false,
    });
    expect(route(ctx(), [put(keys.schedule("a.service"), placed("me"))]).agent).toBe(true);
    expect(route(ctx({ "a.service": "me" }), [put(keys.schedule("a.service"), placed("other"))]).agent).toBe(
      true,
    );
    expect(route(ctx({ "a.service": "me" }), [del(keys.schedule("a.service"))]).agent).toBe(true);
    expect(route(ctx({ "a.service": "x" }), [del(keys.schedule("a.service"))]).agent).toBe(false);
  });

  it("wakes the engine for units, placements, machines, states and the leader key, not for its own records", () => {
    for (const key of [keys.unit("a"), keys.machine("m"), keys.state("a", "m"), keys.engineLeader()])
      expect(route(ctx(), [put(key)]).engine).toBe(true);
    for (const key of [
      keys.pending("a"),
      keys.failures("a"),
      keys.service("web", "m", "a"),
      keys.updateStatus("m"),
    ])
      expect(route(ctx(), [put(key)])).toEqual({
        engine: false,
        agent: false,
        updateCheck: false,
        rebootGroup: false,
      });
    expect(route(ctx(), [put(keys.unit("a"))]).agent).toBe(true);
    expect(route(ctx(), [put(keys.metadata("m", "k"))]).agent).toBe(true);
    expect(route(ctx(), [put(keys.state("a", "me"))]).agent).toBe(false);
  });

  it("passes update requests for this machine and its reboot group to the updater", () => {
    expect(route(ctx(), [put(keys.updateCheck("me"))]).updateCheck).toBe(true);
    expect(route(ctx(), [put(keys.updateCheck("all"))]).updateCheck).toBe(true);
    expect(route(ctx(), [put(keys.updateCheck("other"))]).updateCheck).toBe(false);
    expect(route(ctx(), [put(keys.updateHolder("default", "other"))]).rebootGroup).toBe(true);
    expect(route(ctx(), [put(keys.updateGroupConfig("default"))]).rebootGroup).toBe(true);
    expect(route(ctx(), [put(keys.updateHolder("default", "me"))]).rebootGroup).toBe(false);
    expect(route(ctx(), [put(keys.updateGroupSeq("default"))]).rebootGroup).toBe(false);
    expect(route(ctx(), [put(keys.updateHolder("other-group", "x"))]).rebootGroup).toBe(false);
  });
});
