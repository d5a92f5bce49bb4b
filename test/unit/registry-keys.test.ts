import { describe, expect, it } from "vitest";
import { Keys } from "../../agent/registry/keys.js";
import { ClusterView } from "../../agent/registry/view.js";

const kv = (key: string, value: unknown) => ({
  key,
  value: typeof value === "string" ? value : JSON.stringify(value),
});

describe("etcd key layout", () => {
  const keys = new Keys("/t/");

  it("classifies keys into families", () => {
    expect(keys.classify("/t/units/a.service")).toEqual({ family: "units", rest: "a.service" });
    expect(keys.classify("/t/states/a@1.service/m1")).toEqual({ family: "states", rest: "a@1.service/m1" });
    expect(keys.classify("/t/engine/leader")).toBeUndefined();
    expect(keys.parseStateKey(keys.state("a@1.service", "m1"))).toEqual({
      name: "a@1.service",
      machineID: "m1",
    });
  });

  it("builds a snapshot, merging dynamic metadata and reporting corrupt values", () => {
    const view = new ClusterView(keys);
    view.load(
      [
        kv("/t/units/b.service", { name: "b.service", options: [], hash: "h", desiredState: "launched" }),
        kv("/t/units/a.service", { name: "a.service", options: [], hash: "h", desiredState: "loaded" }),
        kv("/t/machines/m2", { id: "m2", publicIP: "10.0.0.2", metadata: { region: "eu" }, version: "x" }),
        kv("/t/metadata/m2/region", "us"),
        kv("/t/metadata/m2/disk", "ssd"),
        kv("/t/schedule/a.service", { machineID: "m2", at: 1, reason: "r" }),
        kv("/t/schedule/broken.service", "{not json"),
        kv("/t/engine/leader", "m2"),
      ],
      42,
    );
    const snap = view.snapshot();
    expect(snap.revision).toBe(42);
    expect(snap.units.map((u) => u.name)).toEqual(["a.service", "b.service"]);
    expect(snap.machines[0]?.metadata).toEqual({ region: "us", disk: "ssd" });
    expect(snap.schedule.get("a.service")?.machineID).toBe("m2");
    expect(view.quarantine.list().map((q) => q.key)).toEqual(["/t/schedule/broken.service"]);
  });
});
