// DNS over TCP on a real socket, with a small cap and deadline so they are quick to reach: slow
// clients beyond the cap do not block a fresh query, a client that drips a query byte by byte is
// dropped at the deadline, and a client that keeps asking keeps its connection.

import net from "node:net";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceCache } from "../../agent/discovery/cache.js";
import { decodeMessage, encodeMessage, RCODE, TYPE } from "../../agent/discovery/dns.js";
import { type DnsServer, startDnsServer } from "../../agent/discovery/server.js";
import { Keys } from "../../agent/registry/keys.js";
import { waitFor } from "./support.js";

const CAP = 8;
const DEADLINE_MS = 800;
const logLines: Record<string, unknown>[] = [];
let server: DnsServer;

function frame(id: number): Buffer {
  const message = encodeMessage({
    id,
    qr: false,
    opcode: 0,
    aa: false,
    tc: false,
    rd: false,
    ra: false,
    rcode: 0,
    questions: [{ name: "web.service.flotilla", type: TYPE.A, class: 1 }],
    answers: [],
    authority: [],
    additional: [],
  });
  const out = Buffer.alloc(2 + message.length);
  out.writeUInt16BE(message.length, 0);
  message.copy(out, 2);
  return out;
}

/** Sends one query on `socket` and resolves with the answer's id and rcode, or the error. */
function ask(socket: net.Socket, id: number): Promise<string> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => resolve("timeout"), 3_000);
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
        clearTimeout(timer);
        socket.off("data", onData);
        const answer = decodeMessage(got.subarray(2, 2 + got.readUInt16BE(0)));
        resolve(`id ${answer.id} rcode ${answer.rcode}`);
      }
    };
    socket.on("data", onData);
    socket.once("close", () => resolve("closed"));
    socket.write(frame(id));
  });
}

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(server.port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}

beforeAll(async () => {
  server = await startDnsServer({
    address: "127.0.0.1",
    port: 0,
    zone: new ServiceCache(new Keys("/t/")),
    log: pino({ level: "info" }, { write: (line: string) => logLines.push(JSON.parse(line)) }),
    tcpMaxConnections: CAP,
    tcpIdleTimeoutMs: DEADLINE_MS,
  });
});
afterAll(() => server?.close());

describe("DNS over TCP limits", () => {
  it("a fresh query is answered while more slow clients than the cap hold connections", async () => {
    const slow: net.Socket[] = [];
    try {
      for (let i = 0; i < CAP * 3; i++) {
        const s = await connect();
        s.on("error", () => undefined);
        // Half a length prefix of at least 256 bytes: a query that never completes.
        s.write(Buffer.from([1]));
        slow.push(s);
      }
      await waitFor(
        "the oldest to be closed",
        async () => slow.filter((s) => !s.closed).length <= CAP || undefined,
        2_000,
        20,
      );
      // The oldest were closed to make room, the newest are still open.
      expect(slow.slice(0, CAP * 2).every((s) => s.closed)).toBe(true);
      const fresh = await connect();
      expect(await ask(fresh, 7)).toBe(`id 7 rcode ${RCODE.NXDOMAIN}`);
      fresh.destroy();
    } finally {
      for (const s of slow) s.destroy();
    }
    const warned = logLines.filter((l) => l.refusal === "dns tcp connections");
    // Rate-limited: one line for the whole burst.
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, client: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
  });

  it("drops a client that drips its query past the deadline", async () => {
    const s = await connect();
    s.on("error", () => undefined);
    const t0 = Date.now();
    const drip = setInterval(() => s.write(Buffer.from([1])), 100);
    try {
      await waitFor(
        "the dripping client to be dropped",
        async () => s.closed || undefined,
        DEADLINE_MS + 2_000,
        20,
      );
    } finally {
      clearInterval(drip);
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
  });

  it("keeps a connection that asks again within the deadline, and closes it once idle", async () => {
    const s = await connect();
    for (let id = 1; id <= 4; id++) {
      expect(await ask(s, id)).toBe(`id ${id} rcode ${RCODE.NXDOMAIN}`);
      await new Promise((r) => setTimeout(r, DEADLINE_MS / 2));
    }
    // Four questions spread over more than twice the deadline, each answered on the same connection.
    expect(s.closed).toBe(false);
    await waitFor(
      "the idle connection to be closed",
      async () => s.closed || undefined,
      DEADLINE_MS + 2_000,
      20,
    );
  });
});
