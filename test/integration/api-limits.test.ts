// The API's bounds over real sockets, with small caps so they are quick to reach: connections per
// listener (TCP and the unix socket each their own), the idle timeout, followed journals (429) and
// names the OS ships (409, through the injected check, and the real check on a directory tree).
// A real etcd stands behind the registry; journalctl is a stand-in.

import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import type http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import tls from "node:tls";
import type { Etcd3 } from "etcd3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JournalOptions, UnitCommands } from "../../agent/api/commands.js";
import { hostUnitCheck } from "../../agent/api/hostunits.js";
import { type ApiServer, createApiServer } from "../../agent/api/server.js";
import { createEtcdClient } from "../../agent/registry/client.js";
import type { ViewFeed } from "../../agent/registry/feed.js";
import { Keys } from "../../agent/registry/keys.js";
import { openRegistry } from "../../agent/registry/open.js";
import { type Etcd, harnessPki, startEtcd } from "../harness/index.js";
import { followOnce, type HttpAnswer, httpRequest, waitFor } from "./support.js";

const M1 = "1".repeat(32);
const TCP_CAP = 6;
const SOCKET_CAP = 3;
const FOLLOWS = 2;
const IDLE_MS = 1_500;
const HELLO = [{ section: "Service", name: "ExecStart", value: "/bin/sleep 1000" }];

/** A journalctl stand-in whose follows stay quiet until the client leaves. */
class QuietCommands implements UnitCommands {
  active = 0;
  async status() {
    return { exitCode: 0, output: "" };
  }
  async journal() {
    return { exitCode: 0, output: "" };
  }
  followJournal(_unit: string, _opts: JournalOptions, signal: AbortSignal): Readable {
    this.active++;
    signal.addEventListener("abort", () => this.active--);
    return Readable.from(
      (async function* () {
        yield "first line\n";
        await new Promise((resolve) => signal.addEventListener("abort", resolve));
      })(),
    );
  }
}

let etcd: Etcd;
let client: Etcd3;
let feed: ViewFeed;
let keys: Keys;
let dir: string;
let socketPath: string;
let server: ApiServer;
let base: string;
const hostChecks: string[] = [];
const commands = new QuietCommands();
const logLines: Record<string, unknown>[] = [];

const request = (method: string, target: string, opts: { body?: string; socketPath?: string } = {}) =>
  httpRequest(method, base, target, { ...opts, headers: { "Content-Type": "application/json" } });

/** A GET that resolves with its status, or with the error when the connection is cut. */
function tryGet(target: string, opts: { socketPath?: string } = {}): Promise<string> {
  return request("GET", target, opts).then(
    (answer: HttpAnswer) => String(answer.status),
    (err: Error) => err.message,
  );
}

function openIdle(count: number, connect: () => net.Socket): Promise<net.Socket[]> {
  return Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Socket>((resolve) => {
          const s = connect();
          s.on("error", () => undefined);
          s.on("connect", () => resolve(s));
          s.on("close", () => resolve(s));
        }),
    ),
  );
}

beforeAll(async () => {
  etcd = await startEtcd();
  client = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
  keys = new Keys(`/api-limits-${randomBytes(4).toString("hex")}/`);
  const opened = openRegistry(client, keys, pino({ level: "silent" }));
  const registry = opened.registry;
  feed = opened.feed;
  await feed.ready();
  dir = mkdtempSync(path.join(tmpdir(), "flotilla-api-limits-"));
  const pki = harnessPki();
  const serverTls = pki.material(pki.machine("api-limits", ["127.0.0.1"], dir));
  socketPath = path.join(dir, "fleet.sock");
  const listener = { headersTimeoutMs: 5_000, requestTimeoutMs: 10_000, idleTimeoutMs: IDLE_MS };
  server = createApiServer({
    registry,
    version: "9.9.9-test",
    log: pino({ level: "info" }, { write: (line: string) => logLines.push(JSON.parse(line)) }),
    isReady: () => true,
    machineID: M1,
    commands,
    isHostUnit: async (name) => {
      hostChecks.push(name);
      return name === "ssh.service" ? "/usr/lib/systemd/system/ssh.service" : undefined;
    },
    limits: {
      tcp: { maxConnections: TCP_CAP, ...listener },
      socket: { maxConnections: SOCKET_CAP, ...listener },
      journalFollows: FOLLOWS,
    },
    tls: serverTls,
  });
  const bound = await server.listen({ socketPath, tcp: "127.0.0.1:0", tls: serverTls });
  base = `https://127.0.0.1:${bound.tcp?.port}`;
  await registry.putUnit({ name: "hello.service", options: HELLO, hash: "", desiredState: "launched" });
  await client
    .put(keys.schedule("hello.service"))
    .value(JSON.stringify({ machineID: M1, at: 0, reason: "" }));
});

