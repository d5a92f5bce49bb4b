// The machines and state resources as pure functions: fleet's PATCH /machines metadata ops
// (api/machines.go) and the Machine and UnitState shapes of the wire.

import { type Machine, METADATA_NAME, type UnitState } from "../model.js";
import type { ClusterSnapshot } from "../registry/registry.js";
import { ApiError } from "./errors.js";
import { describeType, goField, isObject } from "./json.js";
import type { WireMachine, WireUnitState } from "./schema.js";
import { omitEmpty } from "./units.js";

/** One validated metadata change: `value` undefined removes the key. */
export interface MetadataChange {
  machineID: string;
  key: string;
  value: string | undefined;
}

const METADATA_PATH = new RegExp(`^/([^/]+)/metadata/(${METADATA_NAME.source.slice(1, -1)})$`);

/**
 * Validates a whole PATCH body before anything is applied, as fleet does. Each op is
 * `{"op":"add|replace|remove","path":"/<machineID>/metadata/<key>","value":{"value":"…"}}`;
 * note the nested value, which is fleet's real wire format (api-v1.md shows a plain string).
 */
export function parseMetadataOps(raw: unknown): MetadataChange[] {
  if (!Array.isArray(raw)) {
    throw new ApiError(
      400,
      `unable to decode body: expected an array of operations, got ${describeType(raw)}`,
    );
  }
  return raw.map((item: unknown, i) => {
    if (!isObject(item))
      throw new ApiError(400, `operation ${i}: expected an object, got ${describeType(item)}`);
    const op = goField(item, "op");
    if (op !== "add" && op !== "remove" && op !== "replace") {
      throw new ApiError(400, "invalid op: expect add, remove, or replace");
    }
    const path = goField(item, "path");
    const match = typeof path === "string" ? METADATA_PATH.exec(path) : null;
    if (!match) throw new ApiError(400, "machine metadata path invalid");
    const [, machineID = "", key = ""] = match;
    if (op === "remove") return { machineID, key, value: undefined };
    const wrapped = goField(item, "value");
    if (typeof wrapped === "string") {
      throw new ApiError(400, 'invalid value: fleet expects "value":{"value":"…"}, not a plain string');
    }
    const value = isObject(wrapped) ? goField(wrapped, "value") : undefined;
    if (typeof value !== "string" || value === "") {
      throw new ApiError(400, "invalid value: add and replace require a value");
    }
    return { machineID, key, value };
  });
}

export function toWireMachine(m: Machine): WireMachine {
  return omitEmpty({ id: m.id, metadata: { ...m.metadata }, primaryIP: m.publicIP }) as WireMachine;
}

export function toWireUnitState(s: UnitState): WireUnitState {
  return omitEmpty({
    hash: s.hash,
    machineID: s.machineID,
    name: s.name,
    systemdActiveState: s.activeState,
    systemdLoadState: s.loadState,
    systemdSubState: s.subState,
  }) as WireUnitState;
}

/** GET /state's filters: exact matches, an empty filter matches everything (fleet). */
export function filterStates(
  states: readonly UnitState[],
  filter: { machineID?: string; unitName?: string },
): readonly UnitState[] {
  // No filter: the snapshot's own array, so a page costs its own length, not a copy of all states.
  if (!filter.machineID && !filter.unitName) return states;
  return states.filter(
    (s) =>
      (!filter.machineID || s.machineID === filter.machineID) &&
      (!filter.unitName || s.name === filter.unitName),
  );
}

/**
 * GET /state/{name}: fleet answered from the single legacy `state/<name>` key. Here the state
 * reported by the machine the unit is scheduled to wins; a global unit (no schedule) answers
 * with the first machine's, in machine-ID order.
 */
export function stateOfUnit(
  name: string,
  snap: Pick<ClusterSnapshot, "schedule" | "states">,
): UnitState | undefined {
  const target = snap.schedule.get(name)?.machineID;
  const mine = statesByUnit(snap.states).get(name) ?? [];
  return mine.find((s) => s.machineID === target) ?? mine[0];
}

// Snapshots are shared and never modified (registry/view.ts): the index holds until the view changes.
const byUnitIndexes = new WeakMap<readonly UnitState[], Map<string, UnitState[]>>();

/** States grouped by unit, in the snapshot's (machine-ID) order. */
function statesByUnit(states: readonly UnitState[]): Map<string, UnitState[]> {
  let index = byUnitIndexes.get(states);
  if (!index) {
    index = new Map();
    for (const s of states) {
      const list = index.get(s.name);
      if (list) list.push(s);
      else index.set(s.name, [s]);
    }
    byUnitIndexes.set(states, index);
  }
  return index;
}
