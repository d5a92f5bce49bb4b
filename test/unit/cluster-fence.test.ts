import { describe, expect, it } from "vitest";
import {
  FenceDeadline,
  fenceTimingProblem,
  formatDeadline,
  isSingleInstance,
  parseUptime,
  unitsToFence,
} from "../../agent/cluster/fence.js";
import type { UnitRecord } from "../../agent/model.js";
import { parseUnitFile } from "../../agent/unit/index.js";

const timing = { ttlMs: 5000, marginMs: 1000 };

function record(name: string, xfleet = ""): UnitRecord {
  const text = `[Service]\nExecStart=/bin/sleep infinity\n${xfleet ? `\n[X-Fleet]\n${xfleet}\n` : ""}`;
  return { name, options: parseUnitFile(text, name), hash: "h", desiredState: "launched" };
}

describe("FenceDeadline", () => {
  it("is unarmed and forbids starts until the first renewal", () => {
    const f = new FenceDeadline(timing);
    expect(f.deadline).toBeUndefined();
    expect(f.mayStart(0, 1)).toBe(false);
    expect(f.observe(1_000_000)).toBe(0);
  });

  it("puts the deadline at the send time of the renewal plus TTL less the margin, not its arrival", () => {
    const f = new FenceDeadline(timing);
    // Sent at 10 s, answered at 12.5 s (a slow round trip): the lease may expire at 15 s at etcd.
    f.renewed(10_000, 12_500, 1);
    expect(f.deadline).toBe(14_000);
    expect(f.mayStart(13_999, 1)).toBe(true);
    expect(f.mayStart(14_000, 1)).toBe(false);
  });

  it("only moves forward when answers arrive out of order", () => {
    const f = new FenceDeadline(timing);
    f.renewed(11_000, 11_100, 1);
    f.renewed(10_000, 11_200, 1);
    expect(f.deadline).toBe(15_000);
  });

  it("counts each passed deadline once, including one seen only by a late renewal", () => {
    const f = new FenceDeadline(timing);
    f.renewed(0, 10, 1);
    expect(f.observe(3_999)).toBe(0);
    expect(f.observe(4_000)).toBe(1);
    expect(f.observe(9_000)).toBe(1);
    // A frozen agent: nothing observed the deadline until the next renewal arrived.
    f.renewed(9_000, 9_050, 1);
    expect(f.deadline).toBe(13_000);
    expect(f.observe(9_100)).toBe(1);
    f.renewed(20_000, 20_010, 1);
    expect(f.observe(20_010)).toBe(2);
  });

  it("fences at once when the lease is lost, and a later grant re-arms it", () => {
    const f = new FenceDeadline(timing);
    f.renewed(0, 10, 1);
    f.lost(1_000);
    expect(f.deadline).toBe(1_000);
    expect(f.mayStart(1_000, 1)).toBe(false);
    expect(f.observe(1_000)).toBe(1);
    f.renewed(2_000, 2_050, 1);
    expect(f.mayStart(2_050, 1)).toBe(true);
  });
});

describe("FenceDeadline after a lapse", () => {
  it("lets starts through only from a view at least as recent as the confirmation that lifted the fence", () => {
    const f = new FenceDeadline(timing);
    f.renewed(0, 10, 100);
    expect(f.mayStart(10, 100)).toBe(true);
    expect(f.mayStart(10, 99)).toBe(false);
    // Renewals while armed do not raise the bar: a busy registry never holds starts back.
    f.renewed(1_000, 1_010, 150);
    expect(f.mayStart(1_010, 100)).toBe(true);
    // Cut off past the deadline, then confirmed again at revision 300.
    f.renewed(20_000, 20_050, 300);
    expect(f.mayStart(20_050, 299)).toBe(false);
    expect(f.mayStart(20_050, 300)).toBe(true);
  });
});

describe("fenceTimingProblem", () => {
  it("accepts a margin below half the TTL and refuses one that would fence between renewals", () => {
    expect(fenceTimingProblem(timing)).toBeUndefined();
    expect(fenceTimingProblem({ ttlMs: 5000, marginMs: 2499 })).toBeUndefined();
    expect(fenceTimingProblem({ ttlMs: 5000, marginMs: 2500 })).toBe(
      "fence-margin-ms (2500) must be less than half the lease TTL (5000 ms)",
    );
    expect(fenceTimingProblem({ ttlMs: 5000, marginMs: 0 })).toBe("fence-margin-ms must be positive, got 0");
  });
});

describe("units to fence", () => {
  it("are the loaded SingleInstance units, sorted; unknown and ordinary units are left alone", () => {
    const records = new Map(
      [
        record("b.service", "SingleInstance=true"),
        record("a.service", "SingleInstance=yes"),
        record("c.service"),
      ].map((r) => [r.name, r]),
    );
    expect(unitsToFence(["b.service", "c.service", "a.service", "gone.service"], records)).toEqual([
      "a.service",
      "b.service",
    ]);
    expect(isSingleInstance(record("x.service", "SingleInstance=false"))).toBe(false);
  });
});

describe("clock and file formats", () => {
  it("reads /proc/uptime in milliseconds and writes deadlines in whole centiseconds, rounded down", () => {
    expect(parseUptime("12345.67 4567.89\n")).toBe(12_345_670);
    expect(() => parseUptime("garbage")).toThrow(/unexpected \/proc\/uptime content/);
    expect(formatDeadline(12_345_679)).toBe("1234567\n");
    expect(formatDeadline(-5)).toBe("0\n");
  });
});
