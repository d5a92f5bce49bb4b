// Whether a unit may run on a machine given what is already there: the one implementation of the
// [X-Fleet] placement rules (docs/units.md), shared by the engine (where to place units) and
// each machine's reconciler (which global units to run). Pure: no I/O, no clock.

import type { DesiredState, Machine, Requirements } from "../model.js";
import { isTemplate, matchGlob } from "../unit/index.js";

/** A unit as the placement rules see it. */
export interface UnitRef {
  name: string;
  requirements: Requirements;
}

/**
 * What is on each machine, by machine ID then unit name: the units the engine placed there plus
 * the global units its agent runs. Build it with `placementView`.
 */
export type PlacementView = ReadonlyMap<string, ReadonlyMap<string, UnitRef>>;

/** Where the engine placed units, by unit name. A `ClusterSnapshot` is one. */
export interface Placements {
  readonly schedule: ReadonlyMap<string, { readonly machineID: string }>;
}

/** The [X-Fleet] rule a machine failed, in the order they are checked. */
export type Rule = "machineID" | "metadata" | "machineOf" | "conflicts";

/**
 * The units related to a unit by Conflicts and Replaces, by name. Optional everywhere: without it
 * the rules scan a machine's occupants and match every pattern; the scheduler passes an index
 * (rule-index.ts) so a check costs what the relations hold, not what the machine holds.
 */
export interface RuleIndex {
  /**
   * Units that conflict with `unit`, in either direction: the union of these sets, which are
   * shared between units and may hold `unit` itself (a group such as web@* conflicts with itself).
   */
  conflicting(unit: UnitRef): readonly ReadonlySet<string>[];
  /** Units that displace `unit`: those `other` for which `replaces(other, unit)`. */
  replacing(unit: UnitRef): ReadonlySet<string>;
}

export type Eligibility =
  | { ok: true }
  /** `other` names the missing peer or the conflicting unit. */
  | { ok: false; rule: Rule; reason: string; other?: string };

/**
 * Can `unit` run on `machine`? Checks MachineID, MachineMetadata, MachineOf and Conflicts, in that
 * order. Replaces never makes a machine ineligible: the scheduler moves the replaced unit instead.
 */
export function ableToRun(
  unit: UnitRef,
  machine: Machine,
  view: PlacementView,
  index?: RuleIndex,
): Eligibility {
  const req = unit.requirements;
  if (req.machineID !== undefined && !matchesMachineID(machine, req.machineID)) {
    return { ok: false, rule: "machineID", reason: `unit is pinned to machine ${req.machineID}` };
  }
  const lacking = metadataMismatch(machine, req.metadata);
  if (lacking) return { ok: false, rule: "metadata", reason: lacking };
  const here = view.get(machine.id);
  for (const peer of req.machineOf) {
    if (!here?.has(peer)) {
      return { ok: false, rule: "machineOf", reason: `peer ${peer} is not on this machine`, other: peer };
    }
  }
  const conflict =
    here && (index ? firstOf(index.conflicting(unit), here, unit.name) : firstConflict(unit, here.values()));
  if (conflict)
    return { ok: false, rule: "conflicts", reason: `conflicts with ${conflict}`, other: conflict };
  return { ok: true };
}

/**
 * The global units `machine`'s agent should run, in name order (fleet's desiredAgentState): the
 * units placed there are admitted first, then each global unit whose metadata matches and that
 * conflicts with nothing admitted so far. Templates and inactive units are never run.
 */
export function globalUnitsFor<T extends UnitRef & { desiredState: DesiredState }>(
  machine: Machine,
  units: readonly T[],
  placements: Placements,
): T[] {
  const placed = units.filter(
    (u) => !u.requirements.global && placements.schedule.get(u.name)?.machineID === machine.id,
  );
  return admitGlobals(machine, placed, runnableGlobals(units));
}

/** The global units any machine may run, in name order: not templates, not inactive. */
export function runnableGlobals<T extends UnitRef & { desiredState: DesiredState }>(
  units: readonly T[],
): T[] {
  return units
    .filter((u) => u.requirements.global && u.desiredState !== "inactive" && !isTemplate(u.name))
    .sort((a, b) => compare(a.name, b.name));
}

/**
 * globalUnitsFor's admission, given the non-global units placed on `machine` and the runnable
 * globals in name order (runnableGlobals).
 */
export function admitGlobals<T extends UnitRef>(
  machine: Machine,
  placed: Iterable<UnitRef & { desiredState: DesiredState }>,
  globals: readonly T[],
  index?: RuleIndex,
): T[] {
  // Inactive units are about to be unscheduled and their agent will not run them: they block nothing.
  const admitted = new Map<string, UnitRef>();
  for (const u of placed) if (u.desiredState !== "inactive") admitted.set(u.name, u);
  const out: T[] = [];
  for (const unit of globals) {
    if (metadataMismatch(machine, unit.requirements.metadata)) continue;
    const conflict = index
      ? firstOf(index.conflicting(unit), admitted, unit.name)
      : firstConflict(unit, admitted.values());
    if (conflict) continue;
    admitted.set(unit.name, unit);
    out.push(unit);
  }
  return out;
}

