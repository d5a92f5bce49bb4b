// The agent's in-memory copy of the registry (docs/architecture.md, "The view"). It is a plain data
// structure: `feed.ts` fills it with a paged list, then keeps it current from one watch. Values are
// checked and parsed once, when they arrive; passes and API reads then cost no etcd request.
//
// Every agent keeps every unit, placement and state, not only its own: each agent is an engine
// candidate (a new leader must decide at once, not list first) and serves the whole fleet API.

import {
  DESIRED_STATES,
  type FailureRecord,
  type Machine,
  METADATA_NAME,
  type Placement,
  type UnitRecord,
  type UnitState,
} from "../model.js";
import type { KeyFamily, Keys } from "./keys.js";
import {
  describeValue,
  numberField as num,
  parseJSONObject as parseObject,
  Quarantine,
  reasonOf,
  stringField as str,
} from "./quarantine.js";
import type { ClusterSnapshot, PendingReason } from "./registry.js";

/** One key as listed; `revision` is its mod revision, when known. */
export interface KvEntry {
  key: string;
  value: string;
  revision?: number;
}

/** One watched change; `revision` is the change's own etcd revision (its mod revision). */
export type ViewEvent =
  | { type: "put"; key: string; value: string; revision: number }
  | { type: "delete"; key: string; revision: number };

/** The key families the view keeps; a relist reads exactly these prefixes. */
const KEPT = [
  "units",
  "schedule",
  "pending",
  "failures",
  "machines",
  "metadata",
  "states",
] as const satisfies readonly KeyFamily[];
type KeptFamily = (typeof KEPT)[number];
const isKept = (f: KeyFamily): f is KeptFamily => (KEPT as readonly KeyFamily[]).includes(f);

export class ClusterView {
  private readonly units = new Map<string, UnitRecord>();
  private readonly schedule = new Map<string, Placement>();
  private readonly pending = new Map<string, PendingReason>();
  private readonly failures = new Map<string, FailureRecord>();
  private readonly machines = new Map<string, Machine>();
  /** Machine ID → key → value, merged over the machine's own metadata. */
  private readonly metadata = new Map<string, Map<string, string>>();
  /** Unit name → machine ID → state. */
  private readonly states = new Map<string, Map<string, UnitState>>();
  private rev = 0;
  /** The last snapshot built, handed out again until something the view keeps changes. */
  private cached: ClusterSnapshot | undefined;

  /** `quarantine` holds the values that fail their checks (shared with the agent's other readers). */
  constructor(
    readonly keys: Keys,
    readonly quarantine: Quarantine = new Quarantine(),
  ) {}

  /** The etcd revision the view is current to (list revision, then each watched change). */
  get revision(): number {
    return this.rev;
  }

  /** Prefixes a relist reads: the families kept, in key order. */
  prefixes(): string[] {
    return KEPT.map((f) => this.keys.familyPrefix(f)).sort();
  }

  /** Replaces the whole content with a list taken at `revision`. */
  load(entries: readonly KvEntry[], revision: number): void {
    for (const m of [this.units, this.schedule, this.pending, this.failures, this.machines]) m.clear();
    this.metadata.clear();
    this.states.clear();
    const bad = new Set<string>();
    for (const e of entries) if (this.put(e.key, e.value, e.revision ?? 0) === "bad") bad.add(e.key);
    this.quarantine.sweep(KEPT, bad);
    this.rev = revision;
    this.cached = undefined;
  }

  /** Applies watched changes in order. Returns whether any of them touched what the view keeps. */
  apply(events: readonly ViewEvent[]): boolean {
    let changed = false;
    for (const ev of events) {
      if (ev.revision > this.rev) this.rev = ev.revision;
      const kept =
        ev.type === "put" ? this.put(ev.key, ev.value, ev.revision) !== "other" : this.remove(ev.key);
      changed ||= kept;
    }
    if (changed) this.cached = undefined;
    return changed;
  }

  /** A watch progress report: nothing under the prefix changed up to `revision`. */
  advance(revision: number): void {
    if (revision > this.rev) this.rev = revision;
  }

