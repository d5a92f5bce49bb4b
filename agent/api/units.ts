// The units resource as pure functions: reading a PUT body, deciding what the PUT does
// (fleet's api/units.go set()), and the Unit as the API shows it, with fleet's derived
// currentState (registry/job_state.go) and Flotilla's reason.

import { validateContainerSection } from "../containers/index.js";
import { serviceNameFor, validateServiceName } from "../discovery/record.js";
import {
  type CurrentState,
  DESIRED_STATES,
  type DesiredState,
  type Placement,
  type UnitOption,
  type UnitRecord,
  type UnitState,
} from "../model.js";
import type { ClusterSnapshot } from "../registry/registry.js";
import {
  controlCharacterIn,
  describeControlCharacter,
  isTemplate,
  parseRequirements,
  parseUnitFile,
  serializeUnit,
  UNIT_MAX_BYTES,
  UNIT_MAX_OPTIONS,
  unitHash,
  validateRequirements,
  validateUnitName,
} from "../unit/index.js";
import { ApiError } from "./errors.js";
import { describeType, goField, isObject } from "./json.js";
import type { WireUnit, WireUnitOption } from "./schema.js";

/** A PUT /units/{name} body after type checks; empty strings and arrays count as absent (Go's len==0). */
export interface UnitBody {
  name?: string;
  options?: UnitOption[];
  desiredState?: DesiredState;
}

/** Type-checks a decoded PUT body. Unknown fields (currentState, machineID…) are ignored, as in fleet. */
export function parseUnitBody(raw: unknown): UnitBody {
  if (!isObject(raw))
    throw new ApiError(400, `unable to decode body: expected a Unit object, got ${describeType(raw)}`);
  const body: UnitBody = {};
  const name = optionalString(goField(raw, "name"), "name");
  if (name) body.name = name;
  const state = optionalString(goField(raw, "desiredState"), "desiredState");
  if (state) {
    if (!(DESIRED_STATES as readonly string[]).includes(state)) {
      throw new ApiError(
        400,
        `invalid desiredState ${JSON.stringify(state)}: must be one of ${DESIRED_STATES.join(", ")}`,
      );
    }
    body.desiredState = state as DesiredState;
  }
  const options = goField(raw, "options");
  if (options !== undefined && options !== null) {
    if (!Array.isArray(options))
      throw new ApiError(400, `options: expected an array, got ${describeType(options)}`);
    // Counted before any option is looked at, and the size before any is parsed further.
    if (options.length > UNIT_MAX_OPTIONS) {
      throw new ApiError(400, `too many options: ${options.length}, at most ${UNIT_MAX_OPTIONS} per unit`);
    }
    const parsed = options.map(parseOption);
    if (parsed.length > 0) {
      const size = Buffer.byteLength(serializeUnit(parsed));
      if (size > UNIT_MAX_BYTES) {
        throw new ApiError(
          413,
          `unit is too large: ${size} bytes as a unit file, at most ${UNIT_MAX_BYTES} (64 KiB)`,
        );
      }
      body.options = parsed;
    }
  }
  return body;
}

function parseOption(raw: unknown, index: number): UnitOption {
  const where = `options[${index}]`;
  if (!isObject(raw)) throw new ApiError(400, `${where}: expected an object, got ${describeType(raw)}`);
  return {
    section: optionalString(goField(raw, "section"), `${where}.section`) ?? "",
    name: optionalString(goField(raw, "name"), `${where}.name`) ?? "",
    value: optionalString(goField(raw, "value"), `${where}.value`) ?? "",
  };
}

function optionalString(value: unknown, where: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string")
    throw new ApiError(400, `${where}: expected a string, got ${describeType(value)}`);
  return value;
}

/** What a valid PUT does to the registry. */
export type UnitPut =
  | { kind: "create" | "replace"; unit: UnitRecord; warnings: string[] }
  | { kind: "setDesiredState"; desiredState: DesiredState };

/**
 * The checks of a PUT that need no registry read, in fleet's order: the body's name matches the
 * URL, the name is valid, and a template is not asked to run. Throws a 400.
 */
export function checkUnitPut(urlName: string, body: UnitBody): void {
  if (body.name !== undefined && body.name !== urlName) {
    throw new ApiError(
      400,
      `name in URL ${JSON.stringify(urlName)} differs from unit name in request body ${JSON.stringify(body.name)}`,
    );
  }
  const nameError = validateUnitName(urlName);
  if (nameError !== undefined) throw new ApiError(400, nameError);
  // fleet only checks this on the desiredState-only path; a template created or replaced as
  // launched would be just as unrunnable, so every path refuses it.
  if (body.desiredState !== undefined && body.desiredState !== "inactive" && isTemplate(urlName)) {
    throw new ApiError(400, `cannot activate template ${JSON.stringify(urlName)}`);
  }
}