/** Builds the view `ableToRun` checks against: placed non-global units plus each machine's globals. */
export function placementView<T extends UnitRef & { desiredState: DesiredState }>(
  units: readonly T[],
  placements: Placements,
  machines: readonly Machine[],
): Map<string, Map<string, UnitRef>> {
  const view = new Map<string, Map<string, UnitRef>>();
  const byName = new Map(units.map((u) => [u.name, u]));
  for (const [name, { machineID }] of placements.schedule) {
    const unit = byName.get(name);
    if (!unit || unit.requirements.global) continue;
    occupants(view, machineID).set(name, unit);
  }
  for (const machine of machines) {
    const here = occupants(view, machine.id);
    for (const g of globalUnitsFor(machine, units, placements)) here.set(g.name, g);
  }
  return view;
}

/**
 * The unit on `machineID` whose Replaces matches `unit`, if any: `unit` may not stay there.
 * Circular replaces (each matches the other) are ignored, as fleet's hasReplace does.
 */
export function displacedBy(
  unit: UnitRef,
  machineID: string,
  view: PlacementView,
  index?: RuleIndex,
): string | undefined {
  const here = view.get(machineID);
  if (index) return here && firstOf([index.replacing(unit)], here, unit.name);
  let found: string | undefined;
  for (const other of here?.values() ?? []) {
    if (replaces(other, unit) && (found === undefined || other.name < found)) found = other.name;
  }
  return found;
}

/** Does `a` displace `b`? True when a's Replaces matches b and b's does not match a. */
export function replaces(a: UnitRef, b: UnitRef): boolean {
  if (a.name === b.name) return false;
  const matches = (x: UnitRef, y: UnitRef) => x.requirements.replaces.some((p) => matchGlob(p, y.name));
  return matches(a, b) && !matches(b, a);
}

/** fleet's MachineState.MatchID: the full ID or its first 8 characters. */
export function matchesMachineID(machine: Machine, id: string): boolean {
  return machine.id === id || shortID(machine.id) === id;
}

export function shortID(machineID: string): string {
  return machineID.slice(0, 8);
}

/** `disk=ssd, region=us-east|us-west`: keys ANDed, `|` between a key's ORed values. */
export function formatMetadata(metadata: Record<string, readonly string[]>): string {
  return Object.keys(metadata)
    .sort(compare)
    .map((k) => `${k}=${(metadata[k] ?? []).join("|")}`)
    .join(", ");
}

/** Why `machine` lacks the required metadata (first failing key), or undefined when it has it. */
export function metadataMismatch(machine: Machine, required: Record<string, string[]>): string | undefined {
  for (const key of Object.keys(required).sort(compare)) {
    const accepted = required[key] ?? [];
    const has = machine.metadata[key];
    if (has !== undefined && accepted.includes(has)) continue;
    const want = formatMetadata({ [key]: accepted });
    return has === undefined ? `lacks metadata ${want}` : `lacks metadata ${want} (has ${key}=${has})`;
  }
  return undefined;
}

/** The first (by name) of `others` that conflicts with `unit`, checking both units' patterns. */
function firstConflict(unit: UnitRef, others: Iterable<UnitRef>): string | undefined {
  let found: string | undefined;
  for (const other of others) {
    if (other.name === unit.name || (found !== undefined && other.name >= found)) continue;
    if (conflicts(unit, other) || conflicts(other, unit)) found = other.name;
  }
  return found;
}

/** The first (by name) unit other than `self` in both `here` and one of `sets`, walking the smaller side. */
function firstOf(
  sets: readonly ReadonlySet<string>[],
  here: ReadonlyMap<string, unknown>,
  self: string,
): string | undefined {
  let found: string | undefined;
  for (const names of sets) {
    const [walk, other] = names.size <= here.size ? [names.keys(), here] : [here.keys(), names];
    for (const name of walk) {
      if (name !== self && other.has(name) && (found === undefined || name < found)) found = name;
    }
  }
  return found;
}

/** Does one of a's Conflicts patterns match b? */
export function conflicts(a: UnitRef, b: UnitRef): boolean {
  return a.requirements.conflicts.some((p) => matchGlob(p, b.name));
}

/** The units on `machineID` in a mutable view, creating the entry on first use. */
export function occupants(view: Map<string, Map<string, UnitRef>>, machineID: string): Map<string, UnitRef> {
  const here = view.get(machineID) ?? new Map<string, UnitRef>();
  view.set(machineID, here);
  return here;
}

/** Code-unit order, like Go's sort.Strings (localeCompare would vary with the locale). */
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
