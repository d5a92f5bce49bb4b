// The updater's records in etcd (docs/etcd-keys.md, docs/updates.md): the one definition shared
// by the lock, the API, the updater loop and fleetctl, plus the pure checks that guard every value
// coming from a request, so a bad field is refused with its name before anything is written.

import { describeValue, parseJSONObject, reasonOf, stringField } from "../registry/quarantine.js";
import type { Slot } from "./slots.js";
import { checkWindow, type RebootWindow } from "./window.js";

export type RebootStrategy = "etcd-lock" | "reboot" | "off";
export const REBOOT_STRATEGIES: readonly RebootStrategy[] = ["etcd-lock", "reboot", "off"];

/** `update/groups/<group>/config`. */
export interface GroupConfig {
  strategy: RebootStrategy;
  /** Machines of the group that may be rebooting at once (the semaphore's slots). */
  maxHolders: number;
  window?: RebootWindow;
  /** No machine of the group starts an install or takes a slot while set. */
  paused: boolean;
}

/** What a group without a config record gets: one machine at a time, no window. */
export const DEFAULT_GROUP_CONFIG: Readonly<GroupConfig> = {
  strategy: "etcd-lock",
  maxHolders: 1,
  paused: false,
};
export const DEFAULT_GROUP = "default";
/** Far above any real cluster; bounds what one request can ask for. */
export const MAX_HOLDERS_LIMIT = 10_000;

/** `update/groups/<group>/holders/<holderId>`, bound to the holder's lease. */
export interface HolderRecord {
  holder: string;
  machineId?: string;
  /** ISO time the slot was taken. */
  since: string;
  /** Decimal etcd lease ID: what the holder keeps alive, across its reboot too. */
  leaseId: string;
}

/** `update/bad/<version>`: a machine rolled back from this version. */
export interface BadVersion {
  version: string;
  reason: string;
  machineId: string;
  /** ISO time. */
  at: string;
}

/** What the updater is doing; `UpdateStatus.detail` says why or what exactly. */
export type UpdateState =
  | "idle"
  | "checking"
  | "waiting"
  | "downloading"
  | "writing"
  | "locking"
  | "draining"
  | "rebooting"
  | "gating"
  | "blessed"
  | "rolled-back"
  | "error";

/** `update/status/<machineID>`: not lease-bound, so it survives the reboot it reports on. */
export interface UpdateStatus {
  machineId: string;
  /** The running OS version. */
  version: string;
  slot: Slot;
  state: UpdateState;
  detail?: string;
  group?: string;
  /** ISO time of the last completed channel check. */
  lastCheck?: string;
  lastRollback?: { version: string; reason: string; at: string };
  progress?: { bytes: number; total: number };
  /** ISO time this record was written. */
  updatedAt: string;
}

/** `update/check/<machineID|all>`: a new nonce asks the machine (or all) to check now. */
export interface CheckRequest {
  nonce: string;
  at: string;
}
/** The check target meaning every machine; machine IDs are 32 hex digits, so never "all". */
export const CHECK_ALL = "all";

/** FleetLock's group rule (docs/updates.md), used for every group name. */
const GROUP_RE = /^[a-zA-Z0-9.-]+$/;
/** Holder IDs become key names and table cells: printable, no "/", bounded. */
const MAX_ID_LENGTH = 256;

/** Why a name is not a valid group, or undefined. */
export function groupProblem(group: string): string | undefined {
  if (group === "") return "must not be empty";
  if (group.length > MAX_ID_LENGTH) return `must be at most ${MAX_ID_LENGTH} characters`;
  if (!GROUP_RE.test(group)) return `${JSON.stringify(group)} must match ^[a-zA-Z0-9.-]+$`;
  return undefined;
}

/** Why a string is not a valid holder ID, or undefined. */
export function holderProblem(id: string): string | undefined {
  if (id === "") return "must not be empty";
  if (id.length > MAX_ID_LENGTH) return `must be at most ${MAX_ID_LENGTH} characters`;
  // A "/" would put the holder key below another holder's; control characters break tables.
  if (/[/\p{Cc}]/u.test(id)) return `${JSON.stringify(id)} must not contain "/" or control characters`;
  return undefined;
}

/** A change to a group's config, as PUT /flotilla/v1/update-groups/<g> takes it. */
export interface GroupConfigChange {
  strategy?: RebootStrategy;
  maxHolders?: number;
  /** null removes the window. */
  window?: RebootWindow | null;
  paused?: boolean;
}

/**
 * Validates a config change; throws an Error naming the field. Only the fields given change, so
 * `fleetctl update pause` cannot undo a concurrent `lock-size`.
 */
