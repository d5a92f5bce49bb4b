// The registry: the cluster's shared state as the API, engine and agents see it.
// `EtcdRegistry` (etcd.ts) is the one implementation; this interface keeps callers free of etcd.

import type { DesiredState, FailureRecord, Machine, Placement, UnitRecord, UnitState } from "../model.js";

export interface PendingReason {
  reason: string;
  at: number;
}

/**
 * Everything the engine needs for one scheduling pass, as of a single etcd revision. Snapshots
 * come from the agent's in-memory view and are shared between callers: never modify one.
 */
export interface ClusterSnapshot {
  revision: number;
  units: UnitRecord[];
  schedule: Map<string, Placement>;
  pending: Map<string, PendingReason>;
  failures: Map<string, FailureRecord>;
  machines: Machine[];
  states: UnitState[];
}

/** etcd could not be reached (or answered too late): the API's 503. Never a refusal or a bad value. */
export class RegistryUnavailableError extends Error {
  constructor(cause: unknown) {
    super(`etcd is unreachable: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = "RegistryUnavailableError";
  }
}

export interface Registry {
  snapshot(): Promise<ClusterSnapshot>;

  getUnit(name: string): Promise<UnitRecord | undefined>;
  /** Creates the unit, or replaces it (new options, desired state reset as given). */
  putUnit(unit: UnitRecord): Promise<void>;
  /** Returns false when the unit does not exist. */
  setDesiredState(name: string, state: DesiredState): Promise<boolean>;
  /** Deletes the unit and everything derived from it. Returns false when it did not exist. */
  destroyUnit(name: string): Promise<boolean>;

  /** Machines with their dynamic metadata merged over their configured metadata. */
  listMachines(): Promise<Machine[]>;
  /** Sets (value given) or removes (undefined) one dynamic metadata key. */
  setMachineMetadata(machineID: string, key: string, value: string | undefined): Promise<void>;

  /** Removes one machine's published state of a unit (the agent unloaded it). */
  deleteState(name: string, machineID: string): Promise<void>;
  /** Removes a key this machine published under its lease (a withdrawn service record). */
  deleteKey(key: string): Promise<void>;

  /**
   * The engine's writes, all or none in one transaction guarded by the leader key (a deposed
   * engine cannot write) and by each unschedule's own guard. False when a guard refused it.
   * At most ENGINE_TXN_MAX_WRITES writes, each to a different key.
   */
  writeAsLeader(writes: readonly EngineWrite[], leaderMachineID: string): Promise<boolean>;
}

/**
 * Writes per engine transaction. etcd refuses a transaction of more than 128 operations or
 * comparisons (`--max-txn-ops`); each write is one operation and at most one comparison, plus
 * the leader key's.
 */
export const ENGINE_TXN_MAX_WRITES = 100;

/** One engine write. Only the engine puts schedule/, pending/ and failures/ (destroyUnit deletes them). */
export type EngineWrite =
  | { kind: "schedule"; unit: string; placement: Placement }
  /**
   * Deletes a placement only if it is still the one the engine decided on: unchanged since the
   * revision the decision was read at, or exactly the placement this pass wrote earlier.
   */
  | { kind: "unschedule"; unit: string; expect: { unchangedSince: number } | { placement: Placement } }
  /** Sets (reason given) or deletes why the unit could not be placed. */
  | { kind: "pending"; unit: string; reason: PendingReason | undefined }
  /** Sets (record given) or deletes the unit's failure record. */
  | { kind: "failures"; unit: string; record: FailureRecord | undefined };
