// The probes of "bounded inputs everywhere", against a real agent on a real nspawn machine with
// real systemd, journalctl and etcd: names systemd refuses, names the OS ships, control characters,
// 1 MB units, a flood of idle TCP connections, more followed journals than the cap, and slow
// DNS-over-TCP clients. Each gets its refusal, nothing stored is lost, and the agent stays healthy.

import type http from "node:http";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_API_LIMITS } from "../../agent/api/limits.js";
import { decodeMessage, encodeMessage, RCODE, TYPE } from "../../agent/discovery/dns.js";
import { DEFAULT_DNS_TCP_MAX_CONNECTIONS } from "../../agent/discovery/server.js";
import { Cluster, harnessPki, type Machine } from "../harness/index.js";
import { EtcdView, followOnce, type HttpAnswer, httpRequest, waitFor } from "./support.js";

const TCP_CAP = DEFAULT_API_LIMITS.tcp.maxConnections;
const FOLLOW_CAP = DEFAULT_API_LIMITS.journalFollows;
/** Idle TCP connections opened in all (refused ones are closed at once, so few are open at a time). */
const FLOOD = 20_000;
/** Long enough for the checks below to run while the flood holds the cap, short enough to wait out. */
const IDLE_MS = 30_000;
const HELLO = [
  { section: "Service", name: "ExecStart", value: "/bin/sh -c 'while true; do echo tick; sleep 1; done'" },
];

let cluster: Cluster;
let machine: Machine;
let etcd: EtcdView;
let api: string;

const request = (method: string, target: string, body?: unknown): Promise<HttpAnswer> =>
  httpRequest(method, api, target, {
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    headers: { "Content-Type": "application/json" },
  });

const putUnit = (name: string, body: unknown) =>
  request("PUT", `/fleet/v1/units/${encodeURIComponent(name)}`, body);

function errorMessage(answer: HttpAnswer): string {
  return (JSON.parse(answer.text) as { error: { message: string } }).error.message;
}

async function expectHealthy(): Promise<void> {
  const health = await request("GET", "/flotilla/v1/health");
  expect(health.status, health.text).toBe(200);
  expect(JSON.parse(health.text)).toMatchObject({ ok: true, machineID: machine.id });
}

/** GET /flotilla/v1/health on the machine's unix socket, from inside the machine. */
async function socketHealth(): Promise<string> {
  const script = `require("http").get({socketPath:"/var/run/fleet.sock",path:"/flotilla/v1/health"},r=>{let t="";r.on("data",c=>t+=c);r.on("end",()=>console.log(r.statusCode,t))}).on("error",e=>{console.log("error",e.message);process.exit(1)})`;
  const r = await machine.exec(["/usr/lib/flotilla/node", "-e", script], { timeoutMs: 15_000 });
  return r.stdout.trim();
}

