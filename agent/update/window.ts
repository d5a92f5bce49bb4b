// Reboot windows (days, local start time, length, IANA time zone) and jitter inside them, so that
// machines sharing a window do not reboot together (coreos/bugs#2610). Time zones go through
// Intl.DateTimeFormat, so DST changes are handled by the platform's tz database.

import { UpdateError } from "./errors.js";

export const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export interface RebootWindow {
  days: Weekday[];
  /** Local wall-clock time "HH:MM" in timeZone. */
  start: string;
  /** Real minutes: a window over a DST change is still this long. May cross midnight. */
  lengthMinutes: number;
  /** IANA name, e.g. "Europe/Berlin" or "UTC". */
  timeZone: string;
}

export interface WindowSpan {
  start: Date;
  end: Date;
}

const MINUTE = 60_000;
const DAY = 1440 * MINUTE;
const WEEK_MINUTES = 7 * 1440;

/** Validates a window from config or the API; throws UpdateError naming the field. */
export function checkWindow(v: unknown, where = "reboot window"): RebootWindow {
  const fail = (what: string): never => {
    throw new UpdateError("window", `${where}: ${what}`);
  };
  if (v === null || typeof v !== "object") fail("must be an object {days, start, lengthMinutes, timeZone}");
  const w = v as Partial<Record<keyof RebootWindow, unknown>>;
  if (!Array.isArray(w.days) || w.days.length === 0) fail("days must be a non-empty list of mon…sun");
  for (const d of w.days as unknown[])
    if (!WEEKDAYS.includes(d as Weekday))
      fail(`day ${JSON.stringify(d)} is not one of ${WEEKDAYS.join(", ")}`);
  const m = typeof w.start === "string" ? /^([01]\d|2[0-3]):([0-5]\d)$/.exec(w.start) : null;
  if (!m) fail(`start ${JSON.stringify(w.start)} is not HH:MM (00:00–23:59)`);
  if (
    !Number.isSafeInteger(w.lengthMinutes) ||
    (w.lengthMinutes as number) < 1 ||
    (w.lengthMinutes as number) > WEEK_MINUTES
  )
    fail(`lengthMinutes ${JSON.stringify(w.lengthMinutes)} must be an integer from 1 to ${WEEK_MINUTES}`);
  if (typeof w.timeZone !== "string") fail("timeZone must be an IANA time zone name");
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: w.timeZone as string });
  } catch {
    fail(`timeZone ${JSON.stringify(w.timeZone)} is not a known IANA time zone`);
  }
  return w as RebootWindow;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The zone's wall clock at an instant, expressed as if it were UTC (ms since the epoch). */
function wallClock(timeZone: string, ms: number): number {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, f);
  }
  const p: Record<string, number> = {};
  for (const { type, value } of f.formatToParts(new Date(ms)))
    if (type !== "literal") p[type] = Number(value);
  const { year, month, day, hour, minute, second } = p as Record<string, number>;
  return Date.UTC(year as number, (month as number) - 1, day, hour, minute, second);
}

const offsetAt = (timeZone: string, ms: number) => wallClock(timeZone, ms) - Math.floor(ms / 1000) * 1000;

/**
 * The instant a zone's clock shows `wall`. A time skipped by a DST change moves forward by the gap
 * (02:30 on a spring-forward night is 03:30); a time that occurs twice is its first occurrence.
 */
function zonedInstant(timeZone: string, wall: number): number {
  // Real zones change offset at most once within ±1 day, so the offsets a day either side are the
  // two candidates.
  const before = offsetAt(timeZone, wall - DAY);
  const after = offsetAt(timeZone, wall + DAY);
  const valid = [wall - before, wall - after].filter((t) => wallClock(timeZone, t) === wall);
  return valid.length ? Math.min(...valid) : wall - before;
}

/** The window containing `now`, or else the next one to start. */
export function nextWindow(w: RebootWindow, now: Date): WindowSpan {
  const [hh, mm] = w.start.split(":").map(Number) as [number, number];
  const today = new Date(wallClock(w.timeZone, now.getTime()));
  const length = w.lengthMinutes * MINUTE;
  // Start early enough to find a long window that began on an earlier day and is still open.
  const back = Math.ceil(w.lengthMinutes / 1440) + 1;
  let best: WindowSpan | undefined;
  for (let d = -back; d <= 8; d++) {
    const wall = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() + d, hh, mm);
    if (!w.days.includes(WEEKDAYS[new Date(wall).getUTCDay()] as Weekday)) continue;
    const start = zonedInstant(w.timeZone, wall);
    if (start + length <= now.getTime()) continue;
    if (!best || start < best.start.getTime())
      best = { start: new Date(start), end: new Date(start + length) };
  }
  // Every weekday is searched over the 8 days ahead, and days is non-empty.
  return best as WindowSpan;
}

export function inWindow(w: RebootWindow, now: Date): boolean {
  return nextWindow(w, now).start <= now;
}

/**
 * A uniformly random moment in [max(now, start), end − margin). The margin (a tenth of the window,
 * at most 5 minutes) leaves time for the drain and the reboot itself to happen inside the window.
 * Past that point, now.
 */
export function jitteredStart(window: WindowSpan, now: Date, random: () => number): Date {
  const end = window.end.getTime();
  const margin = Math.min(5 * MINUTE, (end - window.start.getTime()) / 10);
  const lo = Math.max(now.getTime(), window.start.getTime());
  const hi = end - margin;
  if (hi <= lo) return new Date(lo);
  return new Date(lo + Math.floor(random() * (hi - lo)));
}