/**
 * Decides a PUT /units/{urlName} that passed checkUnitPut, from its body and the stored unit
 * (fleet v1.0 set()):
 * - new unit: options required (409), validated (400), created with desiredState or inactive (201);
 * - existing unit, options with another hash: replaced, desiredState reset as given or inactive (201);
 * - otherwise the desiredState alone is set (204), and must be given (409). Options identical to
 *   the stored ones count as absent, as in fleet.
 * Throws ApiError; nothing here touches the registry.
 */
export function decideUnitPut(urlName: string, body: UnitBody, existing: UnitRecord | undefined): UnitPut {
  if (existing === undefined) {
    if (body.options === undefined) throw new ApiError(409, "unit does not exist and options field empty");
    return { kind: "create", ...newRecord(urlName, body.options, body.desiredState) };
  }
  if (body.options !== undefined) {
    const hash = unitHash(body.options);
    if (hash !== existing.hash)
      return { kind: "replace", ...newRecord(urlName, body.options, body.desiredState) };
  }
  if (body.desiredState === undefined) {
    throw new ApiError(409, "must provide DesiredState to update existing unit");
  }
  return { kind: "setDesiredState", desiredState: body.desiredState };
}

function newRecord(
  name: string,
  options: UnitOption[],
  desiredState: DesiredState | undefined,
): { unit: UnitRecord; warnings: string[] } {
  const problems = optionProblems(name, options);
  const { requirements, warnings } = parseRequirements(name, options);
  problems.push(...validateRequirements(name, requirements));
  problems.push(...validateContainerSection(name, options));
  // Only a name given explicitly is checked: a unit whose prefix is no DNS label (my_app.service)
  // still runs, it is just not published (docs/discovery.md).
  if (requirements.serviceName !== undefined) {
    const problem = validateServiceName(serviceNameFor(name, requirements.serviceName));
    if (problem !== undefined)
      problems.push(`invalid [X-Fleet] ServiceName=${requirements.serviceName}: ${problem}`);
  }
  if (problems.length > 0) throw new ApiError(400, `invalid unit options: ${problems.join("; ")}`);
  return {
    unit: { name, options, hash: unitHash(options), desiredState: desiredState ?? "inactive" },
    warnings,
  };
}

/**
 * Options must survive serialization, or the unit systemd runs would differ from what was sent.
 * fleet checks the same way (go-systemd Deserialize(Serialize(options)) must not fail); this also
 * catches a line break or "=" that would split one option into others. Blanks around a value are
 * let through: fleet stored them, and systemd ignores them.
 */
export function optionProblems(name: string, options: UnitOption[]): string[] {
  const problems: string[] = [];
  for (const [i, o] of options.entries()) {
    if (o.section === "") problems.push(`options[${i}]: section is empty`);
    if (o.name === "") problems.push(`options[${i}]: name is empty`);
    // A value keeps its line continuations ("\" then a line break); any other break is refused.
    // A tab may separate words in a value, but no section or directive name has one.
    for (const [field, text] of [
      ["section", o.section],
      ["name", o.name],
      ["value", o.value.replaceAll("\\\n", "")],
    ] as const) {
      const control =
        controlCharacterIn(text) ?? (field !== "value" && text.includes("\t") ? "\t" : undefined);
      if (control !== undefined) {
        problems.push(
          `options[${i}].${field}: ${describeControlCharacter(control)} is not allowed in a unit`,
        );
      }
    }
  }
  if (problems.length > 0) return problems;
  let reparsed: UnitOption[];
  try {
    reparsed = parseUnitFile(serializeUnit(options), `${name} as serialized`);
  } catch (err) {
    return [err instanceof Error ? err.message : String(err)];
  }
  // Serialization groups options by section, so compare in that order.
  const grouped = [...new Set(options.map((o) => o.section))].flatMap((s) =>
    options.filter((o) => o.section === s),
  );
  for (const [i, want] of grouped.entries()) {
    const got = reparsed[i];
    if (
      !got ||
      got.section !== want.section ||
      got.name !== want.name ||
      got.value.trim() !== want.value.trim()
    ) {
      const index = options.indexOf(want);
      return [
        `options[${index}] (${JSON.stringify(`[${want.section}] ${want.name}=${want.value}`)}) does not survive ` +
          "serialization to a unit file: check for line breaks, blanks around names, or '[' ']' '=' in names",
      ];
    }
  }
  if (reparsed.length !== grouped.length) return ["options do not survive serialization to a unit file"];
  return [];
}

