// The Flotilla update routes (/flotilla/v1/updates…, /flotilla/v1/update-groups/…): request
// checks and answer shapes, pure so they are tested without etcd. Every refused request is a 400
// naming the field, before anything is written.

import type { Machine } from "../model.js";
import {
  CHECK_ALL,
  type GroupConfig,
  type GroupConfigChange,
  groupProblem,
  holderProblem,
  parseGroupConfigChange,
} from "../update/records.js";
import type { UpdatesOverview } from "../update/store.js";
import { ApiError } from "./errors.js";
import { goField, isObject } from "./json.js";
import type { WireUpdateGroup, WireUpdateMachine, WireUpdates } from "./schema.js";

/** Machines in the cluster and machines with a status record, joined by ID. */
export function toWireUpdates(overview: UpdatesOverview, machines: readonly Machine[]): WireUpdates {
  const byId = new Map<string, WireUpdateMachine>();
  for (const m of machines) {
    byId.set(m.id, { machineID: m.id, ...(m.publicIP ? { primaryIP: m.publicIP } : {}), inCluster: true });
  }
  for (const status of overview.statuses) {
    const known = byId.get(status.machineId);
    byId.set(status.machineId, { ...(known ?? { machineID: status.machineId, inCluster: false }), status });
  }
  return {
    machines: [...byId.values()].sort((a, b) =>
      a.machineID < b.machineID ? -1 : a.machineID > b.machineID ? 1 : 0,
    ),
    groups: overview.groups.map((g) => toWireGroup(g.name, g.config, g.holders)),
    bad: overview.bad,
  };
}

export function toWireGroup(
  name: string,
  config: GroupConfig,
  holders: WireUpdateGroup["holders"],
): WireUpdateGroup {
  return { name, ...config, holders };
}

/**
 * The target of POST /flotilla/v1/updates/check: `{"machineID":"…"}` for one machine, an empty
 * body (or no machineID) for all. The machine must be known: in the cluster or with a status.
 */
export function checkTarget(body: unknown, known: ReadonlySet<string>): string {
  if (body === undefined) return CHECK_ALL;
  if (!isObject(body)) throw new ApiError(400, 'body must be a JSON object: {"machineID":"…"} or {}');
  const id = goField(body, "machineID");
  if (id === undefined || id === "") return CHECK_ALL;
  if (typeof id !== "string") throw new ApiError(400, "machineID must be a string");
  if (!known.has(id)) throw new ApiError(404, `machine ${id} is not in the cluster`);
  return id;
}

export function checkGroupName(group: string): void {
  const problem = groupProblem(group);
  if (problem) throw new ApiError(400, `invalid group: ${problem}`);
}

export function checkHolderId(holder: string): void {
  const problem = holderProblem(holder);
  if (problem) throw new ApiError(400, `invalid holder: ${problem}`);
}

/** The body of PUT /flotilla/v1/update-groups/<g>; at least one field. */
export function parseGroupChange(body: unknown): GroupConfigChange {
  let change: GroupConfigChange;
  try {
    change = parseGroupConfigChange(body);
  } catch (err) {
    throw new ApiError(400, err instanceof Error ? err.message : String(err));
  }
  if (Object.keys(change).length === 0) {
    throw new ApiError(400, "body must set at least one of strategy, maxHolders, window, paused");
  }
  return change;
}
