// Cluster membership: this machine's record lives under an etcd lease, so it disappears on its
// own when the machine dies. The agent keeps it there:
// - joining refuses a machine ID that a live member already holds (identity.ts);
// - if the record is deleted while the lease lives (an operator's `etcdctl del`), it is written
//   again at once, under the same lease;
// - if the lease is lost (revoked, or expired during an etcd outage longer than the TTL), a new one
//   is granted once etcd answers and everything lease-bound is written anew ("rejoined"). Writes
//   under the lost lease stop at once: putLeased throws until the new lease is in place.

import { EventEmitter } from "node:events";
import type { Etcd3, Lease, Watcher } from "etcd3";
import type { Logger } from "../log.js";
import type { Machine } from "../model.js";
import type { Keys } from "../registry/keys.js";
import { bootClockMs } from "./fence-guard.js";
import { decideJoin, type ExistingMember } from "./identity.js";

/** Puts in one transaction: within etcd's default --max-txn-ops (128). */
export const PUT_LEASED_TXN_MAX = 100;

export interface MembershipEvents {
  rejoined: [];
  /** etcd answered, at `revision`, a grant or keep-alive of the current lease sent at `sentAtMs` (boot clock). */
  renewed: [sentAtMs: number, revision: number];
  /** etcd said the current lease is gone (expired or revoked). */
  leaseLost: [];
  /** Rejoining found the machine ID held by another live machine. */
  duplicate: [DuplicateMachineError];
}

/** Another live machine has this machine's ID: the agent must not join (exit code 3). */
export class DuplicateMachineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DuplicateMachineError";
  }
}