/**
 * fleet's job state, exposed as currentState (docs/architecture.md, "Flow of a unit"):
 * - inactive: not scheduled, or the target machine reports no state for the unit;
 * - loaded: scheduled, and the target machine reports a state;
 * - launched: as loaded, and the target's agent reports that it started the unit (its `launched`
 *   flag, Flotilla's stand-in for fleet's job-state heartbeat, which only that agent wrote).
 */
export function deriveCurrentState(
  placement: Placement | undefined,
  targetState: UnitState | undefined,
): CurrentState {
  if (placement === undefined || targetState === undefined) return "inactive";
  if (targetState.machineID !== placement.machineID) return "inactive";
  // The agent's own record of having started the unit, not the desired state: after a stop is
  // requested the unit stays "launched" until its agent has acted, so `restart` really restarts.
  return targetState.launched === true ? "launched" : "loaded";
}

/**
 * Why the unit is not (or no longer) where it was asked to be: the engine gave up moving it,
 * cannot place it, or moved it off a machine where it failed. Failure records of an older
 * version of the unit do not count.
 */
export function unitReason(
  unit: UnitRecord,
  snap: Pick<ClusterSnapshot, "pending" | "failures">,
): string | undefined {
  const failures = snap.failures.get(unit.name);
  const current = failures?.hash === unit.hash ? failures : undefined;
  if (current?.gaveUp) return current.gaveUp;
  const pending = snap.pending.get(unit.name);
  if (pending) return pending.reason;
  const last = current?.moves[current.moves.length - 1];
  if (last)
    return `moved off machine ${last.from} after it failed there at ${new Date(last.at).toISOString()}`;
  return undefined;
}

// Snapshots are shared and never modified (registry/view.ts), so an index built from one of their
// arrays holds until the view changes: one GET costs a lookup, not a scan of 10 000 units.
const stateIndexes = new WeakMap<readonly UnitState[], Map<string, UnitState>>();
const unitIndexes = new WeakMap<readonly UnitRecord[], Map<string, UnitRecord>>();

/** Unit states keyed by unit name and machine, for O(1) lookups while building a page. */
export function indexStates(
  states: readonly UnitState[],
): (name: string, machineID: string) => UnitState | undefined {
  let byKey = stateIndexes.get(states);
  if (!byKey) {
    byKey = new Map();
    for (const s of states) byKey.set(`${s.name}\n${s.machineID}`, s);
    stateIndexes.set(states, byKey);
  }
  const index = byKey;
  return (name, machineID) => index.get(`${name}\n${machineID}`);
}

/** One unit of a snapshot by name. */
export function unitByName(snap: Pick<ClusterSnapshot, "units">, name: string): UnitRecord | undefined {
  let byName = unitIndexes.get(snap.units);
  if (!byName) {
    byName = new Map(snap.units.map((u) => [u.name, u]));
    unitIndexes.set(snap.units, byName);
  }
  return byName.get(name);
}

/** The Unit as fleet's API shows it; keys in Go's (alphabetical) order, empty ones omitted. */
export function toWireUnit(
  unit: UnitRecord,
  snap: Pick<ClusterSnapshot, "schedule" | "pending" | "failures">,
  stateOf: (name: string, machineID: string) => UnitState | undefined,
): WireUnit {
  const placement = snap.schedule.get(unit.name);
  const targetState = placement ? stateOf(unit.name, placement.machineID) : undefined;
  const options: WireUnitOption[] = unit.options.map((o) => ({
    name: o.name,
    section: o.section,
    value: o.value,
  }));
  return omitEmpty({
    currentState: deriveCurrentState(placement, targetState),
    desiredState: unit.desiredState,
    machineID: placement?.machineID,
    name: unit.name,
    options,
    // The engine's reason first; else why the target machine would not load it.
    reason: unitReason(unit, snap) ?? targetState?.reason,
  }) as WireUnit;
}

/** Drops keys that are undefined, "" or [] (Go's omitempty); keeps key order. */
export function omitEmpty<T extends Record<string, unknown>>(obj: T): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === "" || (Array.isArray(v) && v.length === 0)) continue;
    if (isObject(v) && Object.keys(v).length === 0) continue;
    out[k] = v;
  }
  return out as Partial<T>;
}
