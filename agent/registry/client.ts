// The etcd client as the agent uses it: every unary call has a deadline, so an unreachable etcd
// fails fast instead of hanging a reconcile pass, and watches reconnect within seconds.

import { ExponentialBackoff, type IBackoff } from "cockatiel";
import { Etcd3 } from "etcd3";
import { etcdCallPolicy } from "../metrics.js";

export const ETCD_CALL_TIMEOUT_MS = 2000;

/** Client TLS (used for https endpoints) and optional etcd user credentials. */
export interface EtcdSecurity {
  tls?: { ca: Buffer; cert: Buffer; key: Buffer };
  username?: string;
  password?: string;
}

export function createEtcdClient(endpoints: string[], security: EtcdSecurity = {}): Etcd3 {
  const { tls, username, password } = security;
  const secure = endpoints.some((e) => e.startsWith("https:"));
  if (secure && !tls) throw new Error("etcd over https needs the cluster CA, a client certificate and key");
  return new Etcd3({
    hosts: endpoints,
    ...(secure && tls
      ? { credentials: { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key } }
      : {}),
    ...(username ? { auth: { username, password: password ?? "" } } : {}),
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
