// The etcd client as the agent uses it: every unary call has a deadline, so an unreachable etcd
// fails fast instead of hanging a reconcile pass, and watches reconnect within seconds.

import { ExponentialBackoff, type IBackoff } from "cockatiel";
import { Etcd3 } from "etcd3";
import { etcdCallPolicy } from "../metrics.js";

export const ETCD_CALL_TIMEOUT_MS = 2000;

export function createEtcdClient(endpoints: string[]): Etcd3 {
  return new Etcd3({
    hosts: endpoints,
    dialTimeout: ETCD_CALL_TIMEOUT_MS,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + ETCD_CALL_TIMEOUT_MS }),
    faultHandling: {
      // No per-host circuit breaker: with it, etcd answering again is ignored for up to 5 s after
      // an outage, and the per-call deadline already bounds how long a dead etcd can hold us up.
      host: () => etcdCallPolicy(),
      // etcd3's typings ask for a backoff instance, but its own default is this factory.
      watchBackoff: new ExponentialBackoff({
        initialDelay: 200,
        maxDelay: 2000,
      }) as unknown as IBackoff<unknown>,
    },
  });
}
