// Engine election: the leader key is created only if absent, under the candidate's machine
// lease. A dead leader's key expires with its lease; a graceful leader's goes with its revoke.

import type { Etcd3 } from "etcd3";
import type { Keys } from "../registry/keys.js";
import type { Membership } from "./membership.js";

export class LeaderElection {
  constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private readonly membership: Membership,
  ) {}

  /** Takes the leadership if it is free; returns whether this machine now leads. */
  async campaign(): Promise<boolean> {
    const me = this.membership.current.id;
    const key = this.keys.engineLeader();
    const lease = this.membership.leased();
    const res = await this.client
      .if(key, "Create", "==", 0)
      .then(lease.put(key).value(me))
      .else(this.client.get(key))
      .commit();
    if (res.succeeded) return true;
    // A key with our machine ID but another lease was written by an earlier run of this agent
    // (crash, restart, lost lease): that engine is gone, so wait for the key to expire like everyone.
    const holder = res.responses[0]?.response_range?.kvs[0];
    return holder?.value.toString() === me && holder.lease === (await lease.grant());
  }

  async currentLeader(): Promise<string | undefined> {
    return (await this.client.get(this.keys.engineLeader()).string()) ?? undefined;
  }

  /** Gives up the leadership if held, so another engine can take over at once. */
  async resign(): Promise<void> {
    const me = this.membership.current.id;
    await this.client
      .if(this.keys.engineLeader(), "Value", "==", me)
      .then(this.client.delete().key(this.keys.engineLeader()))
      .commit();
  }
}
