// The fleet v1 HTTP API wire schema (fleet's schema/v1.json): the one definition shared by the
// server (agent/api) and the client (fleetctl). Keys are omitted from JSON when empty.
// Flotilla adds optional fields (marked) that fleet's own clients ignore.

import type { QuarantinedValue } from "../registry/quarantine.js";
import type { BadVersion, GroupConfig, HolderRecord, UpdateStatus } from "../update/records.js";

export const API_PREFIX = "/fleet/v1";
export const LEGACY_API_PREFIX = "/v1-alpha";
/** Flotilla's agent-to-agent and fleetctl extensions (status, journal); not part of fleet. */
export const EXT_PREFIX = "/flotilla/v1";
export const DEFAULT_PAGE_SIZE = 100;

export interface WireUnitOption {
  section: string;
  name: string;
  value: string;
}

export interface WireUnit {
  name: string;
  options?: WireUnitOption[];
  desiredState?: "inactive" | "loaded" | "launched";
  currentState?: "inactive" | "loaded" | "launched";
  machineID?: string;
  /** Flotilla: why the unit is not (or no longer) where it was asked to be. */
  reason?: string;
}

export interface WireUnitPage {
  units?: WireUnit[];
  nextPageToken?: string;
}

export interface WireUnitState {
  name: string;
  hash?: string;
  machineID?: string;
  systemdLoadState?: string;
  systemdActiveState?: string;
  systemdSubState?: string;
}

export interface WireUnitStatePage {
  states?: WireUnitState[];
  nextPageToken?: string;
}

export interface WireMachine {
  id: string;
  primaryIP?: string;
  metadata?: Record<string, string>;
}

export interface WireMachinePage {
  machines?: WireMachine[];
  nextPageToken?: string;
}

/** PATCH /machines body item; note fleet's wire nesting `"value":{"value":"…"}`. */
export interface WireMachineOp {
  op: "add" | "replace" | "remove";
  path: string;
  value?: { value: string };
}

export interface WireError {
  error: { code: number; message: string };
}

/** Flotilla extension: GET /flotilla/v1/units/{name}/status and …/journal, answered by the unit's machine. */
export interface WireCommandOutput {
  exitCode: number;
  output: string;
}

/** Flotilla extension: one port of a service instance (docs/discovery.md). */
export interface WireServicePort {
  /** Port inside the container, when the unit runs one. */
  container?: number;
  /** Port on `ip` where the instance answers. */
  host: number;
  protocol: "tcp" | "udp";
}

/** Flotilla extension: a service record, present while its unit is active. */
export interface WireService {
  service: string;
  machineID: string;
  unit: string;
  ip: string;
  ports: WireServicePort[];
}

/** Flotilla extension: GET /flotilla/v1/services[?service=NAME], sorted by service, machine, unit. */
export interface WireServiceList {
  services: WireService[];
}

/**
 * Flotilla extension: GET /flotilla/v1/quarantine, the registry values this agent skips because
 * they failed their checks (docs/etcd-keys.md, "Quarantine"), sorted by key.
 */
export interface WireQuarantine {
  values: QuarantinedValue[];
}

/** Flotilla extension: one machine in GET /flotilla/v1/updates. */
export interface WireUpdateMachine {
  machineID: string;
  primaryIP?: string;
  /** False for a machine that left (or is rebooting) but whose status record remains. */
  inCluster: boolean;
  /** Absent until the machine's updater has written one. */
  status?: UpdateStatus;
}

/** Flotilla extension: a reboot group, its config and its lock holders. */
export interface WireUpdateGroup extends GroupConfig {
  name: string;
  holders: HolderRecord[];
}

/** Flotilla extension: GET /flotilla/v1/updates, sorted by machine ID, group name and version. */
export interface WireUpdates {
  machines: WireUpdateMachine[];
  groups: WireUpdateGroup[];
  bad: BadVersion[];
}

/** Flotilla extension: POST /flotilla/v1/updates/check answer; `target` is a machine ID or "all". */
export interface WireUpdateCheck {
  target: string;
  nonce: string;
}