export class Membership extends EventEmitter<MembershipEvents> {
  private lease: Lease | undefined;
  private stopped = false;
  private watcher: Watcher | undefined;
  private keepAliveTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private machine: Machine,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Joins the cluster, retrying until etcd answers. Rejects with DuplicateMachineError only. */
  async join(): Promise<void> {
    let firstConflictAt: number | undefined;
    let replace: ExistingMember | undefined;
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        const conflict = await this.register(replace);
        replace = undefined;
        if (conflict === "joined") break;
        if (conflict === "vanished") continue;
        firstConflictAt ??= Date.now();
        const decision = decideJoin(this.machine, conflict, firstConflictAt, Date.now(), this.ttlSeconds);
        if (decision.kind === "refuse") throw new DuplicateMachineError(decision.message);
        if (decision.kind === "take-over") {
          replace = conflict;
          continue;
        }
        if (attempt === 1) this.log.warn({ lease: conflict.lease }, decision.reason);
        await sleep(500);
      } catch (err) {
        if (err instanceof DuplicateMachineError) throw err;
        if (attempt === 1 || attempt % 10 === 0)
          this.log.warn({ err: String(err), attempt }, "cannot join the cluster yet; retrying");
        await sleep(Math.min(1000 * attempt, 5000));
      }
    }
    await this.watchOwnKey();
  }

  /**
   * Puts values under this machine's lease, up to PUT_LEASED_TXN_MAX to a transaction (one etcd
   * request and one watch event per agent, however many units changed at once). Throws while not
   * a member, or when the machine key is no longer under this lease (a rejoin is under way).
   */
  async putLeased(entries: readonly (readonly [key: string, value: string])[]): Promise<void> {
    if (entries.length === 0) return;
    const lease = this.leased();
    const id = await lease.grant();
    for (let i = 0; i < entries.length; i += PUT_LEASED_TXN_MAX) {
      const puts = entries.slice(i, i + PUT_LEASED_TXN_MAX).map(([k, v]) => lease.put(k).value(v));
      const txn = await this.client
        .if(this.keys.machine(this.machine.id), "Lease", "==", id)
        .then(...puts)
        .commit();
      if (!txn.succeeded) throw new Error("this machine's key is not under its lease; rejoining");
    }
  }

  /** This machine's lease (for leader-key transactions). */
  leased(): Lease {
    if (!this.lease) throw new Error("not a cluster member yet");
    return this.lease;
  }

  get current(): Machine {
    return this.machine;
  }

  /** Leaves at once: revoking the lease deletes every key bound to it. */
  async leave(): Promise<void> {
    this.stopped = true;
    clearInterval(this.keepAliveTimer);
    const lease = this.lease;
    this.lease = undefined;
    const watcher = this.watcher;
    this.watcher = undefined;
    await watcher?.cancel().catch(() => undefined);
    if (lease)
      await lease.revoke().catch((err) => this.log.warn({ err: String(err) }, "lease revoke failed"));
  }

  /**
   * Grants a lease and creates the machine key under it if the key is free, or takes it over from
   * `replace` (an earlier run of this agent) if it is unchanged since read. Otherwise revokes the
   * new lease and returns who holds the key.
   */
  private async register(replace?: ExistingMember): Promise<ExistingMember | "joined" | "vanished"> {
    const key = this.keys.machine(this.machine.id);
    const sentAt = bootClockMs();
    const lease = this.client.lease(this.ttlSeconds, { autoKeepAlive: false });
    lease.on("lost", (err) => this.onLost(lease, err));
    let joinedAt: number;
    try {
      await lease.grant();
      const res = await this.client
        .if(key, "Mod", "==", replace?.modRevision ?? 0)
        .then(lease.put(key).value(JSON.stringify(this.machine)))
        .else(this.client.get(key))
        .commit();
      if (!res.succeeded) {
        const kv = res.responses[0]?.response_range?.kvs[0];
        lease.release();
        await lease.revoke().catch(() => undefined);
        // Gone between the compare and the read: try again at once.
        if (kv === undefined) return "vanished";
        return {
          record: parseMachine(kv.value.toString()),
          lease: String(kv.lease),
          modRevision: String(kv.mod_revision),
        };
      }
      joinedAt = Number(res.header.revision);
    } catch (err) {
      lease.release();
      throw err;
    }
    this.lease = lease;
    this.keepAlive(lease);
    this.emit("renewed", sentAt, joinedAt);
    // Taking over from an earlier run moves the machine key to the new lease, so the machine never
    // disappears; that run's lease keeps what it alone wrote (its engine leadership, states not
    // yet written again) until it expires, as fleet's restarted agents did.
    if (replace !== undefined)
      this.log.info({ lease: replace.lease }, "took over from this agent's earlier run");
    this.log.info({ machine: this.machine.id, ttl: this.ttlSeconds }, "joined the cluster");
    return "joined";
  }

  /**
   * One keep-alive every TTL/3 (as etcd's Go client), each on a stream of its own with a deadline of
   * one TTL, not waiting for the last: a stalled one does not delay the next. An answer with TTL 0
   * (the lease is gone) makes the lease emit "lost".
   */
  private keepAlive(lease: Lease): void {
    clearInterval(this.keepAliveTimer);
    const ttlMs = this.ttlSeconds * 1000;
    this.keepAliveTimer = setInterval(() => {
      if (this.lease !== lease) return;
      const sentAt = bootClockMs();
      lease.keepaliveOnce({ deadline: Date.now() + ttlMs }).then(
        (res) => {
          if (this.lease === lease) this.emit("renewed", sentAt, Number(res.header.revision));
        },
        (err: unknown) => this.log.debug({ err: String(err) }, "lease keep-alive failed"),
      );
    }, ttlMs / 3);
  }

  /** Writes the machine key again if it is deleted while our lease lives. */
  private async watchOwnKey(): Promise<void> {
    if (this.watcher !== undefined || this.stopped) return;
    const key = this.keys.machine(this.machine.id);
    let watcher: Watcher;
    try {
      watcher = await this.client.watch().key(key).create();
    } catch (err) {
      this.log.error(
        { err: String(err) },
        "cannot watch this machine's key; a deleted key heals only on rejoin",
      );
      return;
    }
    this.watcher = watcher;
    watcher.on("delete", () => void this.restoreKey(key));
    // etcd ends a watch it cannot resume (its revision was compacted during an outage). The ended
    // watcher is dropped, never canceled (docs/architecture.md, "Watches etcd ended"); a new one
    // watches from now, and the key, which may have gone meanwhile, is written again if missing.
    watcher.on("error", (err) => {
      if (this.watcher !== watcher) return;
      this.watcher = undefined;
      this.log.warn({ err: String(err) }, "etcd ended the watch on this machine's key; watching it again");
      void this.watchOwnKey().then(() => this.restoreKey(key));
    });
  }

  private async restoreKey(key: string): Promise<void> {
    const lease = this.lease;
    if (this.stopped || lease === undefined) return;
    try {
      const res = await this.client
        .if(key, "Create", "==", 0)
        .then(lease.put(key).value(JSON.stringify(this.machine)))
        .commit();
      if (res.succeeded) this.log.warn({ key }, "this machine's key was deleted; wrote it again");
    } catch (err) {
      // etcd unreachable: the lease keep-alive decides; if the lease is lost, rejoining writes the key.
      this.log.warn({ err: String(err) }, "cannot restore this machine's key yet");
    }
  }

  private onLost(lease: Lease, err: unknown): void {
    if (this.stopped || lease !== this.lease) return;
    this.lease = undefined;
    clearInterval(this.keepAliveTimer);
    this.emit("leaseLost");
    this.log.warn({ err: String(err) }, "machine lease lost; rejoining when etcd answers");
    lease.release();
    this.join().then(
      () => {
        if (!this.stopped) this.emit("rejoined");
      },
      (joinErr: unknown) => {
        if (joinErr instanceof DuplicateMachineError) this.emit("duplicate", joinErr);
      },
    );
  }
}

function parseMachine(raw: string): Machine | undefined {
  try {
    const v = JSON.parse(raw) as unknown;
    if (typeof v !== "object" || v === null) return undefined;
    const m = v as Record<string, unknown>;
    if (typeof m.id !== "string" || typeof m.publicIP !== "string") return undefined;
    return {
      id: m.id,
      publicIP: m.publicIP,
      metadata: {},
      version: typeof m.version === "string" ? m.version : "",
      ...(typeof m.runID === "string" ? { runID: m.runID } : {}),
    };
  } catch {
    return undefined;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
