// Domain types shared by the engine, the agent's reconciler, the registry adapter and the API.
// They carry no behaviour; each fact's logic lives in exactly one module (see docs/architecture.md).

/** What the user asked for a unit (fleet's target-state). */
export type DesiredState = "inactive" | "loaded" | "launched";
export const DESIRED_STATES: readonly DesiredState[] = ["inactive", "loaded", "launched"];

/** One `Name=Value` line of a unit file, in file order. */
export interface UnitOption {
  section: string;
  name: string;
  value: string;
}

/** A unit as stored in the registry: its options, content hash and desired state. */
export interface UnitRecord {
  name: string;
  options: UnitOption[];
  /** SHA1 hex of the fleet serialization of `options` (identical to fleet's hash). */
  hash: string;
  desiredState: DesiredState;
}

/** Parsed [X-Fleet] section: the scheduling rules of one unit, specifiers already expanded. */
export interface Requirements {
  /** Full or 8-character machine ID the unit is pinned to. */
  machineID?: string;
  /** Units whose machine this unit must share. */
  machineOf: string[];
  /** Key → accepted values; values of one key are ORed, keys are ANDed. */
  metadata: Record<string, string[]>;
  /** Glob patterns of units that may not share a machine with this one. */
  conflicts: string[];
  global: boolean;
  /** Glob patterns of units this one displaces from its machine. */
  replaces: string[];
  /** Service name for discovery (defaults to the unit's prefix). */
  serviceName?: string;
  /**
   * Never run on two machines at once: fenced (killed) when its machine cannot renew its lease,
   * moved off a lost machine only after a grace period. Absent means false (fleet#1289's default).
   */
  singleInstance?: true;
}

/** A cluster member as published under its lease. */
/** A machine ID as systemd writes /etc/machine-id: 32 lowercase hex characters. */
export const MACHINE_ID = /^[0-9a-f]{32}$/;

/** A dynamic metadata name, as the API accepts it and the view checks it. */
export const METADATA_NAME = /^[A-Za-z0-9_.-]+$/;

export interface Machine {
  id: string;
  publicIP: string;
  metadata: Record<string, string>;
  /** Agent version string. */
  version: string;
  /** The agent's HTTP API base URL (used by fleetctl status/journal). */
  apiURL?: string;
  /** Random per machine and boot (kept in /run): tells an earlier run of this agent from another machine with the same ID. */
  runID?: string;
}

/** Where the engine placed a unit, and why. */
export interface Placement {
  machineID: string;
  /** Epoch ms when this placement was made. */
  at: number;
  reason: string;
}

/** One move of a unit away from a machine where it failed. */
export interface FailureMove {
  from: string;
  at: number;
}

/** The engine's memory of a unit's failures, used to migrate it with backoff and a limit. */
export interface FailureRecord {
  /** Hash of the unit the record applies to; a new version starts from scratch. */
  hash: string;
  moves: FailureMove[];
  /** Set once the unit has been moved `maxMoves` times and failed again. */
  gaveUp?: string;
}

/** systemd's view of a unit on one machine, as published by that machine's agent. */
export interface UnitState {
  name: string;
  hash: string;
  machineID: string;
  loadState: string;
  activeState: string;
  subState: string;
  /** The agent has started the unit for this placement (fleet's job-state heartbeat). */
  launched?: boolean;
  /** Why the agent would not load the unit here (e.g. the machine already has a unit of that name). */
  reason?: string;
}

/** fleet's derived job state, exposed as `currentState` in the API. */
export type CurrentState = "inactive" | "loaded" | "launched";
