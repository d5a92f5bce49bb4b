// Engine election. The leader key is created only if absent, under the candidate's machine lease,
// and held for as long as that lease lives: a dead leader's key expires with its lease, a graceful
// leader's goes with its revoke. Every agent reads the key once and then watches it, so an engine
// pass asks etcd nothing about the leadership: only a vacant key (absent at start, or seen deleted)
// makes an agent campaign, with one transaction. See docs/architecture.md, "Election".

import type { Etcd3, IKeyValue, Lease, Watcher } from "etcd3";
import type { Logger } from "../log.js";
import { MACHINE_ID } from "../model.js";
import type { Keys } from "../registry/keys.js";
import type { Quarantine } from "../registry/quarantine.js";
import { RegistryUnavailableError } from "../registry/registry.js";
import { type Membership, sleep } from "./membership.js";

/**
 * What this machine last saw of the leader key: it holds it (`leader`), another holds it
 * (`follower`), nobody does (`vacant`), or it has not been read yet (`unknown`).
 */
export type LeaderView = "leader" | "follower" | "vacant" | "unknown";

/** The engine's side of the election; a fake stands in for etcd in unit tests. */
export interface Election {
  /** The leadership as last seen, from memory: asks etcd nothing. */
  observed(): LeaderView;
  /** Takes the key if it is vacant (one transaction); whether this machine now leads. */
  campaign(): Promise<boolean>;
}

/** The leader key's value (the holder's machine ID) and the lease it is bound to. */
export interface LeaderKey {
  holder: string;
  lease: string;
}

/**
 * Who leads, seen from machine `me` whose current lease is `myLease`. A key with our machine ID
 * but another lease was written by an earlier run of this agent (crash, restart, lost lease): that
 * engine is gone, so we wait for the key to expire like everyone else.
 */
export function classifyLeader(
  key: LeaderKey | undefined | null,
  me: string,
  myLease: string | undefined,
): LeaderView {
  if (key === null) return "unknown";
  if (key === undefined) return "vacant";
  return key.holder === me && myLease !== undefined && key.lease === myLease ? "leader" : "follower";
}

/**
 * The leader key as last seen, fed by reads and watch events in any order: an observation older
 * than the one kept is ignored, so a late watch event cannot undo a newer read.
 */
export class LeaderKeyState {
  /** null until the first observation. */
  key: LeaderKey | undefined | null = null;
  private revision = 0;

  /** Returns whether the observation was newer and taken. */
  observe(key: LeaderKey | undefined, revision: number): boolean {
    if (this.key !== null && revision <= this.revision) return false;
    this.key = key;
    this.revision = revision;
    return true;
  }
}

