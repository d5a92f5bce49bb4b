// The reboot semaphore: per group, at most `maxHolders` holders under
// `update/groups/<group>/holders/`, each key bound to a lease of its own.
//
// Why it looks like this (locksmith and Airlock kept the holder list in one value, so a holder
// that died held its slot forever; docs/updates.md):
// - A holder's key lives on a dedicated lease (TTL `leaseSeconds`, 900 s by default, longer than a
//   reboot), so a holder that never comes back frees its slot by itself, and one that reboots
//   keeps it by keeping the same lease alive: the lease ID is stored on disk, and `keepAlive`
//   takes a bare ID because etcd3's `Lease` can only be created by granting a new one.
// - etcd cannot count keys inside a transaction, so an acquisition reads the group at one revision
//   and commits only if `seq` (bumped by every acquisition) and the config are unchanged and the
//   holder's key does not exist. Two acquirers racing for the last slot both read the same `seq`
//   version; only the first commit matches it. Releases and expiries do not bump `seq`: they only
//   free slots, so missing one merely makes an acquirer wait for its next attempt.
// - The group config is read on every acquisition, so a new `maxHolders` applies at once
//   (Airlock read it only when creating its semaphore, coreos/airlock#81).

import type { Etcd3, IKeyValue, ILeaseKeepAliveResponse } from "etcd3";
import { ETCD_CALL_TIMEOUT_MS } from "../registry/client.js";
import type { Keys } from "../registry/keys.js";
import { RegistryUnavailableError } from "../registry/registry.js";
import { type GroupConfig, type HolderRecord, parseGroupConfig } from "./records.js";

export const DEFAULT_REBOOT_LEASE_SECONDS = 900;

/** Each failed commit means another acquirer succeeded or the config changed; this bounds a storm. */
const MAX_ATTEMPTS = 100;

export interface AcquireResult {
  acquired: boolean;
  /** The holder's lease when acquired: keep it alive until the update is blessed. */
  leaseId?: string;
  /** The group's holder IDs after this attempt, sorted. */
  holders: string[];
  maxHolders: number;
  /** Why not acquired. */
  reason?: "full" | "paused";
}

/** One group as read at one revision. */
export interface GroupView {
  config: GroupConfig;
  /** Sorted by holder ID. */
  holders: HolderRecord[];
}

interface ReadView extends GroupView {
  seqVersion: number;
  configMod: number;
}

