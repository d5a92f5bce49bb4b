// Fencing of SingleInstance units (docs/architecture.md, "Fencing"). Pure: the deadline arithmetic
// and which units to fence. The adapter (fence-guard.ts) reads the clock, writes the deadline and the
// unit list where the guard reads them, and starts the guard.
//
// etcd expires a lease TTL after the last keep-alive it received, and it received each one after
// this machine sent it. So the lease lives at least until (send time of the last keep-alive etcd
// answered) + TTL. A machine that has heard nothing since must have its SingleInstance units dead
// by then, less a margin for the kill itself; the engine adds a grace period on its side before
// it starts them elsewhere. Times are milliseconds of CLOCK_BOOTTIME (/proc/uptime), which only
// moves forward and keeps counting through a suspend, as etcd's own clock does.

import type { UnitRecord } from "../model.js";
import { parseRequirements } from "../unit/index.js";

export interface FenceTiming {
  ttlMs: number;
  /** How long before the lease's earliest expiry the guard kills: covers the kill itself. */
  marginMs: number;
}

/**
 * The fence deadline of this machine: renewals move it forward, a lost lease pulls it to now. It
 * also counts lapses (the deadline passed), so the reconciler knows the guard has killed its
 * SingleInstance units and that they must be started again once the lease is confirmed.
 */
export class FenceDeadline {
  private deadlineMs: number | undefined;
  private lapsedAt: number | undefined;
  private lapseCount = 0;
  /** etcd's revision when the lease was last confirmed after a lapse (or first): see mayStart. */
  private armedAt = Number.POSITIVE_INFINITY;

  constructor(private readonly timing: FenceTiming) {}

  /** The deadline to enforce, undefined before the first confirmed renewal. */
  get deadline(): number | undefined {
    return this.deadlineMs;
  }

  /**
   * etcd answered, at `revision`, a keep-alive (or a grant) sent at `sentAtMs`. Answers may come
   * back out of order, so the deadline only moves forward.
   */
  renewed(sentAtMs: number, nowMs: number, revision: number): void {
    this.observe(nowMs);
    if (this.deadlineMs === undefined || nowMs >= this.deadlineMs) this.armedAt = revision;
    const next = sentAtMs + this.timing.ttlMs - this.timing.marginMs;
    if (this.deadlineMs === undefined || next > this.deadlineMs) this.deadlineMs = next;
  }

  /** etcd said the lease is gone (revoked, or expired): fence now. */
  lost(nowMs: number): void {
    this.deadlineMs = Math.min(this.deadlineMs ?? nowMs, nowMs);
    this.observe(nowMs);
  }

  /** Counts a lapse once per deadline passed; returns the number of lapses so far. */
  observe(nowMs: number): number {
    if (this.deadlineMs !== undefined && nowMs >= this.deadlineMs && this.lapsedAt !== this.deadlineMs) {
      this.lapsedAt = this.deadlineMs;
      this.lapseCount++;
    }
    return this.lapseCount;
  }

  /**
   * Whether a SingleInstance unit may be started now, by a pass that read the registry at
   * `viewRevision`: only under a confirmed, unexpired lease, and from a view at least as recent as
   * the confirmation that lifted the fence. A view that is behind (its watch still catching up
   * after a cut-off) may not yet show that the engine moved the unit away meanwhile.
   */
  mayStart(nowMs: number, viewRevision: number): boolean {
    return this.deadlineMs !== undefined && nowMs < this.deadlineMs && viewRevision >= this.armedAt;
  }
}

/**
 * Checks the timing: the margin must leave room for a keep-alive interval (TTL/3) and its round
 * trip, or a healthy machine would fence itself between two renewals; below half the TTL leaves
 * a sixth of it for the round trip.
 */
export function fenceTimingProblem(timing: FenceTiming): string | undefined {
  if (timing.marginMs <= 0) return `fence-margin-ms must be positive, got ${timing.marginMs}`;
  if (timing.marginMs * 2 >= timing.ttlMs)
    return `fence-margin-ms (${timing.marginMs}) must be less than half the lease TTL (${timing.ttlMs} ms)`;
  return undefined;
}

/** Whether the unit asked never to run twice ([X-Fleet] SingleInstance=true). */
export function isSingleInstance(unit: Pick<UnitRecord, "name" | "options">): boolean {
  return parseRequirements(unit.name, unit.options).requirements.singleInstance === true;
}

/** The units the guard must kill at the deadline: the loaded ones that are SingleInstance, sorted. */
export function unitsToFence(loaded: Iterable<string>, records: ReadonlyMap<string, UnitRecord>): string[] {
  const out: string[] = [];
  for (const name of loaded) {
    const record = records.get(name);
    if (record && isSingleInstance(record)) out.push(name);
  }
  return out.sort();
}

/** The deadline file's content: whole centiseconds of boot time, rounded down (never later). */
export function formatDeadline(deadlineMs: number): string {
  return `${Math.max(0, Math.floor(deadlineMs / 10))}\n`;
}

/** /proc/uptime's first field ("12345.67") in milliseconds; throws on anything else. */
export function parseUptime(text: string): number {
  const m = /^(\d+)\.(\d{2}) /.exec(text);
  if (!m) throw new Error(`unexpected /proc/uptime content: ${JSON.stringify(text.slice(0, 40))}`);
  return Number(m[1]) * 1000 + Number(m[2]) * 10;
}