export function parseGroupConfigChange(body: unknown): GroupConfigChange {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new Error("body must be a JSON object with any of strategy, maxHolders, window, paused");
  }
  const b = body as Record<string, unknown>;
  const change: GroupConfigChange = {};
  for (const key of Object.keys(b)) {
    if (!["strategy", "maxHolders", "window", "paused"].includes(key)) {
      throw new Error(
        `unknown field ${JSON.stringify(key)}: expected strategy, maxHolders, window or paused`,
      );
    }
  }
  if (b.strategy !== undefined) {
    if (!REBOOT_STRATEGIES.includes(b.strategy as RebootStrategy)) {
      throw new Error(
        `strategy ${JSON.stringify(b.strategy)} must be one of ${REBOOT_STRATEGIES.join(", ")}`,
      );
    }
    change.strategy = b.strategy as RebootStrategy;
  }
  if (b.maxHolders !== undefined) {
    const n = b.maxHolders;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > MAX_HOLDERS_LIMIT) {
      throw new Error(
        `maxHolders ${JSON.stringify(n)} must be a whole number from 1 to ${MAX_HOLDERS_LIMIT}`,
      );
    }
    change.maxHolders = n;
  }
  if (b.window !== undefined) change.window = b.window === null ? null : checkWindow(b.window, "window");
  if (b.paused !== undefined) {
    if (typeof b.paused !== "boolean")
      throw new Error(`paused ${JSON.stringify(b.paused)} must be true or false`);
    change.paused = b.paused;
  }
  return change;
}

/** `config` with `change` applied. */
export function applyGroupConfigChange(config: GroupConfig, change: GroupConfigChange): GroupConfig {
  const { window: _old, ...rest } = config;
  const window = change.window === undefined ? config.window : (change.window ?? undefined);
  return {
    ...rest,
    ...(change.strategy !== undefined ? { strategy: change.strategy } : {}),
    ...(change.maxHolders !== undefined ? { maxHolders: change.maxHolders } : {}),
    ...(change.paused !== undefined ? { paused: change.paused } : {}),
    ...(window ? { window } : {}),
  };
}

/**
 * A stored config read leniently: a hand-edited or older record keeps what is valid and falls
 * back to the defaults for the rest, so one bad field never unlocks or stops a whole group.
 */
export function parseGroupConfig(text: string | undefined): GroupConfig {
  if (text === undefined) return { ...DEFAULT_GROUP_CONFIG };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ...DEFAULT_GROUP_CONFIG };
  }
  const r = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  let config: GroupConfig = { ...DEFAULT_GROUP_CONFIG };
  for (const field of ["strategy", "maxHolders", "window", "paused"] as const) {
    try {
      config = applyGroupConfigChange(config, parseGroupConfigChange({ [field]: r[field] }));
    } catch {
      // Keep the default for this field.
    }
  }
  return config;
}

const UPDATE_STATES: readonly UpdateState[] = [
  "idle",
  "checking",
  "waiting",
  "downloading",
  "writing",
  "locking",
  "draining",
  "rebooting",
  "gating",
  "blessed",
  "rolled-back",
  "error",
];

/**
 * What is wrong with a value under `update/` (`rest` is its key after `update/`), or undefined
 * when it is good or not a record. For the quarantine (docs/etcd-keys.md): readers keep their
 * documented leniency, so a bad group config still reads as the defaults and a bad holder still
 * holds its slot, but a bad status or bad-version record is skipped.
 */
export function updateRecordProblem(rest: string, value: string): string | undefined {
  const [kind = "", name = "", sub, ...more] = rest.split("/");
  try {
    if (kind === "groups" && sub === "config" && more.length === 0) {
      parseGroupConfigChange(parseJSONObject(value));
    } else if (kind === "groups" && sub === "holders" && more.length > 0) {
      const o = parseJSONObject(value);
      stringField(o, "since");
      if (o.machineId !== undefined) stringField(o, "machineId");
    } else if (kind === "status" && sub === undefined) {
      const o = parseJSONObject(value);
      if (stringField(o, "machineId") !== name) throw new Error("field machineId differs from the key's");
      stringField(o, "version");
      const slot = stringField(o, "slot");
      if (slot !== "A" && slot !== "B")
        throw new Error(`field slot: want A or B, got ${describeValue(slot)}`);
      const state = stringField(o, "state");
      if (!(UPDATE_STATES as readonly string[]).includes(state))
        throw new Error(`field state: want one of ${UPDATE_STATES.join(", ")}, got ${describeValue(state)}`);
      stringField(o, "updatedAt");
    } else if (kind === "bad" && sub === undefined) {
      const o = parseJSONObject(value);
      if (stringField(o, "version") !== name) throw new Error("field version differs from the key's");
      for (const f of ["reason", "machineId", "at"]) stringField(o, f);
    } else if (kind === "check" && sub === undefined) {
      const o = parseJSONObject(value);
      for (const f of ["nonce", "at"]) stringField(o, f);
    }
    return undefined;
  } catch (err) {
    return reasonOf(err);
  }
}