export class RebootLock {
  private readonly leaseSeconds: number;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    opts: { leaseSeconds?: number } = {},
  ) {
    this.leaseSeconds = opts.leaseSeconds ?? DEFAULT_REBOOT_LEASE_SECONDS;
    if (!Number.isInteger(this.leaseSeconds) || this.leaseSeconds < 2) {
      throw new Error(`reboot lease must be a whole number of seconds ≥ 2, got ${this.leaseSeconds}`);
    }
  }

  /**
   * Takes a slot of `group` for `holderId`. Idempotent: a holder that already has a slot gets it
   * again with the same lease, which is refreshed, so a FleetLock client that repeats pre-reboot
   * extends its hold. A paused group grants no new slot.
   */
  async acquire(group: string, holderId: string, meta: { machineId?: string } = {}): Promise<AcquireResult> {
    // Granted at most once per call, when a slot looks free; revoked unless a commit used it.
    let unused: string | undefined;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const view = await this.read(group);
        const ids = view.holders.map((h) => h.holder);
        const result = (acquired: boolean, extra: Partial<AcquireResult>): AcquireResult => ({
          acquired,
          holders: ids,
          maxHolders: view.config.maxHolders,
          ...extra,
        });
        const mine = view.holders.find((h) => h.holder === holderId);
        if (mine) {
          if (mine.leaseId === "0" || (await this.keepAlive(mine.leaseId))) {
            return result(true, { leaseId: mine.leaseId });
          }
          continue; // The lease expired since the read, and the key with it.
        }
        if (view.config.paused) return result(false, { reason: "paused" });
        if (view.holders.length >= view.config.maxHolders) return result(false, { reason: "full" });
        unused ??= await this.grant();
        const leaseId = unused;
        const record: HolderRecord = {
          holder: holderId,
          ...(meta.machineId ? { machineId: meta.machineId } : {}),
          since: new Date().toISOString(),
          leaseId,
        };
        const holderKey = this.keys.updateHolder(group, holderId);
        const seqKey = this.keys.updateGroupSeq(group);
        const txn = await this.call(() =>
          this.client
            .if(seqKey, "Version", "==", view.seqVersion)
            .and(this.keys.updateGroupConfig(group), "Mod", "==", view.configMod)
            .and(holderKey, "Create", "==", 0)
            .then(
              this.client.put(holderKey).value(JSON.stringify(record)).lease(leaseId),
              this.client.put(seqKey).value(String(view.seqVersion + 1)),
            )
            .commit(),
        );
        if (txn.succeeded) {
          unused = undefined;
          return { ...result(true, { leaseId }), holders: [...ids, holderId].sort(compare) };
        }
      }
      throw new RegistryUnavailableError(
        new Error(`could not commit a slot of group ${group} in ${MAX_ATTEMPTS} attempts`),
      );
    } finally {
      if (unused !== undefined) await this.revoke(unused).catch(() => undefined);
    }
  }

  /**
   * Frees `holderId`'s slot by revoking its lease (which deletes the key with it), so a holder
   * still keeping the lease alive learns from `keepAlive` that it lost the slot. Returns false
   * when it held none. Used for a normal release and for an operator's release of a stuck holder.
   */
  async release(group: string, holderId: string): Promise<boolean> {
    const key = this.keys.updateHolder(group, holderId);
    const res = await this.call(() => this.client.get(key).exec());
    const kv = res.kvs[0];
    if (!kv) return false;
    if (kv.lease !== "0") await this.revoke(kv.lease);
    // A key without a lease can only have been written by hand.
    else await this.call(() => this.client.delete().key(key).exec());
    return true;
  }

  async view(group: string): Promise<GroupView> {
    const { config, holders } = await this.read(group);
    return { config, holders };
  }

  /**
   * One keepalive for `leaseId`, which may have been granted before a reboot. True while the
   * lease lives; false once it has expired or been revoked (the slot is gone). The caller repeats
   * it well within the TTL (a third of it, like the machine lease).
   */
  async keepAlive(leaseId: string): Promise<boolean> {
    const res = await this.call(async () => {
      const stream = await this.client.leaseClient.leaseKeepAlive();
      try {
        return await new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`no keepalive answer within ${ETCD_CALL_TIMEOUT_MS} ms`)),
            ETCD_CALL_TIMEOUT_MS,
          );
          stream.on("data", (r: ILeaseKeepAliveResponse) => {
            clearTimeout(timer);
            resolve(r);
          });
          stream.on("error", (err: Error) => {
            clearTimeout(timer);
            reject(err);
          });
          stream.write({ ID: leaseId });
        });
      } finally {
        stream.end();
      }
    });
    // etcd answers a keepalive for an unknown lease with TTL 0 rather than an error.
    return Number(res.TTL) > 0;
  }

  private async read(group: string): Promise<ReadView> {
    const res = await this.call(() => this.client.getAll().prefix(this.keys.updateGroup(group)).exec());
    const holdersPrefix = this.keys.updateHolders(group);
    let configKv: IKeyValue | undefined;
    let seqVersion = 0;
    const holders: HolderRecord[] = [];
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      if (key === this.keys.updateGroupConfig(group)) configKv = kv;
      else if (key === this.keys.updateGroupSeq(group)) seqVersion = Number(kv.version);
      else if (key.startsWith(holdersPrefix)) holders.push(parseHolder(key.slice(holdersPrefix.length), kv));
    }
    holders.sort((a, b) => compare(a.holder, b.holder));
    return {
      config: parseGroupConfig(configKv?.value.toString()),
      holders,
      seqVersion,
      configMod: configKv ? Number(configKv.mod_revision) : 0,
    };
  }

  private async grant(): Promise<string> {
    const res = await this.call(() => this.client.leaseClient.leaseGrant({ TTL: this.leaseSeconds, ID: 0 }));
    return res.ID;
  }

  private async revoke(leaseId: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: leaseId });
    } catch (err) {
      // Already expired or revoked: its keys are gone, which is what revoking wanted.
      if (err instanceof Error && /lease not found/.test(err.message)) return;
      throw new RegistryUnavailableError(err);
    }
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new RegistryUnavailableError(err);
    }
  }
}

/**
 * A holder key as a record. The key's own lease is authoritative over the value's copy, and a
 * corrupt value still holds its slot (named by its key), so hand-editing never frees a slot.
 */
export function parseHolder(id: string, kv: IKeyValue): HolderRecord {
  let parsed: Partial<HolderRecord> = {};
  try {
    parsed = JSON.parse(kv.value.toString()) as Partial<HolderRecord>;
  } catch {
    // Keep the defaults below.
  }
  return {
    holder: id,
    ...(typeof parsed.machineId === "string" ? { machineId: parsed.machineId } : {}),
    since: typeof parsed.since === "string" ? parsed.since : "",
    leaseId: kv.lease,
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
