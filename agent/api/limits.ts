// Bounds on what clients can hold open: connections per listener, the time a connection may take
// to send its request or sit idle, and the journals followed at once. Applied to a node:http or
// node:https server alike (both are net.Server with http's timeouts), so the listener's transport
// can change without touching this.

import type http from "node:http";
import type https from "node:https";
import type { RefusalLog } from "../refusals.js";

export interface ListenerLimits {
  /** Open connections at once; more are closed as soon as they are accepted. */
  maxConnections: number;
  /** Time from a request's first byte to its last header. */
  headersTimeoutMs: number;
  /** Time from a request's first byte to the end of its body. */
  requestTimeoutMs: number;
  /** A connection with no request in flight (never used, or kept alive after one) is closed after this. */
  idleTimeoutMs: number;
}

/** What the API enforces; the defaults are the agent's (agent/config.ts, docs/security.md). */
export interface ApiLimits {
  tcp: ListenerLimits;
  socket: ListenerLimits;
  /** journalctl --follow processes this agent runs at once; more get 429. */
  journalFollows: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = {
  // Room for every fleetctl and every other agent's proxied status/journal calls.
  tcp: { maxConnections: 1024, headersTimeoutMs: 10_000, requestTimeoutMs: 60_000, idleTimeoutMs: 10_000 },
  // Its own cap: a TCP flood cannot take the local fleetctl's socket with it.
  socket: { maxConnections: 128, headersTimeoutMs: 10_000, requestTimeoutMs: 60_000, idleTimeoutMs: 10_000 },
  // A journalctl --follow takes several MB.
  journalFollows: 16,
};

/**
 * Caps and timeouts on one listener. Answering a request is not bounded here: a followed journal
 * may stay quiet for hours, and the handlers bound their own work. Node checks the header and
 * request timeouts every 30 s (its connectionsCheckingInterval), so they hold to within that.
 */
export function limitListener(
  server: http.Server | https.Server,
  listener: string,
  limits: ListenerLimits,
  refused: RefusalLog,
): void {
  server.maxConnections = limits.maxConnections;
  // The headers are part of the request: a longer header timeout would never fire.
  server.headersTimeout = Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs);
  server.requestTimeout = limits.requestTimeoutMs;
  // Node arms `timeout` on every new connection and `keepAliveTimeout` after each response; a socket
  // timeout with no listener destroys the connection.
  server.timeout = limits.idleTimeoutMs;
  server.keepAliveTimeout = limits.idleTimeoutMs;
  // While a request is answered the connection is not idle, however long the answer is quiet.
  server.on("request", (req: http.IncomingMessage) => req.socket.setTimeout(0));
  server.on("drop", (data?: { remoteAddress?: string; remotePort?: number }) =>
    refused(
      `${listener} connections`,
      { listener, client: clientOf(data) },
      `connection refused: the ${listener} listener already has ${limits.maxConnections} open connections`,
    ),
  );
}

/** At most `max` holders at once: `acquire` returns the release, or undefined when all are taken. */
export function concurrencyLimit(max: number): {
  acquire(): (() => void) | undefined;
  readonly active: number;
} {
  let active = 0;
  return {
    acquire() {
      if (active >= max) return undefined;
      active++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        active--;
      };
    },
    get active() {
      return active;
    },
  };
}

/** The client as logged: `address:port`, or "local" for a unix socket peer (which has no address). */
export function clientOf(socket?: { remoteAddress?: string; remotePort?: number }): string {
  if (socket?.remoteAddress === undefined) return "local";
  return `${socket.remoteAddress}:${socket.remotePort ?? "?"}`;
}