afterAll(async () => {
  await server?.close();
  await feed?.stop();
  client?.close();
  await etcd?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("names the OS ships", () => {
  it("are refused with 409 naming the OS's file, and nothing is stored", async () => {
    const answer = await request("PUT", "/fleet/v1/units/ssh.service", {
      body: JSON.stringify({ desiredState: "launched", options: HELLO }),
    });
    expect(answer.status, answer.text).toBe(409);
    expect(JSON.parse(answer.text).error.message).toBe(
      "unit name ssh.service is taken by this machine's OS (/usr/lib/systemd/system/ssh.service): a cluster unit of that name would replace the OS's unit; choose another name",
    );
    expect((await request("GET", "/fleet/v1/units/ssh.service")).status).toBe(404);
    const ok = await request("PUT", "/fleet/v1/units/web.service", {
      body: JSON.stringify({ options: HELLO }),
    });
    expect(ok.status, ok.text).toBe(201);
    expect(hostChecks).toEqual(["ssh.service", "web.service"]);
  });

  it("are found on the unit search path, but not the cluster's own units linked there", async () => {
    const root = mkdtempSync(path.join(tmpdir(), "flotilla-hostunits-"));
    try {
      const [etc, run, lib, own] = ["etc", "run", "lib", "fleet-units"].map((d) => path.join(root, d)) as [
        string,
        string,
        string,
        string,
      ];
      for (const d of [etc, run, lib, own]) mkdirSync(d);
      writeFileSync(path.join(lib, "ssh.service"), "[Service]\n");
      writeFileSync(path.join(lib, "getty@.service"), "[Service]\n");
      symlinkSync("/dev/null", path.join(etc, "masked.service"));
      writeFileSync(path.join(own, "web.service"), "[Service]\n");
      symlinkSync(path.join(own, "web.service"), path.join(run, "web.service"));
      symlinkSync(path.join(own, "gone.service"), path.join(run, "gone.service"));
      const check = hostUnitCheck(own, [etc, run, lib]);
      expect(await check("ssh.service")).toBe(path.join(lib, "ssh.service"));
      expect(await check("getty@tty9.service")).toBe(path.join(lib, "getty@.service"));
      expect(await check("getty@.service")).toBe(path.join(lib, "getty@.service"));
      expect(await check("masked.service")).toBe(path.join(etc, "masked.service"));
      expect(await check("web.service")).toBeUndefined();
      expect(await check("gone.service")).toBeUndefined();
      expect(await check("hello.service")).toBeUndefined();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe("followed journals", () => {
  it(`at most ${FOLLOWS} at once; more get 429 with Retry-After; a slot frees when a client leaves`, async () => {
    const requests: http.ClientRequest[] = [];
    const follow = () => followOnce(base, "/flotilla/v1/units/hello.service/journal?follow=1", requests);
    try {
      const answers = await Promise.all([follow(), follow(), follow()]);
      expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 429]);
      const refused = answers.find((a) => a.status === 429);
      expect(refused?.headers["retry-after"]).toBe("5");
      expect(JSON.parse(refused?.body ?? "").error.message).toBe(
        `too many followed journals on this machine: ${FOLLOWS} at once; try again later, or read it without following`,
      );
      expect(commands.active).toBe(FOLLOWS);
      // A quiet follow outlives the idle timeout: it is a request in flight, not an idle connection.
      await new Promise((r) => setTimeout(r, IDLE_MS + 1_000));
      expect(commands.active).toBe(FOLLOWS);
      requests[0]?.destroy();
      await waitFor("the follow to end", async () => commands.active === FOLLOWS - 1 || undefined, 5_000, 50);
      expect((await follow()).status).toBe(200);
    } finally {
      for (const req of requests) req.destroy();
    }
    await waitFor("every follow to end", async () => commands.active === 0 || undefined, 5_000, 50);
    const warned = logLines.filter((l) => l.refusal === "journal follows");
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, client: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
  });
});

describe("connections", () => {
  it("TCP at its cap refuses more, while the unix socket answers; idle ones close after the idle timeout", async () => {
    const url = new URL(base);
    const flood = await openIdle(TCP_CAP * 5, () => net.connect(Number(url.port), url.hostname));
    try {
      await waitFor(
        "the refused ones to close",
        async () => flood.filter((s) => !s.closed).length <= TCP_CAP || undefined,
        5_000,
        50,
      );
      expect(flood.filter((s) => !s.closed)).toHaveLength(TCP_CAP);
      expect(await tryGet("/flotilla/v1/health")).not.toBe("200");
      expect(await tryGet("/flotilla/v1/health", { socketPath })).toBe("200");
      // Never used, they count as idle and are closed.
      await waitFor(
        "the idle ones to close",
        async () => flood.every((s) => s.closed) || undefined,
        IDLE_MS + 5_000,
        50,
      );
      expect(await tryGet("/flotilla/v1/health")).toBe("200");
    } finally {
      for (const s of flood) s.destroy();
    }
    const warned = logLines.filter((l) => l.refusal === "TCP connections");
    expect(warned.length).toBeGreaterThan(0);
    expect(warned[0]).toMatchObject({
      level: 40,
      listener: "TCP",
      client: expect.stringMatching(/^127\.0\.0\.1:/),
    });
  });

  it("the unix socket has its own cap, and TCP answers while it is full", async () => {
    const flood = await openIdle(SOCKET_CAP * 3, () => net.connect(socketPath));
    try {
      await waitFor(
        "the refused ones to close",
        async () => flood.filter((s) => !s.closed).length <= SOCKET_CAP || undefined,
        5_000,
        50,
      );
      expect(flood.filter((s) => !s.closed)).toHaveLength(SOCKET_CAP);
      expect(await tryGet("/flotilla/v1/health", { socketPath })).not.toBe("200");
      expect(await tryGet("/flotilla/v1/health")).toBe("200");
    } finally {
      for (const s of flood) s.destroy();
    }
    await waitFor(
      "the socket to answer again",
      async () => (await tryGet("/flotilla/v1/health", { socketPath })) === "200" || undefined,
      5_000,
      50,
    );
    expect(logLines.some((l) => l.refusal === "unix socket connections" && l.client === "local")).toBe(true);
  });

  it("a kept-alive connection is closed after the idle timeout", async () => {
    // A raw connection: Node's own client drops a kept-alive socket early on the server's hint.
    const url = new URL(base);
    const socket = tls.connect({ port: Number(url.port), host: url.hostname, ...harnessPki().material() });
    let answer = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      answer += chunk;
    });
    const closed = new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now())));
    await new Promise((resolve) => socket.on("secureConnect", resolve));
    socket.write("GET /flotilla/v1/health HTTP/1.1\r\nHost: test\r\n\r\n");
    await waitFor("the answer", async () => answer.includes('"ok":true') || undefined, 5_000, 20);
    const answeredAt = Date.now();
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(answer).toMatch(/\r\nConnection: keep-alive\r\n/i);
    const idle = (await closed) - answeredAt;
    expect(idle).toBeGreaterThan(IDLE_MS - 200);
    expect(idle).toBeLessThan(IDLE_MS + 3_000);
  });
});
