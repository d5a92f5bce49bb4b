// Cluster membership: this machine's record lives under an etcd lease, so it disappears on its
// own when the machine dies. If the lease is lost (etcd outage longer than the TTL), a new one is
// granted once etcd answers again and everything lease-bound is written anew ("rejoined").

import { EventEmitter } from "node:events";
import type { Etcd3, Lease } from "etcd3";
import type { Logger } from "../log.js";
import type { Machine } from "../model.js";
import type { Keys } from "../registry/keys.js";

export interface MembershipEvents {
  rejoined: [];
}

export class Membership extends EventEmitter<MembershipEvents> {
  private lease: Lease | undefined;
  private stopped = false;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private machine: Machine,
    private readonly ttlSeconds: number,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Joins the cluster, retrying until etcd answers. */
  async join(): Promise<void> {
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        await this.register();
        return;
      } catch (err) {
        if (attempt === 1 || attempt % 10 === 0)
          this.log.warn({ err: String(err), attempt }, "cannot join the cluster yet; retrying");
        await sleep(Math.min(1000 * attempt, 5000));
      }
    }
  }

  /** Puts a value under this machine's lease; throws while not a member. */
  async putLeased(key: string, value: string): Promise<void> {
    await this.leased().put(key).value(value).exec();
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
    const lease = this.lease;
    this.lease = undefined;
    if (lease)
      await lease.revoke().catch((err) => this.log.warn({ err: String(err) }, "lease revoke failed"));
  }

  private async register(): Promise<void> {
    const lease = this.client.lease(this.ttlSeconds, { autoKeepAlive: true });
    lease.on("lost", (err) => this.onLost(lease, err));
    await lease.grant();
    await lease.put(this.keys.machine(this.machine.id)).value(JSON.stringify(this.machine)).exec();
    this.lease = lease;
    this.log.info({ machine: this.machine.id, ttl: this.ttlSeconds }, "joined the cluster");
  }

  private onLost(lease: Lease, err: unknown): void {
    if (this.stopped || lease !== this.lease) return;
    this.lease = undefined;
    this.log.warn({ err: String(err) }, "machine lease lost; rejoining when etcd answers");
    lease.release();
    void this.join().then(() => {
      if (!this.stopped) this.emit("rejoined");
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
