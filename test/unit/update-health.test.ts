import { describe, expect, it } from "vitest";
import type { Placement, UnitRecord, UnitState } from "../../agent/model.js";
import { evaluateGate, extraChecks, inactiveScheduledUnits } from "../../agent/update/health.js";

const limits = { soakMs: 60_000, settleMs: 600_000 };
const ok = (name: string) => ({ name, ok: true });
const bad = (name: string, detail: string) => ({ name, ok: false, detail });

describe("evaluateGate", () => {
  it("starts the soak when every check passes, and passes once it has lasted", () => {
    const first = evaluateGate([ok("agent"), ok("etcd")], 0, undefined, 5_000, limits);
    expect(first).toEqual({ verdict: "wait", healthySince: 5_000, reason: "healthy; soaking 0 of 60 s" });
    expect(evaluateGate([ok("agent"), ok("etcd")], 0, 5_000, 40_000, limits).verdict).toBe("wait");
    expect(evaluateGate([ok("agent"), ok("etcd")], 0, 5_000, 65_000, limits)).toEqual({
      verdict: "pass",
      reason: "2 checks passed for 60 s",
    });
  });

  it("a failure restarts the soak instead of failing while the machine is still coming up", () => {
    const v = evaluateGate([ok("agent"), bad("etcd", "unreachable: timeout")], 0, 30_000, 50_000, limits);
    expect(v).toEqual({ verdict: "wait", reason: "etcd: unreachable: timeout" });
    expect("healthySince" in v).toBe(false);
  });

  it("fails with every failing check's reason once settle time and a soak have passed", () => {
    const v = evaluateGate(
      [bad("agent", "API answered HTTP 503"), ok("etcd"), bad("health.d/50-x", "exited 1: broken")],
      0,
      undefined,
      660_000,
      limits,
    );
    expect(v).toEqual({
      verdict: "fail",
      reason: "agent: API answered HTTP 503; health.d/50-x: exited 1: broken",
    });
  });

  it("a machine healthy at the deadline still gets its full soak", () => {
    expect(evaluateGate([ok("agent")], 0, 650_000, 670_000, limits).verdict).toBe("wait");
    expect(evaluateGate([ok("agent")], 0, 650_000, 710_000, limits).verdict).toBe("pass");
  });

  it("a zero soak passes at the first healthy round", () => {
    expect(evaluateGate([ok("agent")], 0, undefined, 1, { soakMs: 0, settleMs: 0 }).verdict).toBe("pass");
  });
});

describe("inactiveScheduledUnits", () => {
  const me = "a".repeat(32);
  const other = "b".repeat(32);
  const unit = (name: string, desiredState: UnitRecord["desiredState"]): UnitRecord => ({
    name,
    options: [],
    hash: "h",
    desiredState,
  });
  const placed = (machineID: string): Placement => ({ machineID, at: 0, reason: "" });
  const state = (name: string, machineID: string, activeState: string, subState: string): UnitState => ({
    name,
    hash: "h",
    machineID,
    loadState: "loaded",
    activeState,
    subState,
  });

  it("names launched units scheduled here that are not active, with their state", () => {
    const units = [
      unit("web.service", "launched"),
      unit("db.service", "launched"),
      unit("cron.service", "launched"),
      unit("idle.service", "loaded"),
      unit("elsewhere.service", "launched"),
    ];
    const schedule = new Map([
      ["web.service", placed(me)],
      ["db.service", placed(me)],
      ["cron.service", placed(me)],
      ["idle.service", placed(me)],
      ["elsewhere.service", placed(other)],
    ]);
    const states = [
      state("web.service", me, "active", "running"),
      state("db.service", me, "failed", "failed"),
      state("db.service", other, "active", "running"),
      state("idle.service", me, "inactive", "dead"),
    ];
    expect(inactiveScheduledUnits(me, units, schedule, states)).toEqual([
      "db.service (failed/failed)",
      "cron.service (no state)",
    ]);
  });
});

describe("extraChecks", () => {
  it("merges the directories, the first one's names hiding the later ones', sorted, no dotfiles", () => {
    expect(
      extraChecks([
        { dir: "/etc/flotilla/health.d", names: ["20-disk", ".hidden"] },
        { dir: "/usr/lib/flotilla/health.d", names: ["20-disk", "10-net", "30-app"] },
      ]),
    ).toEqual([
      "/usr/lib/flotilla/health.d/10-net",
      "/etc/flotilla/health.d/20-disk",
      "/usr/lib/flotilla/health.d/30-app",
    ]);
  });
});
