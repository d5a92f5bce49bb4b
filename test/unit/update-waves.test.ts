import { describe, expect, it } from "vitest";
import { eligibleAt, parseWaves, wavePosition } from "../../agent/update/waves.js";

const ids = Array.from({ length: 1000 }, (_, i) => `${i.toString(16).padStart(8, "0")}${"5".repeat(24)}`);
const published = "2025-03-01T10:00:00.000Z";
const waves = [
  { percent: 10, afterSeconds: 0 },
  { percent: 50, afterSeconds: 3600 },
  { percent: 100, afterSeconds: 7200 },
];

describe("wave position", () => {
  it("is stable for a machine and a version, in [0,1), and changes with the version", () => {
    const p = wavePosition(ids[0] as string, "0.2.0");
    expect(wavePosition(ids[0] as string, "0.2.0")).toBe(p);
    expect(p).toBeGreaterThanOrEqual(0);
    expect(p).toBeLessThan(1);
    expect(wavePosition(ids[0] as string, "0.3.0")).not.toBe(p);
  });

  it("is roughly uniform over 1000 machine ids (each tenth holds 100 ± 40)", () => {
    const buckets = new Array<number>(10).fill(0);
    for (const id of ids) {
      const b = Math.floor(wavePosition(id, "0.2.0") * 10);
      buckets[b] = (buckets[b] as number) + 1;
    }
    for (const n of buckets) expect(Math.abs(n - 100)).toBeLessThan(40);
  });
});

describe("eligibility", () => {
  const m = { version: "0.2.0", publishedAt: published, waves };
  const at = (id: string) => eligibleAt(m, id).getTime() - Date.parse(published);

  it("each machine gets the start of the first wave covering its position; shares match the waves", () => {
    const offsets = ids.map(at);
    for (const o of offsets) expect([0, 3_600_000, 7_200_000]).toContain(o);
    const share = (t: number) => offsets.filter((o) => o <= t).length / ids.length;
    expect(share(0)).toBeCloseTo(0.1, 1);
    expect(share(3_600_000)).toBeCloseTo(0.5, 1);
    expect(share(7_200_000)).toBe(1);
  });

  it("is monotonic: a machine eligible at t is eligible at every later time, and lower positions go first", () => {
    const sorted = [...ids].sort((a, b) => wavePosition(a, "0.2.0") - wavePosition(b, "0.2.0"));
    const offsets = sorted.map(at);
    for (let i = 1; i < offsets.length; i++)
      expect(offsets[i]).toBeGreaterThanOrEqual(offsets[i - 1] as number);
  });

  it("without waves everyone is eligible at publication", () => {
    expect(eligibleAt({ version: "0.2.0", publishedAt: published }, ids[3] as string).toISOString()).toBe(
      published,
    );
  });
});

describe("waves spec (scripts/release --waves)", () => {
  it("parses PERCENT:DELAY with s/m/h/d suffixes", () => {
    expect(parseWaves("10:0,50:3600,100:7200")).toEqual(waves);
    expect(parseWaves("1:0, 25:30m,100:1d")).toEqual([
      { percent: 1, afterSeconds: 0 },
      { percent: 25, afterSeconds: 1800 },
      { percent: 100, afterSeconds: 86400 },
    ]);
  });

  it("says what is wrong with a bad spec", () => {
    expect(() => parseWaves("10:0,50")).toThrow(
      'waves "10:0,50": "50" is not PERCENT:DELAY (e.g. 10:0,50:1h,100:2d)',
    );
    expect(() => parseWaves("10:0,50:1w")).toThrow(/"50:1w" is not PERCENT:DELAY/);
    expect(() => parseWaves("10:0,50:60")).toThrow("the last wave must reach 100%, not 50%");
    expect(() => parseWaves("50:0,10:60,100:120")).toThrow(
      "wave 2: percent 10 does not exceed the previous wave's 50",
    );
    expect(() => parseWaves("10:600,100:60")).toThrow(
      "wave 2: starts (60 s) before the previous wave (600 s)",
    );
    expect(() => parseWaves("0:0,100:60")).toThrow("wave 1: percent must be in (0, 100], got 0");
    expect(() => parseWaves("10:0,150:60")).toThrow("wave 2: percent must be in (0, 100], got 150");
  });
});