  /**
   * The cluster as one snapshot. Built once per change and shared: callers must not modify it.
   * Its `revision` is the view's revision when it was built; later changes outside the kept
   * families (services, update records) do not rebuild it.
   */
  snapshot(): ClusterSnapshot {
    if (this.cached) return this.cached;
    const byName = (a: { name: string }, b: { name: string }) => cmp(a.name, b.name);
    const snap: ClusterSnapshot = {
      revision: this.rev,
      units: [...this.units.values()].sort(byName),
      schedule: new Map(this.schedule),
      pending: new Map(this.pending),
      failures: new Map(this.failures),
      machines: this.machineList(),
      states: [...this.states.values()]
        .flatMap((perMachine) => [...perMachine.values()])
        .sort((a, b) => cmp(a.name, b.name) || cmp(a.machineID, b.machineID)),
    };
    this.cached = snap;
    return snap;
  }

  unit(name: string): UnitRecord | undefined {
    return this.units.get(name);
  }

  placement(name: string): Placement | undefined {
    return this.schedule.get(name);
  }

  /** The states machines report for one unit, in machine-ID order. */
  statesOf(name: string): UnitState[] {
    return [...(this.states.get(name)?.values() ?? [])].sort((a, b) => cmp(a.machineID, b.machineID));
  }

  /** Machines with their dynamic metadata merged over their own, in ID order. */
  machineList(): Machine[] {
    return [...this.machines.values()]
      .map((m) => {
        const extra = this.metadata.get(m.id);
        return extra ? { ...m, metadata: { ...m.metadata, ...Object.fromEntries(extra) } } : m;
      })
      .sort((a, b) => cmp(a.id, b.id));
  }

  /** Counts per family, for health and logs. */
  size(): { units: number; schedule: number; states: number; machines: number } {
    let states = 0;
    for (const s of this.states.values()) states += s.size;
    return { units: this.units.size, schedule: this.schedule.size, states, machines: this.machines.size };
  }

  /**
   * Stores one value: "kept" if the key is one the view keeps, "bad" if its value failed its
   * check (quarantined, and what the key held is dropped), "other" for keys the view ignores.
   */
  private put(key: string, value: string, revision: number): "kept" | "bad" | "other" {
    const k = this.keys.classify(key);
    if (!k || !isKept(k.family)) return "other";
    this.drop(k.family, k.rest);
    try {
      this.store(k.family, k.rest, value);
    } catch (err) {
      // A bad value (hand-edited etcd) is skipped; it must not take the whole cluster view down.
      this.quarantine.hold(key, k.family, reasonOf(err), revision);
      return "bad";
    }
    this.quarantine.release(key);
    return "kept";
  }

  private store(family: KeptFamily, rest: string, value: string): void {
    switch (family) {
      case "units":
        this.units.set(rest, parseUnitRecord(rest, value));
        return;
      case "schedule":
        this.schedule.set(rest, parsePlacement(value));
        return;
      case "pending":
        this.pending.set(rest, parsePending(value));
        return;
      case "failures":
        this.failures.set(rest, parseFailures(value));
        return;
      case "machines":
        this.machines.set(rest, parseMachine(rest, value));
        return;
      case "metadata": {
        const slash = rest.indexOf("/");
        if (slash <= 0 || slash === rest.length - 1) throw new Error("metadata key without machine or name");
        const id = rest.slice(0, slash);
        const name = rest.slice(slash + 1);
        checkMetadata(name, value);
        const perMachine = this.metadata.get(id) ?? new Map<string, string>();
        perMachine.set(name, value);
        this.metadata.set(id, perMachine);
        return;
      }
      case "states": {
        const slash = rest.lastIndexOf("/");
        if (slash <= 0) throw new Error("state key without machine");
        const name = rest.slice(0, slash);
        const machineID = rest.slice(slash + 1);
        const perMachine = this.states.get(name) ?? new Map<string, UnitState>();
        perMachine.set(machineID, parseUnitState(name, machineID, value));
        this.states.set(name, perMachine);
        return;
      }
    }
  }

  private remove(key: string): boolean {
    const k = this.keys.classify(key);
    if (!k || !isKept(k.family)) return false;
    this.quarantine.release(key);
    this.drop(k.family, k.rest);
    return true;
  }

  /** Forgets what the key held. */
  private drop(family: KeptFamily, rest: string): void {
    switch (family) {
      case "units":
        this.units.delete(rest);
        break;
      case "schedule":
        this.schedule.delete(rest);
        break;
      case "pending":
        this.pending.delete(rest);
        break;
      case "failures":
        this.failures.delete(rest);
        break;
      case "machines":
        this.machines.delete(rest);
        break;
      case "metadata":
        deleteNested(this.metadata, rest, rest.indexOf("/"));
        break;
      case "states":
        deleteNested(this.states, rest, rest.lastIndexOf("/"));
        break;
    }
  }
}

