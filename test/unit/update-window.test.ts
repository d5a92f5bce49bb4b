import { describe, expect, it } from "vitest";
import {
  checkWindow,
  inWindow,
  jitteredStart,
  nextWindow,
  type RebootWindow,
} from "../../agent/update/window.js";

const iso = (s: { start: Date; end: Date }) => [s.start.toISOString(), s.end.toISOString()];
const utc = (days: RebootWindow["days"], start: string, lengthMinutes: number): RebootWindow => ({
  days,
  start,
  lengthMinutes,
  timeZone: "UTC",
});

describe("reboot windows", () => {
  // 2025-03-05 is a Wednesday.
  it("finds the next window on an allowed day", () => {
    const w = utc(["sat", "sun"], "02:00", 60);
    expect(iso(nextWindow(w, new Date("2025-03-05T12:00:00Z")))).toEqual([
      "2025-03-08T02:00:00.000Z",
      "2025-03-08T03:00:00.000Z",
    ]);
    expect(inWindow(w, new Date("2025-03-05T12:00:00Z"))).toBe(false);
  });

  it("returns the current window when inside it, the next one once it ended", () => {
    const w = utc(["wed"], "11:30", 60);
    expect(iso(nextWindow(w, new Date("2025-03-05T12:00:00Z")))[0]).toBe("2025-03-05T11:30:00.000Z");
    expect(inWindow(w, new Date("2025-03-05T12:29:59Z"))).toBe(true);
    expect(inWindow(w, new Date("2025-03-05T12:30:00Z"))).toBe(false);
    expect(iso(nextWindow(w, new Date("2025-03-05T12:30:00Z")))[0]).toBe("2025-03-12T11:30:00.000Z");
  });

  it("a window crossing midnight is still open after midnight, on the next day", () => {
    const w = utc(["tue"], "23:00", 120);
    const now = new Date("2025-03-05T00:30:00Z"); // Wednesday
    expect(inWindow(w, now)).toBe(true);
    expect(iso(nextWindow(w, now))).toEqual(["2025-03-04T23:00:00.000Z", "2025-03-05T01:00:00.000Z"]);
    expect(inWindow(w, new Date("2025-03-05T01:00:00Z"))).toBe(false);
  });

  it("a multi-day window started days ago", () => {
    const w = utc(["mon"], "00:00", 3 * 1440);
    expect(inWindow(w, new Date("2025-03-05T23:00:00Z"))).toBe(true);
    expect(inWindow(w, new Date("2025-03-06T00:00:00Z"))).toBe(false);
  });

  it("uses the window's time zone: local days and times", () => {
    const w: RebootWindow = {
      days: ["thu"],
      start: "01:00",
      lengthMinutes: 30,
      timeZone: "America/New_York",
    };
    // Wednesday 22:00 in New York is already Thursday in UTC: the window is Thursday New York time.
    expect(iso(nextWindow(w, new Date("2025-03-06T03:00:00Z")))[0]).toBe("2025-03-06T06:00:00.000Z");
    const tokyo: RebootWindow = { days: ["wed"], start: "08:00", lengthMinutes: 60, timeZone: "Asia/Tokyo" };
    expect(iso(nextWindow(tokyo, new Date("2025-03-04T00:00:00Z")))[0]).toBe("2025-03-04T23:00:00.000Z");
  });

  it("follows DST: the same local time maps to different UTC instants before and after the change", () => {
    // Europe/Berlin springs forward on 2025-03-30 (02:00 → 03:00) and falls back on 2025-10-26.
    const w: RebootWindow = {
      days: ["sat", "sun"],
      start: "04:00",
      lengthMinutes: 60,
      timeZone: "Europe/Berlin",
    };
    expect(iso(nextWindow(w, new Date("2025-03-28T12:00:00Z")))[0]).toBe("2025-03-29T03:00:00.000Z");
    expect(iso(nextWindow(w, new Date("2025-03-29T12:00:00Z")))[0]).toBe("2025-03-30T02:00:00.000Z");
    expect(iso(nextWindow(w, new Date("2025-10-25T12:00:00Z")))[0]).toBe("2025-10-26T03:00:00.000Z");
  });

  it("a start time skipped by DST moves forward by the gap; a repeated one is its first occurrence", () => {
    const gap: RebootWindow = { days: ["sun"], start: "02:30", lengthMinutes: 60, timeZone: "Europe/Berlin" };
    // 02:30 does not exist on 2025-03-30: the window opens at 03:30 CEST = 01:30 UTC.
    expect(iso(nextWindow(gap, new Date("2025-03-29T12:00:00Z")))).toEqual([
      "2025-03-30T01:30:00.000Z",
      "2025-03-30T02:30:00.000Z",
    ]);
    // 02:30 happens twice on 2025-10-26: first at CEST (00:30 UTC).
    expect(iso(nextWindow(gap, new Date("2025-10-25T12:00:00Z")))[0]).toBe("2025-10-26T00:30:00.000Z");
  });

  it("the length is real time across a DST change", () => {
    const w: RebootWindow = { days: ["sun"], start: "01:00", lengthMinutes: 180, timeZone: "Europe/Berlin" };
    const s = nextWindow(w, new Date("2025-03-29T12:00:00Z"));
    expect(s.end.getTime() - s.start.getTime()).toBe(180 * 60_000);
  });
});

