// What the updater should do next, from everything it knows at one moment. Pure, so every rule
// (blessing first, pins, bad versions, pauses, waves, no downgrades) is one readable function.

import { UpdateError } from "./errors.js";
import type { Manifest } from "./manifest.js";

export type Version = [major: number, minor: number, patch: number];

/** MAJOR.MINOR.PATCH (no leading zeros, no pre-release) or undefined. */
export function parseVersion(v: string): Version | undefined {
  const m = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Negative, zero or positive as a is older than, equal to or newer than b. Throws on a non-version. */
export function compareVersions(a: string, b: string): number {
  const [pa, pb] = [parseVersion(a), parseVersion(b)];
  if (!pa || !pb) throw new UpdateError("version", `not a MAJOR.MINOR.PATCH version: ${pa ? b : a}`);
  return pa[0] - pb[0] || pa[1] - pb[1] || pa[2] - pb[2];
}

export interface DecideInput {
  /** The running OS version (IMAGE_VERSION of /usr/lib/os-release). */
  currentVersion: string;
  /** The booted loader entry carries no boot counter any more. */
  bootBlessed: boolean;
  /** Install exactly this version (also older: a pin is how an operator rolls back by name). */
  pinnedVersion?: string;
  /** Versions marked bad in the cluster (a machine rolled back from them). */
  badVersions: ReadonlySet<string>;
  /** The machine's group has its rollout paused. */
  paused: boolean;
  /** The verified manifest fetched from the channel (the pinned version's when pinned). */
  manifest?: Manifest;
  now: Date;
  /** eligibleAt(manifest, machineId), from the waves. */
  eligibleAt?: Date;
  /** Local update state: the version written to the passive slot, awaiting a reboot; the version
   *  of the pending install (state.json), which the machine may have rebooted into. */
  local: { written?: string; pending?: string };
}

export type UpdateAction =
  | { kind: "idle"; reason: string }
  | { kind: "wait"; reason: string; until?: Date }
  | { kind: "install"; reason: string; version: string }
  | { kind: "reboot"; reason: string; version: string }
  | { kind: "blessed"; reason: string; version: string };

export function decide(input: DecideInput): UpdateAction {
  const { currentVersion: current, manifest, local, pinnedVersion: pinned } = input;
  if (local.pending !== undefined && local.pending === current) {
    return input.bootBlessed
      ? { kind: "blessed", version: current, reason: `${current} booted and blessed: the update is complete` }
      : { kind: "wait", reason: `${current} booted; waiting for the health gate to bless it` };
  }
  // The passive slot is the fallback until this boot is blessed: never overwrite it before.
  if (!input.bootBlessed) return { kind: "wait", reason: `${current} is not blessed yet` };
  if (pinned !== undefined && pinned === current)
    return { kind: "idle", reason: `pinned to ${pinned}, running it` };
  if (!manifest) return { kind: "idle", reason: "no release fetched" };
  const target = manifest.version;
  if (pinned !== undefined && target !== pinned)
    return { kind: "idle", reason: `pinned to ${pinned}; the fetched manifest is ${target}` };
  if (input.badVersions.has(target))
    return {
      kind: "idle",
      reason: `${target} is marked bad (a machine rolled back from it); waiting for a newer release or fleetctl update clear-bad ${target}`,
    };
  if (pinned === undefined && compareVersions(target, current) <= 0)
    return { kind: "idle", reason: `running ${current}; the channel's newest is ${target}` };
  if (input.paused)
    return { kind: "wait", reason: `the rollout is paused for this machine's group (${target} available)` };
  // A pin is an operator's explicit choice: it skips the waves.
  if (pinned === undefined && input.eligibleAt && input.eligibleAt > input.now)
    return {
      kind: "wait",
      until: input.eligibleAt,
      reason: `${target}: this machine's wave starts at ${input.eligibleAt.toISOString()}`,
    };
  if (local.written === target)
    return {
      kind: "reboot",
      version: target,
      reason: `${target} is written to the passive slot; reboot into it`,
    };
  return { kind: "install", version: target, reason: `${current} → ${target}` };
}