function deleteNested<T>(outer: Map<string, Map<string, T>>, rest: string, slash: number): void {
  if (slash <= 0) return;
  const id = rest.slice(0, slash);
  const inner = outer.get(id);
  if (inner?.delete(rest.slice(slash + 1)) && inner.size === 0) outer.delete(id);
}

// Value checks: the shape each family's writer produces. A value that fails is quarantined with
// the check's message as its reason.

export function parseUnitRecord(name: string, value: string): UnitRecord {
  const o = parseObject(value);
  const stored = str(o, "name");
  if (stored !== name) throw new Error(`field name: ${JSON.stringify(stored)} differs from the key's`);
  const state = str(o, "desiredState");
  if (!(DESIRED_STATES as readonly string[]).includes(state))
    throw new Error(
      `field desiredState: want one of ${DESIRED_STATES.join(", ")}, got ${describeValue(state)}`,
    );
  str(o, "hash");
  const options = o.options;
  if (!Array.isArray(options)) throw new Error(`field options: want an array, got ${describeValue(options)}`);
  options.forEach((opt: unknown, i) => {
    if (typeof opt !== "object" || opt === null || Array.isArray(opt))
      throw new Error(`field options[${i}]: want an object, got ${describeValue(opt)}`);
    const r = opt as Record<string, unknown>;
    for (const f of ["section", "name", "value"]) {
      if (typeof r[f] !== "string")
        throw new Error(`field options[${i}].${f}: want a string, got ${describeValue(r[f])}`);
    }
  });
  return o as unknown as UnitRecord;
}

export function parsePlacement(value: string): Placement {
  const o = parseObject(value);
  str(o, "machineID");
  num(o, "at");
  return o as unknown as Placement;
}

function parsePending(value: string): PendingReason {
  const o = parseObject(value);
  str(o, "reason");
  num(o, "at");
  return o as unknown as PendingReason;
}

function parseFailures(value: string): FailureRecord {
  const o = parseObject(value);
  str(o, "hash");
  const moves = o.moves;
  if (!Array.isArray(moves)) throw new Error(`field moves: want an array, got ${describeValue(moves)}`);
  moves.forEach((m: unknown, i) => {
    if (typeof m !== "object" || m === null || Array.isArray(m))
      throw new Error(`field moves[${i}]: want an object, got ${describeValue(m)}`);
    str(m as Record<string, unknown>, "from", `moves[${i}].from`);
    num(m as Record<string, unknown>, "at", `moves[${i}].at`);
  });
  if (o.gaveUp !== undefined) str(o, "gaveUp");
  return o as unknown as FailureRecord;
}

function parseMachine(id: string, value: string): Machine {
  const o = parseObject(value);
  const stored = str(o, "id");
  if (stored !== id) throw new Error(`field id: ${JSON.stringify(stored)} differs from the key's`);
  str(o, "publicIP");
  const md = o.metadata;
  if (typeof md !== "object" || md === null || Array.isArray(md))
    throw new Error(`field metadata: want an object, got ${describeValue(md)}`);
  for (const [k, v] of Object.entries(md))
    if (typeof v !== "string") throw new Error(`field metadata.${k}: want a string, got ${describeValue(v)}`);
  return o as unknown as Machine;
}

/** Names as the API accepts them (agent/api/machines.ts); values non-empty text. */
function checkMetadata(name: string, value: string): void {
  if (!METADATA_NAME.test(name))
    throw new Error(`metadata name ${JSON.stringify(name)}: not ${METADATA_NAME.source}`);
  if (value === "") throw new Error("metadata value: empty");
  // etcd values are bytes; bytes that are not UTF-8 decode to U+FFFD.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\uFFFD\u0000-\u0008\u000B-\u001F\u007F]/.test(value))
    throw new Error("metadata value: not UTF-8 text (control characters or invalid bytes)");
}

function parseUnitState(name: string, machineID: string, value: string): UnitState {
  const o = parseObject(value);
  if (str(o, "name") !== name || str(o, "machineID") !== machineID)
    throw new Error("fields name and machineID differ from the key's");
  for (const f of ["hash", "loadState", "activeState", "subState"]) str(o, f);
  return o as unknown as UnitState;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