export class LeaderElection implements Election {
  private readonly state = new LeaderKeyState();
  private watcher: Watcher | undefined;
  /** This machine's lease when it last campaigned, with its ID; compared with the key's lease. */
  private campaignedWith: { lease: Lease; id: string } | undefined;
  /**
   * The mod revision of a bad value at the key (quarantined): such a key counts as vacant, and a
   * campaign replaces exactly that value. Without this a lease-less value would never expire and
   * the cluster would have no engine again.
   */
  private badValueMod: string | undefined;
  private stopped = false;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private readonly membership: Membership,
    private readonly log: Logger,
    private readonly quarantine?: Quarantine,
  ) {}

  /** Reads the key, then watches it from that revision; retries in the background until etcd answers. */
  start(): void {
    void this.sync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
  }

  observed(): LeaderView {
    return classifyLeader(this.state.key, this.membership.current.id, this.myLeaseID());
  }

  /** Throws RegistryUnavailableError when etcd does not answer, as the registry does. */
  async campaign(): Promise<boolean> {
    const me = this.membership.current.id;
    const key = this.keys.engineLeader();
    let lease: Lease;
    try {
      lease = this.membership.leased();
    } catch {
      return false; // not a member (yet, or again): nothing to bind the key to
    }
    const id = await unavailableOnError(() => lease.grant());
    this.campaignedWith = { lease, id };
    const bad = this.badValueMod;
    const res = await unavailableOnError(() =>
      (bad === undefined ? this.client.if(key, "Create", "==", 0) : this.client.if(key, "Mod", "==", bad))
        .then(lease.put(key).value(me))
        .else(this.client.get(key))
        .commit(),
    );
    const revision = Number(res.header.revision);
    if (res.succeeded) this.observeKey({ holder: me, lease: id }, revision);
    else this.observeKv(res.responses[0]?.response_range?.kvs[0], revision);
    return this.observed() === "leader";
  }

  /** Gives up the leadership if held, so another engine can take over at once. */
  async resign(): Promise<void> {
    const me = this.membership.current.id;
    await this.client
      .if(this.keys.engineLeader(), "Value", "==", me)
      .then(this.client.delete().key(this.keys.engineLeader()))
      .commit();
  }

  /** The ID of the lease we campaigned with, while it is still this machine's lease. */
  private myLeaseID(): string | undefined {
    const mine = this.campaignedWith;
    if (!mine) return undefined;
    try {
      return this.membership.leased() === mine.lease ? mine.id : undefined;
    } catch {
      return undefined;
    }
  }

  private async sync(): Promise<void> {
    const key = this.keys.engineLeader();
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        const res = await this.client.get(key).exec();
        const revision = Number(res.header.revision);
        this.observeKv(res.kvs[0], revision);
        const watcher = await this.client
          .watch()
          .key(key)
          .startRevision(String(revision + 1))
          .create();
        if (this.stopped) {
          await watcher.cancel();
          return;
        }
        watcher.on("put", (kv) => this.observeKv(kv, Number(kv.mod_revision)));
        watcher.on("delete", (kv) => this.observeKv(undefined, Number(kv.mod_revision)));
        // Disconnects resume from the last revision on their own; an error (e.g. the revision was
        // compacted away) ends the watch, so read the key again and watch from there. The ended
        // watcher is dropped, never canceled (docs/architecture.md, "Watches etcd ended").
        watcher.on("error", (err) => {
          this.log.error({ err: String(err) }, "leader-key watch failed; reading the key again");
          if (this.watcher === watcher) this.watcher = undefined;
          void this.sync();
        });
        this.watcher = watcher;
        return;
      } catch (err) {
        if (attempt === 1 || attempt % 10 === 0)
          this.log.warn({ err: String(err), attempt }, "cannot read the engine leader key yet; retrying");
        await sleep(Math.min(1000 * attempt, 5000));
      }
    }
  }

  /** A read or watched value of the key; a bad one is quarantined and counts as vacant. */
  private observeKv(kv: IKeyValue | undefined, revision: number): void {
    const problem = kv && leaderKeyProblem(kv);
    if (!kv || !problem) {
      this.observeKey(kv && leaderKey(kv), revision);
      return;
    }
    if (!this.state.observe(undefined, revision)) return;
    this.badValueMod = kv.mod_revision;
    this.quarantine?.hold(this.keys.engineLeader(), "engine", problem, Number(kv.mod_revision));
  }

  private observeKey(key: LeaderKey | undefined, revision: number): void {
    if (!this.state.observe(key, revision)) return;
    this.badValueMod = undefined;
    this.quarantine?.release(this.keys.engineLeader());
  }
}

/** What is wrong with a leader key's value: it names no machine, or is bound to no lease. */
export function leaderKeyProblem(kv: Pick<IKeyValue, "value" | "lease">): string | undefined {
  const value = kv.value.toString();
  if (!MACHINE_ID.test(value))
    return `want a machine ID (32 lowercase hex characters), got ${JSON.stringify(value.slice(0, 40))}`;
  if (String(kv.lease) === "0") return "bound to no lease, so it would never expire";
  return undefined;
}

async function unavailableOnError<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new RegistryUnavailableError(err);
  }
}

function leaderKey(kv: IKeyValue): LeaderKey {
  return { holder: kv.value.toString(), lease: String(kv.lease) };
}
