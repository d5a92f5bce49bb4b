// The agent's DNS server for the `flotilla` zone: UDP and TCP on one address and port, each query
// answered by the pure `respond` from in-memory records (the watch-fed ServiceCache), so an
// answer never waits on etcd and a slow or unreachable etcd never slows DNS down.

import dgram from "node:dgram";
import net from "node:net";
import type { Logger } from "../log.js";
import { observeDnsReply } from "../metrics.js";
import { type RefusalLog, refusalLog } from "../refusals.js";
import { DEFAULT_TTL, respond, type ZoneData } from "./dns.js";

export interface DnsServerOptions {
  /** Address to bind, e.g. "127.0.0.1", the bridge gateway, or "0.0.0.0". */
  address: string;
  /** 53 in production; 0 picks a free port (the same one for UDP and TCP). */
  port: number;
  zone: ZoneData;
  log: Logger;
  ttl?: number;
  /** Open TCP connections at once; at the cap the one idle longest is closed to make room. */
  tcpMaxConnections?: number;
  /** A TCP connection must deliver a whole query within this after connecting or its last answer. */
  tcpIdleTimeoutMs?: number;
  /** Where refused or evicted TCP clients are reported; default: rate-limited warnings on `log`. */
  refused?: RefusalLog;
}

export interface DnsServer {
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * A TCP client that has not sent a whole query this long after connecting or after its last answer
 * is dropped (RFC 7766 suggests seconds, not minutes). Partial data does not extend it, so a client
 * that drips a byte at a time cannot hold its connection either.
 */
export const DEFAULT_DNS_TCP_IDLE_MS = 5_000;
export const DEFAULT_DNS_TCP_MAX_CONNECTIONS = 256;
const PORT_ATTEMPTS = 5;

export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await bind(opts);
    } catch (err) {
      // With port 0 the UDP port is free but its TCP twin may not be; another pick usually is.
      const retry = opts.port === 0 && (err as NodeJS.ErrnoException).code === "EADDRINUSE";
      if (!retry || attempt >= PORT_ATTEMPTS) throw err;
    }
  }
}

async function bind(opts: DnsServerOptions): Promise<DnsServer> {
  const { zone, log } = opts;
  const ttl = opts.ttl ?? DEFAULT_TTL;
  let queries = 0;
  const answer = (query: Buffer, transport: "udp" | "tcp"): Buffer | undefined => {
    queries = (queries + 1) % 0x7fffffff;
    try {
      return observeDnsReply(respond(query, zone, { transport, ttl, rotate: queries }));
    } catch (err) {
      // respond() does not throw on bad input; this guards the server against a bug in it.
      log.error({ err: String(err) }, "DNS answer failed");
      return undefined;
    }
  };

  const udp = dgram.createSocket(net.isIPv6(opts.address) ? "udp6" : "udp4");
  udp.on("message", (msg, peer) => {
    const reply = answer(msg, "udp");
    if (!reply) return;
    udp.send(reply, peer.port, peer.address, (err) => {
      if (err) log.debug({ err: String(err), peer: peer.address }, "DNS reply not sent");
    });
  });
  await new Promise<void>((resolve, reject) => {
    udp.once("error", reject);
    udp.bind(opts.port, opts.address, () => {
      udp.off("error", reject);
      resolve();
    });
  });
  udp.on("error", (err) => log.warn({ err: String(err) }, "DNS UDP socket error"));
  const port = udp.address().port;

  const maxConnections = opts.tcpMaxConnections ?? DEFAULT_DNS_TCP_MAX_CONNECTIONS;
  const idleMs = opts.tcpIdleTimeoutMs ?? DEFAULT_DNS_TCP_IDLE_MS;
  const refused = opts.refused ?? refusalLog(log);
  // In the order they connected or were last answered: the first has waited longest for a query.
  const connections = new Set<net.Socket>();
  const tcp = net.createServer((socket) => {
    if (connections.size >= maxConnections) {
      // Refusing the newcomer would let a few slow clients shut TCP DNS for everyone; closing the
      // one that has waited longest for a query keeps a fresh client's query answerable.
      const [oldest] = connections;
      if (oldest !== undefined) {
        refused(
          "dns tcp connections",
          { client: `${oldest.remoteAddress}:${oldest.remotePort}`, address: opts.address },
          `DNS TCP connection closed to make room: ${maxConnections} connections were open`,
        );
        connections.delete(oldest);
        oldest.destroy();
      }
    }
    connections.add(socket);
    socket.on("close", () => connections.delete(socket));
    socket.on("error", () => socket.destroy());
    let deadline = setTimeout(() => socket.destroy(), idleMs);
    socket.on("close", () => clearTimeout(deadline));
    let pending = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      // Messages are framed by a 2-byte length and may be pipelined (RFC 7766).
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (pending.length < 2 + length) break;
        const reply = answer(pending.subarray(2, 2 + length), "tcp");
        pending = pending.subarray(2 + length);
        if (!reply) {
          socket.destroy();
          return;
        }
        const frame = Buffer.alloc(2 + reply.length);
        frame.writeUInt16BE(reply.length, 0);
        reply.copy(frame, 2);
        socket.write(frame);
        // Answered: the clock for the next query starts now, and this is the newest connection.
        clearTimeout(deadline);
        deadline = setTimeout(() => socket.destroy(), idleMs);
        connections.delete(socket);
        connections.add(socket);
      }
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen(port, opts.address, () => {
        tcp.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    udp.close();
    throw err;
  }
  tcp.on("error", (err) => log.warn({ err: String(err) }, "DNS TCP server error"));
  log.info({ address: opts.address, port }, "DNS server listening (flotilla zone)");

  return {
    address: opts.address,
    port,
    async close() {
      for (const socket of connections) socket.destroy();
      await Promise.all([
        new Promise<void>((resolve) => udp.close(() => resolve())),
        new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
    },
  };
}