describe("jitter", () => {
  const span = { start: new Date("2025-03-08T02:00:00Z"), end: new Date("2025-03-08T03:00:00Z") };

  it("stays inside the window, before its end margin, for any random value", () => {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const t = jitteredStart(span, new Date("2025-03-01T00:00:00Z"), () => r).getTime();
      expect(t).toBeGreaterThanOrEqual(span.start.getTime());
      expect(t).toBeLessThan(span.end.getTime() - 5 * 60_000);
    }
    expect(jitteredStart(span, new Date("2025-03-01T00:00:00Z"), () => 0)).toEqual(span.start);
  });

  it("never before now when the window is already open", () => {
    const now = new Date("2025-03-08T02:40:00Z");
    for (const r of [0, 0.5, 0.999]) {
      const t = jitteredStart(span, now, () => r).getTime();
      expect(t).toBeGreaterThanOrEqual(now.getTime());
      expect(t).toBeLessThan(span.end.getTime() - 5 * 60_000);
    }
  });

  it("spreads machines across the window (Math.random over 1000 draws)", () => {
    const now = new Date("2025-03-01T00:00:00Z");
    const minutes = Array.from(
      { length: 1000 },
      () => (jitteredStart(span, now, Math.random).getTime() - span.start.getTime()) / 60_000,
    );
    expect(Math.min(...minutes)).toBeLessThan(5);
    expect(Math.max(...minutes)).toBeGreaterThan(50);
    expect(Math.max(...minutes)).toBeLessThan(55);
  });

  it("past the margin: now", () => {
    const now = new Date("2025-03-08T02:58:00Z");
    expect(jitteredStart(span, now, () => 0.5)).toEqual(now);
  });
});

describe("window validation", () => {
  const ok = { days: ["mon"], start: "23:30", lengthMinutes: 90, timeZone: "Europe/Berlin" };
  it("accepts a valid window and names the bad field otherwise", () => {
    expect(checkWindow(ok)).toEqual(ok);
    expect(() => checkWindow({ ...ok, days: ["monday"] })).toThrow(
      'reboot window: day "monday" is not one of sun, mon',
    );
    expect(() => checkWindow({ ...ok, days: [] })).toThrow("days must be a non-empty list");
    expect(() => checkWindow({ ...ok, start: "24:00" })).toThrow('start "24:00" is not HH:MM');
    expect(() => checkWindow({ ...ok, lengthMinutes: 0 })).toThrow(
      "lengthMinutes 0 must be an integer from 1 to 10080",
    );
    expect(() => checkWindow({ ...ok, timeZone: "Mars/Olympus" }, "group web window")).toThrow(
      'group web window: timeZone "Mars/Olympus" is not a known IANA time zone',
    );
    expect(() => checkWindow("sat 02:00")).toThrow(/must be an object/);
  });
});
