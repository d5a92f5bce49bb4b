// One machine ID, one member: what an agent does when its machine key already exists under another
// lease. Pure, so every case is unit-tested; membership.ts applies it.
//
// The record carries `runID`, a random token kept in /run (a tmpfs: one per machine and per boot).
// The same token means an earlier run of this very agent on this boot (a crash or restart): the
// key is ours to take over. Another token is either this machine's previous boot, whose lease
// expires within a TTL, or another machine with the same ID — which keeps its lease alive.
// Waiting one TTL (plus a margin for a keep-alive in flight) tells the two apart.

import type { Machine } from "../model.js";

export type JoinDecision =
  | { kind: "take-over" }
  | { kind: "wait"; reason: string }
  | { kind: "refuse"; message: string };

export interface ExistingMember {
  record: Machine | undefined;
  lease: string;
  /** The key's mod revision when read: a takeover only replaces the record it decided on. */
  modRevision: string;
}

/** How long past its first sighting an unknown holder of our key may take to expire. */
export function expiryGraceMs(ttlSeconds: number): number {
  return ttlSeconds * 1000 + 2000;
}

export function decideJoin(
  me: Machine,
  existing: ExistingMember,
  firstSeenAt: number,
  now: number,
  ttlSeconds: number,
): JoinDecision {
  if (existing.record?.runID !== undefined && existing.record.runID === me.runID)
    return { kind: "take-over" };
  if (now - firstSeenAt < expiryGraceMs(ttlSeconds)) {
    return {
      kind: "wait",
      reason:
        "another lease holds this machine's key: an earlier boot's, expiring, or a duplicate machine ID",
    };
  }
  const where = existing.record?.publicIP ? ` at ${existing.record.publicIP}` : "";
  return {
    kind: "refuse",
    message:
      `machine ID ${me.id} is already a live member of the cluster${where} (lease ${existing.lease} kept alive ` +
      `for over ${expiryGraceMs(ttlSeconds) / 1000} s): two machines share this ID. Give this machine its own ` +
      "ID (empty /etc/machine-id and reboot, or set machine-id in the agent config) and start the agent again.",
  };
}