async function agentRssKiB(): Promise<number> {
  const pid = (
    await machine.exec(["systemctl", "show", "-P", "MainPID", "flotilla-agent.service"])
  ).stdout.trim();
  const status = (await machine.exec(["cat", `/proc/${pid}/status`])).stdout;
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

beforeAll(async () => {
  cluster = await Cluster.start({
    machines: 1,
    agentEnv: { FLOTILLA_API_IDLE_TIMEOUT_MS: String(IDLE_MS) },
  });
  machine = cluster.machines[0] as Machine;
  api = machine.apiURL;
  etcd = new EtcdView(cluster.endpoint);
  await waitFor(
    "the agent's API",
    async () => (await request("GET", "/flotilla/v1/health")).status === 200,
    60_000,
  );
  await waitFor("an engine leader", async () => (await etcd.leader()) !== undefined, 30_000);
  const put = await putUnit("hello.service", { desiredState: "launched", options: HELLO });
  expect(put.status, put.text).toBe(201);
  await waitFor("hello.service active", () => etcd.activeOn("hello.service"), 60_000);
}, 240_000);

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

describe("unit names", () => {
  it.each([
    [".service", 'unit name has nothing before ".service"'],
    ["x.busname", 'invalid unit type "busname": busname units were removed from systemd'],
    [`${"a".repeat(248)}.service`, "unit name exceeds maximum length (255 bytes, got 256)"],
    ["x.scope", /^invalid unit type "scope": scope units are created by programs/],
  ])("refuses %j with 400 naming the rule", async (name, message) => {
    const answer = await putUnit(name, { desiredState: "launched", options: HELLO });
    expect(answer.status, answer.text).toBe(400);
    expect(errorMessage(answer)).toMatch(message);
    expect((await request("GET", `/fleet/v1/units/${encodeURIComponent(name)}`)).status).toBe(404);
  });

  it.each([
    ["systemd-journald.service", "/usr/lib/systemd/system/systemd-journald.service"],
    ["ssh.service", "/usr/lib/systemd/system/ssh.service"],
    ["getty@tty9.service", "/usr/lib/systemd/system/getty@.service"],
  ])("refuses %s, which the OS ships, with 409", async (name, file) => {
    const answer = await putUnit(name, { desiredState: "launched", options: HELLO });
    expect(answer.status, answer.text).toBe(409);
    expect(errorMessage(answer)).toContain(`is taken by this machine's OS (${file})`);
    expect((await request("GET", `/fleet/v1/units/${encodeURIComponent(name)}`)).status).toBe(404);
    // The OS's own unit is untouched (systemd names /usr/lib through the /lib link).
    const state = await machine.exec(["systemctl", "show", "-P", "FragmentPath", name]);
    expect(state.stdout.trim()).toMatch(new RegExp(`^(/usr)?/lib/systemd/system/${path.basename(file)}$`));
  });
});

describe("control characters", () => {
  it.each([
    ["\r", "'\\r' (U+000D)"],
    ["\0", "'\\x00' (U+0000)"],
    ["\x1b", "'\\x1b' (U+001B)"],
  ])("refuses %j in an option value with 400, and nothing is stored or run", async (char, shown) => {
    const value = `/bin/sleep 1000${char}ExecStartPre=/bin/touch /tmp/hidden-directive`;
    const answer = await putUnit("hidden.service", {
      desiredState: "launched",
      options: [{ section: "Service", name: "ExecStart", value }],
    });
    expect(answer.status, answer.text).toBe(400);
    expect(errorMessage(answer)).toBe(
      `invalid unit options: options[0].value: control character ${shown} is not allowed in a unit`,
    );
    expect((await request("GET", "/fleet/v1/units/hidden.service")).status).toBe(404);
    expect((await machine.exec(["test", "-e", "/tmp/hidden-directive"])).code).not.toBe(0);
  });

  it("refuses one in an option name or section", async () => {
    const answer = await putUnit("hidden.service", {
      options: [{ section: "Service", name: "Exec\tStart", value: "/bin/true" }],
    });
    expect(answer.status).toBe(400);
    expect(errorMessage(answer)).toContain("options[0].name: control character '\\t' (U+0009)");
  });
});

describe("oversized units", () => {
  it("refuses five 1 MB units with 413 and the cluster keeps working, RSS flat", async () => {
    const before = await agentRssKiB();
    // Just under 1 MiB each: two with long lines, three with thousands of Conflicts patterns (what
    // fed the glob cache before).
    const lines = Array.from({ length: 520 }, (_, i) => ({
      section: "Service",
      name: "Environment",
      value: `V${i}=${"x".repeat(1900)}`,
    }));
    const conflicts = (seed: number) =>
      Array.from({ length: 400 }, (_, i) => ({
        section: "X-Fleet",
        name: "Conflicts",
        value: Array.from({ length: 90 }, (_, j) => `u${seed}-${i}-${j}-*[a-z]?.service`).join(" "),
      }));
    const bodies = [lines, lines, conflicts(1), conflicts(2), conflicts(3)];
    for (const [i, options] of bodies.entries()) {
      const body = { desiredState: "launched", options: [...HELLO, ...options] };
      const size = Buffer.byteLength(JSON.stringify(body));
      expect(size).toBeGreaterThan(900_000);
      expect(size).toBeLessThan(1024 * 1024);
      const answer = await putUnit(`big-${i}.service`, body);
      expect(answer.status, answer.text).toBe(413);
      expect(errorMessage(answer)).toBe(
        "request body is larger than the limit of 524288 bytes for a unit (a unit file may have at most 65536 bytes)",
      );
    }
    // The same refusal for a body sent chunked (no Content-Length): it is cut off at the cap.
    const chunked = JSON.stringify({ desiredState: "launched", options: [...HELLO, ...lines] });
    const chunks = Array.from({ length: Math.ceil(chunked.length / 65536) }, (_, i) =>
      chunked.slice(i * 65536, (i + 1) * 65536),
    );
    const cut = await httpRequest("PUT", api, "/fleet/v1/units/big-chunked.service", {
      body: chunks,
      headers: { "Content-Type": "application/json" },
    });
    expect(cut.status, cut.text).toBe(413);
    expect(cut.headers.connection).toBe("close");
    expect(errorMessage(cut)).toBe(
      "request body is larger than the limit of 524288 bytes for a unit (a unit file may have at most 65536 bytes)",
    );
    // A body within the limit whose unit is over 64 KiB is refused by the unit's own cap.
    const answer = await putUnit("big.service", { options: [...HELLO, ...lines.slice(0, 100)] });
    expect(answer.status, answer.text).toBe(413);
    expect(errorMessage(answer)).toMatch(
      /^unit is too large: \d+ bytes as a unit file, at most 65536 \(64 KiB\)$/,
    );
    await expectHealthy();
    const list = JSON.parse((await request("GET", "/fleet/v1/units")).text) as { units: { name: string }[] };
    expect(list.units.map((u) => u.name)).toEqual(["hello.service"]);
    // The cluster still places and starts a unit.
    expect((await putUnit("after.service", { desiredState: "launched", options: HELLO })).status).toBe(201);
    await waitFor("after.service active", () => etcd.activeOn("after.service"), 60_000);
    const after = await agentRssKiB();
    console.log(`agent RSS before five refused 1 MB PUTs: ${before} KiB, after: ${after} KiB`);
    expect(after).toBeLessThan(before * 1.3);
    const log = await machine.journal("flotilla-agent.service", 2000);
    expect(log).toMatch(
      /"refusal":"oversized requests".*"msg":"request refused: request body is larger than the limit/,
    );
  }, 120_000);
});

describe("a body declared over the cap", () => {
  it("is refused from its header, before any of it is sent, and the answer is not lost", async () => {
    const url = new URL(api);
    // Headers only: the Content-Length promises 1 MiB that never comes. Reading the body first
    // would wait for it until the request timeout; the 413 comes at once.
    const answer = await new Promise<{ status: number; text: string; connection?: string }>(
      (resolve, reject) => {
        const req = https.request({
          ...harnessPki().material(),
          host: url.hostname,
          port: url.port,
          method: "PUT",
          path: "/fleet/v1/units/declared.service",
          agent: false,
          headers: { "Content-Type": "application/json", "Content-Length": String(1024 * 1024) },
        });
        req.on("error", reject);
        req.on("response", (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () => {
            resolve({ status: res.statusCode ?? 0, text, connection: res.headers.connection });
            req.destroy();
          });
        });
        req.flushHeaders();
        setTimeout(() => reject(new Error("no answer within 5 s: the body was waited for")), 5000).unref();
      },
    );
    expect(answer.status, answer.text).toBe(413);
    expect(answer.connection).toBe("close");
    expect((JSON.parse(answer.text) as { error: { message: string } }).error.message).toBe(
      "request body is larger than the limit of 524288 bytes for a unit (a unit file may have at most 65536 bytes)",
    );
    // 50 whole 1 MB bodies, sent by a client that writes all of it before it reads: every one
    // gets its 413 (none is lost to a reset), nothing is stored, the agent stays healthy.
    const body = "x".repeat(1024 * 1024);
    for (let i = 0; i < 50; i++) {
      const put = await httpRequest("PUT", api, `/fleet/v1/units/declared-${i}.service`, {
        body,
        headers: { "Content-Type": "application/json" },
      });
      expect(put.status, put.text).toBe(413);
    }
    await expectHealthy();
    const list = JSON.parse((await request("GET", "/fleet/v1/units")).text) as { units: { name: string }[] };
    expect(list.units.map((u) => u.name).filter((n) => n.startsWith("declared"))).toEqual([]);
  }, 60_000);
});

