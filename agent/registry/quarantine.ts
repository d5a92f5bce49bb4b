// Registry values that failed their checks (docs/etcd-keys.md, "Quarantine"). Whoever reads a key
// family checks each value against its type; a bad one (hand-edited etcd, a writer's bug) is
// skipped, held here with what was wrong, shown by GET /flotilla/v1/quarantine and logged once at
// error level per key and revision. It never stops a pass: everything else is still used. A good
// value or a delete at the key releases it.

import type { Logger } from "../log.js";
import type { KeyFamily } from "./keys.js";

/** The families whose readers report here: the view's, and the ones other watchers read. */
export type QuarantineFamily = KeyFamily | "engine" | "update";

export interface QuarantinedValue {
  key: string;
  family: QuarantineFamily;
  /** What was wrong, e.g. `field desiredState: want one of inactive, loaded, launched, got 7`. */
  reason: string;
  /** The bad value's etcd mod revision (0 when the reader does not know it). */
  revision: number;
  /** When this agent first held this value, ISO 8601. */
  since: string;
}

export class Quarantine {
  private readonly held = new Map<string, QuarantinedValue>();

  constructor(
    private readonly log?: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Holds the value at `key`; logs only when this key, revision and reason are new. */
  hold(key: string, family: QuarantineFamily, reason: string, revision = 0): void {
    const prev = this.held.get(key);
    if (prev && prev.revision === revision && prev.reason === reason) return;
    this.held.set(key, { key, family, reason, revision, since: this.now().toISOString() });
    this.log?.error(
      { key, family, revision, reason },
      "registry value quarantined: skipped until it is fixed or deleted",
    );
  }

  /** The key now holds a good value, or none. */
  release(key: string): void {
    if (this.held.delete(key)) this.log?.info({ key }, "registry value released from quarantine");
  }

  /** After a full read of `families`: releases the keys of those families not in `stillBad`. */
  sweep(families: readonly QuarantineFamily[], stillBad: ReadonlySet<string>): void {
    for (const q of [...this.held.values()])
      if (families.includes(q.family) && !stillBad.has(q.key)) this.release(q.key);
  }

  /** Every held value, in key order. */
  list(): QuarantinedValue[] {
    return [...this.held.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  get size(): number {
    return this.held.size;
  }
}

/** A short description of a JSON value for a reason: `null`, `an array`, `number 7`, `string "x"`. */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  const text = JSON.stringify(v);
  return `${typeof v} ${text.length > 40 ? `${text.slice(0, 40)}…` : text}`;
}

/** The value parsed as a JSON object, or an error saying what it is instead. */
export function parseJSONObject(value: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch {
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
    throw new Error(`not JSON: ${JSON.stringify(shown)} (${value.length} characters)`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new Error(`want a JSON object, got ${describeValue(v)}`);
  return v as Record<string, unknown>;
}

/** Field `field` of `o`, a string; `path` names it in the reason. */
export function stringField(o: Record<string, unknown>, field: string, path = field): string {
  const v = o[field];
  if (typeof v !== "string") throw new Error(`field ${path}: want a string, got ${describeValue(v)}`);
  return v;
}

/** Field `field` of `o`, a finite number; `path` names it in the reason. */
export function numberField(o: Record<string, unknown>, field: string, path = field): number {
  const v = o[field];
  if (typeof v !== "number" || !Number.isFinite(v))
    throw new Error(`field ${path}: want a number, got ${describeValue(v)}`);
  return v;
}

/** The message of a thrown check. */
export function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