describe("a flood of idle TCP connections", () => {
  /** Opens `count` connections, `batch` at a time (so the listen backlog never overflows). */
  async function connectMany(count: number, batch: number, into: net.Socket[]): Promise<void> {
    const url = new URL(api);
    for (let done = 0; done < count; done += batch) {
      await Promise.all(
        Array.from(
          { length: Math.min(batch, count - done) },
          () =>
            new Promise<void>((resolve) => {
              const s = net.connect(Number(url.port), url.hostname);
              into.push(s);
              s.on("connect", () => resolve());
              s.on("error", () => resolve());
              s.on("close", () => resolve());
            }),
        ),
      );
    }
  }
  /**
   * Connections the agent holds on its TCP API port, as the machine's kernel sees them. (The test's
   * own view can differ: a connection dropped from an overflowing listen backlog looks open to the
   * client forever, though the agent never saw it.)
   */
  const held = async (): Promise<number> => {
    const r = await machine.exec(["ss", "-Htn", "state", "established", "( sport = :7480 )"]);
    return r.stdout.split("\n").filter(Boolean).length;
  };

  it(`holds the TCP listener at its cap (${TCP_CAP}); the unix socket still answers; idle ones are closed`, async () => {
    const url = new URL(api);
    const sockets: net.Socket[] = [];
    try {
      const t0 = Date.now();
      await connectMany(TCP_CAP + 100, 100, sockets);
      // Refused connections are closed at once: the agent holds exactly its cap.
      await waitFor(
        "refused connections to be closed",
        async () => (await held()) <= TCP_CAP || undefined,
        10_000,
        50,
      );
      expect(await held()).toBe(TCP_CAP);
      // The rest of the flood: every one of these is refused, and the cap still holds.
      await connectMany(FLOOD - sockets.length, 500, sockets);
      await waitFor(
        "refused connections to be closed",
        async () => (await held()) <= TCP_CAP || undefined,
        10_000,
        50,
      );
      console.log(
        `${sockets.length} TCP connections in ${Date.now() - t0} ms: ${await held()} held by the agent`,
      );
      expect(await held()).toBe(TCP_CAP);
      expect(Date.now() - t0).toBeLessThan(IDLE_MS - 5_000);
      // A fresh TCP client finds the listener full…
      const fresh = await new Promise<string>((resolve) => {
        const req = https.get({
          host: url.hostname,
          port: url.port,
          path: "/flotilla/v1/health",
          agent: false,
          ...harnessPki().material(),
        });
        req.setTimeout(5_000, () => req.destroy(new Error("timeout")));
        req.on("response", (res) => resolve(String(res.statusCode)));
        req.on("error", (err) => resolve(err.message));
      });
      expect(fresh).not.toBe("200");
      // …while local fleetctl's unix socket has its own cap and answers.
      expect(await socketHealth()).toMatch(/^200 \{.*"ok":true/);
      // The idle connections are closed after the idle timeout, and TCP answers again.
      await waitFor(
        "the idle connections to be closed",
        async () => (await held()) === 0 || undefined,
        IDLE_MS + 40_000,
        500,
      );
      await expectHealthy();
    } finally {
      for (const s of sockets) s.destroy();
    }
    const log = await machine.journal("flotilla-agent.service", 2000);
    const refusals = log
      .split("\n")
      .filter((l) => l.includes("connection refused: the TCP listener already has"));
    expect(refusals.length).toBeGreaterThan(0);
    // Rate-limited: one line per 10 s, not one per refused connection.
    expect(refusals.length).toBeLessThan(10);
  }, 180_000);
});

describe("followed journals", () => {
  it(`runs at most ${FOLLOW_CAP} journalctl --follow; more get 429; a slot frees when a client leaves`, async () => {
    const follows: http.ClientRequest[] = [];
    const follow = () =>
      followOnce(api, "/flotilla/v1/units/hello.service/journal?follow=1&lines=1", follows);
    try {
      const answers = await Promise.all(Array.from({ length: FOLLOW_CAP + 4 }, follow));
      const ok = answers.filter((a) => a.status === 200);
      const refused = answers.filter((a) => a.status === 429);
      expect(ok).toHaveLength(FOLLOW_CAP);
      expect(refused).toHaveLength(4);
      expect(JSON.parse(refused[0]?.body ?? "{}").error.message).toBe(
        `too many followed journals on this machine: ${FOLLOW_CAP} at once; try again later, or read it without following`,
      );
      const running = await machine.exec(["pgrep", "-c", "-x", "journalctl"]);
      expect(Number(running.stdout.trim())).toBeLessThanOrEqual(FOLLOW_CAP);
      follows.shift()?.destroy();
      await waitFor(
        "a follow slot to free",
        async () => (await follow()).status === 200 || undefined,
        10_000,
        200,
      );
    } finally {
      for (const req of follows) req.destroy();
    }
    await waitFor(
      "every journalctl to end",
      async () =>
        (await machine.exec(["pgrep", "-c", "-x", "journalctl"])).stdout.trim() === "0" || undefined,
      15_000,
    );
    await expectHealthy();
  }, 60_000);
});

describe("DNS over TCP", () => {
  const query = (id: number) => {
    const message = encodeMessage({
      id,
      qr: false,
      opcode: 0,
      aa: false,
      tc: false,
      rd: true,
      ra: false,
      rcode: 0,
      questions: [{ name: "hello.service.flotilla", type: TYPE.A, class: 1 }],
      answers: [],
      authority: [],
      additional: [],
    });
    const frame = Buffer.alloc(2 + message.length);
    frame.writeUInt16BE(message.length, 0);
    message.copy(frame, 2);
    return frame;
  };

  // hello.service is no container with published ports, so the name may not exist: any answer will do.
  const ANSWERED = new RegExp(`^rcode (${RCODE.NOERROR}|${RCODE.NXDOMAIN})$`);

  /** One TCP query on a fresh connection: the answer's rcode, or the error. */
  const ask = (id: number) =>
    new Promise<string>((resolve) => {
      const s = net.connect(53, machine.ip, () => s.write(query(id)));
      let got = Buffer.alloc(0);
      s.setTimeout(3_000, () => {
        s.destroy();
        resolve("timeout");
      });
      s.on("data", (chunk) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
          const answer = decodeMessage(got.subarray(2, 2 + got.readUInt16BE(0)));
          s.destroy();
          resolve(answer.id === id ? `rcode ${answer.rcode}` : "wrong id");
        }
      });
      s.on("error", (err) => resolve(err.message));
    });

  it("answers a fresh query while more slow clients than the cap hold connections", async () => {
    const slow: net.Socket[] = [];
    try {
      for (let i = 0; i < DEFAULT_DNS_TCP_MAX_CONNECTIONS + 44; i++) {
        // The first byte of a length prefix of at least 256: the query never completes.
        const s = net.connect(53, machine.ip, () => s.write(Buffer.from([1])));
        s.on("error", () => undefined);
        slow.push(s);
      }
      await new Promise((r) => setTimeout(r, 1_000));
      // Dripping keeps none of them alive past the deadline for a whole query.
      const drip = setInterval(() => {
        for (const s of slow) if (!s.destroyed) s.write(Buffer.from([0x41]));
      }, 500);
      try {
        const answers = await Promise.all([1, 2, 3].map(ask));
        for (const answer of answers) expect(answer).toMatch(ANSWERED);
        await waitFor(
          "the dripping clients to be dropped",
          async () => slow.every((s) => s.closed) || undefined,
          15_000,
        );
      } finally {
        clearInterval(drip);
      }
    } finally {
      for (const s of slow) s.destroy();
    }
    expect(await ask(4)).toMatch(ANSWERED);
    await expectHealthy();
  }, 60_000);
});
