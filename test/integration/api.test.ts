// The fleet v1 API and Flotilla's extensions over real HTTP (TCP and a unix socket), served from
// a real etcd through EtcdRegistry. Two API servers stand for two machines, so status and journal
// requests for a unit on the other machine are proxied; systemctl/journalctl are stand-ins.

import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import tls from "node:tls";
import { Etcd3 } from "etcd3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JournalOptions, UnitCommands } from "../../agent/api/commands.js";
import { encodePageToken } from "../../agent/api/pagination.js";
import type { WireUnit, WireUnitPage } from "../../agent/api/schema.js";
import { type ApiServer, createApiServer, DISCOVERY_JSON } from "../../agent/api/server.js";
import type { Machine, UnitState } from "../../agent/model.js";
import { createEtcdClient } from "../../agent/registry/client.js";
import type { EtcdRegistry } from "../../agent/registry/etcd.js";
import type { ViewFeed } from "../../agent/registry/feed.js";
import { Keys } from "../../agent/registry/keys.js";
import { openRegistry } from "../../agent/registry/open.js";
import { createCA, issueClient } from "../../scripts/lib/pki.js";
import { type Etcd, harnessPki, startEtcd, type TlsFiles } from "../harness/index.js";
import { fleetctl, type HttpAnswer, httpRequest } from "./support.js";

const M1 = "1".repeat(32);
const M2 = "2".repeat(32);
const VERSION = "9.9.9-test";
const SERVER = `fleetd/${VERSION} (flotilla)`;
const HELLO = [{ section: "Service", name: "ExecStart", value: "/bin/sleep 1000" }];

type Answer = HttpAnswer;
const FLEETCTL_BUNDLE = path.join(import.meta.dirname, "../../dist/fleetctl.cjs");

/** A fake systemctl/journalctl that records what it was asked. */
class FakeCommands implements UnitCommands {
  calls: string[] = [];
  followAborted = false;

  constructor(private readonly machine: string) {}

  async status(unit: string) {
    this.calls.push(`status ${unit}`);
    return { exitCode: 3, output: `${unit} on ${this.machine}: inactive (dead)\n` };
  }

  async journal(unit: string, opts: JournalOptions) {
    this.calls.push(`journal ${unit} ${opts.lines} ${opts.output}`);
    return { exitCode: 0, output: `journal of ${unit} on ${this.machine}\n` };
  }

  followJournal(unit: string, opts: JournalOptions, signal: AbortSignal): Readable {
    this.calls.push(`follow ${unit} ${opts.lines} ${opts.output}`);
    const machine = this.machine;
    signal.addEventListener("abort", () => {
      this.followAborted = true;
    });
    return Readable.from(
      (async function* () {
        for (let i = 0; !signal.aborted; i++) {
          yield `line ${i} from ${machine}\n`;
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
    );
  }
}

let etcd: Etcd;
let client: Etcd3;
let keys: Keys;
let registry: EtcdRegistry;
let feed: ViewFeed;
let dir: string;
let socketPath: string;
let ready = true;
let serverA: ApiServer;
let serverB: ApiServer;
let base: string;
let baseB: string;
const fakeA = new FakeCommands("A");
const fakeB = new FakeCommands("B");

function request(
  method: string,
  target: string,
  opts: {
    body?: string | string[];
    headers?: Record<string, string>;
    socketPath?: string;
    base?: string;
    tls?: TlsFiles | null;
  } = {},
): Promise<Answer> {
  return httpRequest(method, opts.base ?? base, target, opts);
}

const JSON_TYPE = { "Content-Type": "application/json" };

function put(name: string, body: unknown): Promise<Answer> {
  return request("PUT", `/fleet/v1/units/${encodeURIComponent(name)}?alt=json`, {
    body: JSON.stringify(body),
    headers: JSON_TYPE,
  });
}

async function getJSON<T>(target: string): Promise<T> {
  const res = await request("GET", target);
  expect(res.status, res.text).toBe(200);
  return JSON.parse(res.text) as T;
}

/** Asserts fleet's error shape: status, JSON body, Server header. */
function expectError(res: Answer, status: number, message: string | RegExp): void {
  expect(res.status, res.text).toBe(status);
  expect(res.headers["content-type"]).toBe("application/json");
  expect(res.headers.server).toBe(SERVER);
  const body = JSON.parse(res.text) as { error: { code: number; message: string } };
  expect(Object.keys(body)).toEqual(["error"]);
  expect(body.error.code).toBe(status);
  if (typeof message === "string") expect(body.error.message).toBe(message);
  else expect(body.error.message).toMatch(message);
}

/** Writes behind the API's back, then waits until the agent's view holds the write. */
async function putJSON(key: string, value: unknown): Promise<void> {
  const res = await client.put(key).value(JSON.stringify(value)).exec();
  await feed.current(Number(res.header.revision), 5000);
}

function machine(id: string, apiURL: string, metadata: Record<string, string> = {}): Machine {
  return { id, publicIP: `10.0.0.${id[0]}`, metadata, version: VERSION, apiURL };
}

function unitState(name: string, machineID: string, activeState = "active", launched?: boolean): UnitState {
  return {
    name,
    machineID,
    hash: "abc",
    loadState: "loaded",
    activeState,
    subState: "running",
    ...(launched === undefined ? {} : { launched }),
  };
}

beforeAll(async () => {
  etcd = await startEtcd();
  client = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
  keys = new Keys(`/api-test-${randomBytes(4).toString("hex")}/`);
  ({ registry, feed } = openRegistry(client, keys, pino({ level: "silent" })));
  await feed.ready();
  dir = mkdtempSync(path.join(tmpdir(), "flotilla-api-"));
  socketPath = path.join(dir, "fleet.sock");
  // Each server has its machine certificate: it serves TLS with it and proxies to the other with it.
  const pki = harnessPki();
  const tlsA = pki.material(pki.machine("api-a", ["127.0.0.1"], dir));
  const tlsB = pki.material(pki.machine("api-b", ["127.0.0.1"], dir));
  const log = pino({ level: "silent" });
  const common = { registry, version: VERSION, log, isReady: () => ready };
  serverA = createApiServer({ ...common, machineID: M1, commands: fakeA, tls: tlsA });
  serverB = createApiServer({ ...common, machineID: M2, commands: fakeB, tls: tlsB });
  const a = await serverA.listen({ socketPath, tcp: "127.0.0.1:0", tls: tlsA });
  const b = await serverB.listen({ tcp: "127.0.0.1:0", tls: tlsB });
  base = `https://127.0.0.1:${a.tcp?.port}`;
  baseB = `https://127.0.0.1:${b.tcp?.port}`;
  await putJSON(keys.machine(M1), machine(M1, base, { az: "a" }));
  await putJSON(keys.machine(M2), machine(M2, baseB));
});

afterAll(async () => {
  await serverA?.close();
  await feed?.stop();
  await serverB?.close();
  client?.close();
  await etcd?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("before the agent is ready", () => {
  it("answers every request with fleet's 503", async () => {
    ready = false;
    try {
      for (const target of ["/fleet/v1/units", "/", "/nope", "/flotilla/v1/health", "/fleet/v1/discovery"]) {
        expectError(await request("GET", target), 503, "fleet server unable to communicate with etcd");
      }
    } finally {
      ready = true;
    }
  });
});

describe("routing and headers", () => {
  it("answers / with 405 and unknown paths with 404, always with the Server header", async () => {
    expectError(await request("GET", "/"), 405, /no method is supported on \//);
    expectError(await request("GET", "/fleet/v1"), 405, /no method is supported on \/fleet\/v1 itself/);
    expectError(await request("GET", "/fleet/v1/nope"), 404, "no such resource");
    expectError(await request("GET", "/metrics"), 404, "no such resource");
  });

  it("answers a wrong method with 405, a message and Allow", async () => {
    const res = await request("POST", "/fleet/v1/units/a.service");
    expectError(res, 405, "only GET, PUT and DELETE supported against this resource");
    expect(res.headers.allow).toBe("GET, PUT, DELETE");
    expectError(
      await request("DELETE", "/fleet/v1/machines"),
      405,
      "only GET and PATCH supported against this resource",
    );
    expectError(await request("POST", "/fleet/v1/state"), 405, "only GET supported against this resource");
  });

  it("serves fleet's discovery document, and 400 for other methods", async () => {
    const res = await request("GET", "/fleet/v1/discovery");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.headers.server).toBe(SERVER);
    expect(res.text).toBe(DISCOVERY_JSON);
    expectError(
      await request("POST", "/v1-alpha/discovery"),
      400,
      "only HTTP GET supported against this resource",
    );
  });

  it("serves the unix socket with mode 0600 (root only), and refuses to take over a live one", async () => {
    expect(statSync(socketPath).mode & 0o777).toBe(0o600);
    const res = await request("GET", "/fleet/v1/machines", { socketPath });
    expect(res.status).toBe(200);
    expect(res.headers.server).toBe(SERVER);
    const other = createApiServer({
      registry,
      version: VERSION,
      log: pino({ level: "silent" }),
      isReady: () => true,
      machineID: M1,
    });
    await expect(other.listen({ socketPath })).rejects.toThrow(/another server is already listening/);
    await other.close();
    expect(existsSync(socketPath)).toBe(true);
  });

  it("replaces a stale socket left by a process that died", async () => {
    const stale = path.join(dir, "stale.sock");
    // A process that binds the socket and is killed leaves the file behind.
    spawnSync(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    expect(statSync(stale).isSocket()).toBe(true);
    const server = createApiServer({
      registry,
      version: VERSION,
      log: pino({ level: "silent" }),
      isReady: () => true,
      machineID: M1,
    });
    await server.listen({ socketPath: stale });
    expect((await request("GET", "/flotilla/v1/health", { socketPath: stale })).status).toBe(200);
    await server.close();
    expect(existsSync(stale)).toBe(false);
  });
});

describe("units", () => {
  it("creates a unit (201), shows it, and serves the legacy prefix and escaped names", async () => {
    const res = await put("hello.service", { name: "hello.service", options: HELLO });
    expect(res.status, res.text).toBe(201);
    expect(res.text).toBe("");
    expect(res.headers.server).toBe(SERVER);
    const got = await request("GET", "/fleet/v1/units/hello.service?alt=json");
    expect(got.headers["content-type"]).toBe("application/json");
    expect(got.text).toBe(
      '{"currentState":"inactive","desiredState":"inactive","name":"hello.service",' +
        '"options":[{"name":"ExecStart","section":"Service","value":"/bin/sleep 1000"}]}',
    );
    expect((await getJSON<WireUnit>("/v1-alpha/units/hello.service")).name).toBe("hello.service");
    expect((await put("tpl@.service", { options: HELLO })).status).toBe(201);
    expect((await getJSON<WireUnit>("/fleet/v1/units/tpl%40.service")).name).toBe("tpl@.service");
  });

  it("sets the desired state alone (204), which must be given (409)", async () => {
    const res = await put("hello.service", { desiredState: "launched", name: "hello.service" });
    expect(res.status, res.text).toBe(204);
    expect((await getJSON<WireUnit>("/fleet/v1/units/hello.service")).desiredState).toBe("launched");
    expectError(
      await put("hello.service", { name: "hello.service", desiredState: "" }),
      409,
      "must provide DesiredState to update existing unit",
    );
  });

  it("replaces a unit sent with other options (201): new hash, desired state reset", async () => {
    const before = await registry.getUnit("hello.service");
    const other = [{ section: "Service", name: "ExecStart", value: "/bin/sleep 2000" }];
    expect((await put("hello.service", { options: other })).status).toBe(201);
    const after = await registry.getUnit("hello.service");
    expect(after?.hash).not.toBe(before?.hash);
    expect(after?.desiredState).toBe("inactive");
    expect(after?.options).toEqual(other);
    expect((await put("hello.service", { options: HELLO, desiredState: "launched" })).status).toBe(201);
    expect((await registry.getUnit("hello.service"))?.desiredState).toBe("launched");
  });

  it("answers 409 for a new unit without options", async () => {
    expectError(
      await put("new.service", { desiredState: "launched" }),
      409,
      "unit does not exist and options field empty",
    );
  });

  it("refuses non-JSON content types with 415", async () => {
    const target = "/fleet/v1/units/x.service";
    const body = JSON.stringify({ options: HELLO });
    expectError(await request("PUT", target, { body }), 415, "expected 1 Content-Type, got 0");
    expectError(
      await request("PUT", target, { body, headers: { "Content-Type": "text/plain" } }),
      415,
      "only acceptable Content-Type is application/json",
    );
    const ok = await request("PUT", target, {
      body,
      headers: { "Content-Type": "application/json; charset=utf-8" },
    });
    expect(ok.status).toBe(201);
  });

  it("refuses bad JSON saying where, and unit bodies over 512 KiB with 413", async () => {
    expectError(
      await request("PUT", "/fleet/v1/units/x.service", {
        body: '{"name":"x.service",}',
        headers: JSON_TYPE,
      }),
      400,
      "unable to decode body: invalid JSON at line 1, column 21: expected a property name in double quotes, found '}'",
    );
    const huge = JSON.stringify({
      options: [{ section: "Service", name: "A", value: "x".repeat(1024 * 1024) }],
    });
    const res = await request("PUT", "/fleet/v1/units/x.service", { body: huge, headers: JSON_TYPE });
    const unitLimit =
      "request body is larger than the limit of 524288 bytes for a unit (a unit file may have at most 65536 bytes)";
    expectError(res, 413, unitLimit);
    expect(res.headers.connection).toBe("close");
    const chunks = Array.from({ length: 24 }, () => "x".repeat(64 * 1024));
    const chunked = await request("PUT", "/fleet/v1/units/x.service", { body: chunks, headers: JSON_TYPE });
    expectError(chunked, 413, unitLimit);
  });

  it("refuses mismatched names, invalid names, invalid options and unknown states with 400", async () => {
    expectError(
      await put("a.service", { name: "b.service", options: HELLO }),
      400,
      'name in URL "a.service" differs from unit name in request body "b.service"',
    );
    expectError(await put("foo", { options: HELLO }), 400, 'unit name must contain "."');
    expectError(
      await put("a.service", {
        options: [
          ...HELLO,
          { section: "X-Fleet", name: "Conflicts", value: "b*" },
          { section: "X-Fleet", name: "Replaces", value: "c*" },
        ],
      }),
      400,
      "invalid unit options: Conflicts cannot be used with Replaces",
    );
    expectError(
      await put("a.service", { options: [{ section: "Service", name: "", value: "x" }] }),
      400,
      "invalid unit options: options[0]: name is empty",
    );
    expectError(await put("a.service", { options: "nope" }), 400, "options: expected an array, got a string");
    expectError(
      await put("hello.service", { desiredState: "started" }),
      400,
      'invalid desiredState "started": must be one of inactive, loaded, launched',
    );
  });

  it("refuses to activate a template", async () => {
    expectError(
      await put("tpl@.service", { desiredState: "launched" }),
      400,
      'cannot activate template "tpl@.service"',
    );
    expectError(
      await put("tpl2@.service", { options: HELLO, desiredState: "loaded" }),
      400,
      'cannot activate template "tpl2@.service"',
    );
  });

  it("derives currentState and machineID from the schedule and the target's state, with the reason", async () => {
    await putJSON(keys.schedule("hello.service"), { machineID: M1, at: Date.now(), reason: "least loaded" });
    let unit = await getJSON<WireUnit>("/fleet/v1/units/hello.service");
    expect(unit).toMatchObject({ currentState: "inactive", machineID: M1 });
    await putJSON(keys.state("hello.service", M1), unitState("hello.service", M1, "inactive"));
    expect((await getJSON<WireUnit>("/fleet/v1/units/hello.service")).currentState).toBe("loaded");
    // launched only once the target's agent reports having started it (its job-state heartbeat).
    await putJSON(keys.state("hello.service", M1), unitState("hello.service", M1, "active"));
    expect((await getJSON<WireUnit>("/fleet/v1/units/hello.service")).currentState).toBe("loaded");
    await putJSON(keys.state("hello.service", M1), unitState("hello.service", M1, "active", true));
    expect((await getJSON<WireUnit>("/fleet/v1/units/hello.service")).currentState).toBe("launched");
    // Another machine's state does not count.
    await put("other.service", { options: HELLO, desiredState: "launched" });
    await putJSON(keys.schedule("other.service"), { machineID: M1, at: 0, reason: "" });
    await putJSON(keys.state("other.service", M2), unitState("other.service", M2, "active", true));
    expect((await getJSON<WireUnit>("/fleet/v1/units/other.service")).currentState).toBe("inactive");

    await put("stuck.service", { options: HELLO, desiredState: "launched" });
    await putJSON(keys.pending("stuck.service"), { reason: "no machine has metadata region=eu", at: 0 });
    unit = await getJSON<WireUnit>("/fleet/v1/units/stuck.service");
    expect(unit).toMatchObject({ currentState: "inactive", reason: "no machine has metadata region=eu" });
    expect(unit.machineID).toBeUndefined();
  });

  it("deletes a unit (204), then answers 404", async () => {
    await put("doomed.service", { options: HELLO });
    const res = await request("DELETE", "/fleet/v1/units/doomed.service");
    expect(res.status).toBe(204);
    expect(res.headers.server).toBe(SERVER);
    expectError(await request("DELETE", "/fleet/v1/units/doomed.service"), 404, "unit does not exist");
    expectError(await request("GET", "/fleet/v1/units/doomed.service"), 404, "unit does not exist");
  });
});

describe("state", () => {
  it("lists states, filtered by machine and unit", async () => {
    const all = await getJSON<{ states: { name: string; machineID: string }[] }>("/fleet/v1/state");
    expect(all.states.map((s) => `${s.name}@${s.machineID[0]}`)).toEqual([
      "hello.service@1",
      "other.service@2",
    ]);
    const byMachine = await getJSON<{ states: unknown[] }>(`/fleet/v1/state?machineID=${M2}`);
    expect(byMachine.states).toHaveLength(1);
    const byUnit = await getJSON<{ states: unknown[] }>("/fleet/v1/state?unitName=hello.service");
    expect(byUnit.states).toEqual([
      {
        hash: "abc",
        machineID: M1,
        name: "hello.service",
        systemdActiveState: "active",
        systemdLoadState: "loaded",
        systemdSubState: "running",
      },
    ]);
    expect(await getJSON("/fleet/v1/state?unitName=none.service")).toEqual({});
  });

  it("answers GET /state/{name}, or 404", async () => {
    expect(await getJSON("/fleet/v1/state/hello.service")).toMatchObject({
      machineID: M1,
      systemdActiveState: "active",
    });
    expectError(await request("GET", "/fleet/v1/state/none.service"), 404, "unit state does not exist");
  });
});

describe("machines", () => {
  const metadataOf = async (id: string) =>
    (
      await getJSON<{ machines: { id: string; metadata?: Record<string, string> }[] }>("/fleet/v1/machines")
    ).machines.find((m) => m.id === id)?.metadata;

  it("lists machines in ID order", async () => {
    expect(await getJSON("/fleet/v1/machines")).toEqual({
      machines: [
        { id: M1, metadata: { az: "a" }, primaryIP: "10.0.0.1" },
        { id: M2, primaryIP: "10.0.0.2" },
      ],
    });
  });

  it("adds, replaces and removes metadata with fleet's nested value (204)", async () => {
    const patch = (ops: unknown, headers: Record<string, string> = JSON_TYPE) =>
      request("PATCH", "/fleet/v1/machines", { body: JSON.stringify(ops), headers });
    const res = await patch([
      { op: "add", path: `/${M1}/metadata/foo`, value: { value: "bar" } },
      { op: "replace", path: `/${M2}/metadata/ping`, value: { value: "splat" } },
    ]);
    expect(res.status, res.text).toBe(204);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(await metadataOf(M1)).toEqual({ az: "a", foo: "bar" });
    expect(await metadataOf(M2)).toEqual({ ping: "splat" });
    // fleet's own functional tests send no Content-Type and capitalise "Value".
    expect(
      (await patch([{ op: "replace", path: `/${M1}/metadata/foo`, Value: { value: "baz" } }], {})).status,
    ).toBe(204);
    expect(await metadataOf(M1)).toEqual({ az: "a", foo: "baz" });
    expect(
      (
        await patch([
          { op: "remove", path: `/${M1}/metadata/foo` },
          { op: "remove", path: `/${M2}/metadata/ping` },
        ])
      ).status,
    ).toBe(204);
    expect(await metadataOf(M1)).toEqual({ az: "a" });
    expect(await metadataOf(M2)).toBeUndefined();
  });

  it("refuses bad ops, paths, values and content types", async () => {
    const patch = (ops: unknown, headers: Record<string, string> = JSON_TYPE) =>
      request("PATCH", "/fleet/v1/machines", { body: JSON.stringify(ops), headers });
    expectError(
      await patch([{ op: "noop", path: `/${M1}/metadata/foo`, value: { value: "bar" } }]),
      400,
      "invalid op: expect add, remove, or replace",
    );
    expectError(
      await patch([{ op: "add", path: `/${M1}/foo`, value: { value: "bar" } }]),
      400,
      "machine metadata path invalid",
    );
    expectError(
      await patch([{ op: "add", path: `/${M1}/metadata/foo`, value: { value: "" } }]),
      400,
      "invalid value: add and replace require a value",
    );
    expectError(
      await patch([{ op: "add", path: `/${M1}/metadata/foo`, value: "bar" }]),
      400,
      'invalid value: fleet expects "value":{"value":"…"}, not a plain string',
    );
    expectError(
      await patch([{ op: "add", path: `/${M1}/metadata/foo`, value: { value: "bar" } }], {
        "Content-Type": "text/plain",
      }),
      415,
      "only acceptable Content-Type is application/json",
    );
    expect(await metadataOf(M1)).toEqual({ az: "a" });
  });
});

describe("pagination", () => {
  it("pages through more than 100 units, with fleet's tokens", async () => {
    const before = (await registry.snapshot()).units.length;
    const total = 250;
    for (let i = before; i < total; i++) {
      const res = await put(`page-${String(i).padStart(3, "0")}.service`, { options: HELLO });
      expect(res.status).toBe(201);
    }
    const first = await getJSON<WireUnitPage>("/fleet/v1/units?alt=json");
    expect(first.units).toHaveLength(100);
    expect(first.nextPageToken).toBe(encodePageToken({ limit: 100, page: 2 }));
    const second = await getJSON<WireUnitPage>(`/fleet/v1/units?nextPageToken=${first.nextPageToken}`);
    expect(second.units).toHaveLength(100);
    const third = await getJSON<WireUnitPage>(`/fleet/v1/units?nextPageToken=${second.nextPageToken}`);
    expect(third.units).toHaveLength(50);
    expect(third.nextPageToken).toBeUndefined();
    const names = [...(first.units ?? []), ...(second.units ?? []), ...(third.units ?? [])].map(
      (u) => u.name,
    );
    expect(names).toEqual([...names].sort());
    expect(new Set(names).size).toBe(total);
  });

  it("keeps fleet's quirk of a last, empty page when the total is a multiple of 100", async () => {
    const extra = (await registry.snapshot()).units.map((u) => u.name).filter((n) => n.startsWith("page-"));
    for (const name of extra.slice(0, 50)) {
      expect((await request("DELETE", `/fleet/v1/units/${name}`)).status).toBe(204);
    }
    const second = await getJSON<WireUnitPage>(
      `/fleet/v1/units?nextPageToken=${encodePageToken({ limit: 100, page: 2 })}`,
    );
    expect(second.units).toHaveLength(100);
    expect(second.nextPageToken).toBe(encodePageToken({ limit: 100, page: 3 }));
    const third = await request("GET", `/fleet/v1/units?nextPageToken=${second.nextPageToken}`);
    expect(third.text).toBe("{}");
  });

  it("refuses a token with another limit (fleet's EwBMLg==) and repeated tokens", async () => {
    for (const resource of ["units", "state", "machines"]) {
      expectError(
        await request("GET", `/fleet/v1/${resource}?nextPageToken=EwBMLg==`),
        400,
        "token limit must be 100",
      );
    }
    expectError(
      await request("GET", "/fleet/v1/units?nextPageToken=ZAABAA==&nextPageToken=ZAACAA=="),
      400,
      "too many values for page token",
    );
    expectError(await request("GET", "/fleet/v1/units?nextPageToken=%25%25"), 400, /not padded base64url/);
  });

  it("pages unit states too", async () => {
    for (let i = 0; i < 120; i++) {
      const name = `page-${String(i).padStart(3, "0")}.service`;
      await putJSON(keys.state(name, M2), unitState(name, M2));
    }
    const first = await getJSON<{ states: unknown[]; nextPageToken?: string }>(
      `/fleet/v1/state?machineID=${M2}`,
    );
    expect(first.states).toHaveLength(100);
    const second = await getJSON<{ states: unknown[]; nextPageToken?: string }>(
      `/fleet/v1/state?machineID=${M2}&nextPageToken=${first.nextPageToken}`,
    );
    expect(second.states).toHaveLength(21);
    expect(second.nextPageToken).toBeUndefined();
  });
});

describe("flotilla extensions", () => {
  it("reports health", async () => {
    const res = await request("GET", "/flotilla/v1/health");
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ machineID: M1, ok: true, version: VERSION });
  });

  it("runs status and journal locally for a unit placed here", async () => {
    expect(await getJSON("/flotilla/v1/units/hello.service/status")).toEqual({
      exitCode: 3,
      output: "hello.service on A: inactive (dead)\n",
    });
    expect(await getJSON("/flotilla/v1/units/hello.service/journal?lines=5&output=cat")).toEqual({
      exitCode: 0,
      output: "journal of hello.service on A\n",
    });
    expect(fakeA.calls).toEqual(["status hello.service", "journal hello.service 5 cat"]);
  });

  it("proxies to the machine the unit is placed on", async () => {
    await putJSON(keys.schedule("other.service"), { machineID: M2, at: 0, reason: "" });
    expect(await getJSON("/flotilla/v1/units/other.service/status")).toEqual({
      exitCode: 3,
      output: "other.service on B: inactive (dead)\n",
    });
    expect(fakeB.calls).toEqual(["status other.service"]);
  });

  it("streams a followed journal as text, through the proxy, and stops it when the client leaves", async () => {
    const text = await new Promise<string>((resolve, reject) => {
      const url = new URL(base);
      const req = https.get(
        {
          ...harnessPki().material(),
          host: url.hostname,
          port: url.port,
          path: "/flotilla/v1/units/other.service/journal?lines=1&follow=1",
        },
        (res) => {
          expect(res.statusCode).toBe(200);
          expect(res.headers["content-type"]).toBe("text/plain; charset=utf-8");
          let got = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            got += c;
            if (got.includes("line 2")) {
              req.destroy();
              resolve(got);
            }
          });
        },
      );
      req.on("error", reject);
    });
    expect(text.startsWith("line 0 from B\nline 1 from B\n")).toBe(true);
    await expect.poll(() => fakeB.followAborted, { timeout: 5000 }).toBe(true);
    expect(fakeB.calls.at(-1)).toBe("follow other.service 1 short");
  });

  it("answers 404 for an unknown unit, 409 for an unplaced one, 400 for bad queries", async () => {
    expectError(await request("GET", "/flotilla/v1/units/none.service/status"), 404, "unit does not exist");
    expectError(
      await request("GET", "/flotilla/v1/units/stuck.service/journal"),
      409,
      "unit stuck.service is not scheduled to any machine: no machine has metadata region=eu",
    );
    expectError(
      await request("GET", "/flotilla/v1/units/hello.service/journal?output=bogus"),
      400,
      /^invalid output "bogus"/,
    );
  });

  it("answers 502 when the target machine's agent cannot be reached", async () => {
    await putJSON(keys.machine(M2), machine(M2, "http://127.0.0.1:1"));
    expectError(
      await request("GET", "/flotilla/v1/units/other.service/status"),
      502,
      /^cannot reach the agent at http:\/\/127\.0\.0\.1:1: /,
    );
    await putJSON(keys.machine(M2), machine(M2, baseB));
  });
});

describe("mutual TLS and roles", () => {
  let expired: TlsFiles;
  let foreign: TlsFiles;
  let machineCert: TlsFiles;

  beforeAll(() => {
    const pki = harnessPki();
    const tlsDir = path.join(dir, "tls");
    expired = {
      ca: pki.ca.cert,
      ...issueClient(pki.ca, { name: "old", role: "admin", days: -1, out: tlsDir }),
    };
    const other = createCA(path.join(tlsDir, "other-ca"), { name: "Another CA" });
    foreign = { ca: pki.ca.cert, ...issueClient(other, { name: "stranger", role: "admin", out: tlsDir }) };
    machineCert = pki.machine("api-peer", ["127.0.0.1"], tlsDir);
  });

  /**
   * How the server ends a TLS connection offering `files` (or no certificate) before it answered
   * anything: the TLS alert's error code, or "closed" when it just closed the connection. Nothing
   * is sent, so the server's close cannot turn into a reset that hides its alert.
   */
  const refusal = (files: TlsFiles | null, url = base) =>
    new Promise<string>((resolve) => {
      const { hostname, port } = new URL(url);
      const pki = harnessPki();
      const socket = tls.connect({
        host: hostname,
        port: Number(port),
        // An IP address is no SNI name (RFC 6066); the certificate is still checked against it.
        servername: "",
        ...(files ? pki.material(files) : { ca: pki.material().ca }),
      });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve("still open after 2 s");
      }, 2000);
      const end = (how: string) => {
        clearTimeout(timer);
        resolve(how);
      };
      socket.on("error", (err: NodeJS.ErrnoException) => end(err.code ?? err.message));
      socket.on("close", () => end("closed"));
    });

  it("refuses the TLS handshake without a client certificate, and plain HTTP", async () => {
    expect(await refusal(null)).toBe("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED");
    // The admin's certificate keeps the same connection open: the refusals below are the server's.
    expect(await refusal(harnessPki().admin)).toBe("still open after 2 s");
    const plain = await httpRequest("GET", base.replace("https:", "http:"), "/fleet/v1/units").then(
      (res) => res.status,
      () => "refused",
    );
    expect(plain).not.toBe(200);
  });

  it("refuses an expired certificate and one from another CA", async () => {
    // Node's server verifies the certificate after the handshake and closes without an alert.
    expect(await refusal(expired)).toBe("closed");
    expect(await refusal(foreign)).toBe("closed");
    const expiredAnswer = await request("GET", "/fleet/v1/units", { tls: expired }).then(
      (res) => `answered ${res.status}`,
      (err: NodeJS.ErrnoException) => err.code,
    );
    expect(expiredAnswer).toMatch(/^(ECONNRESET|EPIPE)$/);
  });

  it("lets reader GET and answers 403 naming the role on PUT; admin does everything", async () => {
    const { reader, admin } = harnessPki();
    expect((await request("GET", "/fleet/v1/units", { tls: reader })).status).toBe(200);
    expectError(
      await request("PUT", "/fleet/v1/units/ro.service?alt=json", {
        tls: reader,
        body: JSON.stringify({ desiredState: "inactive", options: HELLO }),
        headers: JSON_TYPE,
      }),
      403,
      "role reader (certificate reader) may only read (GET); PUT needs role admin",
    );
    expect((await request("DELETE", "/fleet/v1/units/ro.service", { tls: reader })).status).toBe(403);
    const created = await request("PUT", "/fleet/v1/units/rw.service?alt=json", {
      tls: admin,
      body: JSON.stringify({ desiredState: "inactive", options: HELLO }),
      headers: JSON_TYPE,
    });
    expect(created.status, created.text).toBe(201);
    expect((await request("DELETE", "/fleet/v1/units/rw.service", { tls: admin })).status).toBe(204);
  });

  it("keeps a machine certificate to status, journal and health", async () => {
    expect((await request("GET", "/flotilla/v1/health", { tls: machineCert })).status).toBe(200);
    expect(
      (await request("GET", "/flotilla/v1/units/hello.service/status", { tls: machineCert })).status,
    ).toBe(200);
    expectError(await request("GET", "/fleet/v1/units", { tls: machineCert }), 403, /^role machine /);
  });

  it("has fleetctl say why a call was refused", async () => {
    const pki = harnessPki();
    const run = (flags: string[], args = ["list-units"]) => fleetctl(base, args, dir, flags);
    const none = await run([`--ca-file=${pki.ca.cert}`]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain("requires a client certificate: give --cert-file and --key-file");
    const old = await run(pki.fleetctlFlags(expired));
    expect(old.stderr).toMatch(
      /the API refused the client certificate: it (has expired|is valid only from .* to )/,
    );
    const stranger = await run(pki.fleetctlFlags(foreign));
    expect(stranger.stderr).toContain("it was not issued by the cluster's CA");
    const untrusted = await run([`--cert-file=${pki.admin.cert}`, `--key-file=${pki.admin.key}`]);
    expect(untrusted.stderr).toContain(
      "the API's certificate is not trusted: give the cluster CA with --ca-file",
    );
    const reader = await run(pki.fleetctlFlags(pki.reader), ["destroy", "hello.service"]);
    expect(reader.stdout + reader.stderr).toContain("role reader (certificate reader) may only read");
    const viaEnv = await fleetctlEnv(pki.admin);
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
  });

  /** fleetctl with its endpoint and TLS files from FLEETCTL_* only (async: this process is the server). */
  function fleetctlEnv(files: TlsFiles): Promise<{ code: number; stderr: string }> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [FLEETCTL_BUNDLE, "list-units"],
        {
          env: {
            PATH: process.env.PATH ?? "",
            FLEETCTL_ENDPOINT: base,
            FLEETCTL_CA_FILE: files.ca,
            FLEETCTL_CERT_FILE: files.cert,
            FLEETCTL_KEY_FILE: files.key,
          },
        },
        (err, _stdout, stderr) => resolve({ code: err ? Number(err.code) || 1 : 0, stderr }),
      );
    });
  }

  it("has etcd refuse a client without a certificate", async () => {
    const anonymous = new Etcd3({
      hosts: [etcd.endpoint],
      credentials: { rootCertificate: etcd.tls.ca },
      dialTimeout: 2000,
    });
    try {
      await expect(anonymous.get("/any").string()).rejects.toThrow();
    } finally {
      anonymous.close();
    }
    // Go's TLS answers a missing certificate with "bad certificate".
    expect(await refusal(null, etcd.endpoint)).toBe("ERR_SSL_SSL/TLS_ALERT_BAD_CERTIFICATE");
    // The same etcd with the certificate answers.
    expect(await client.get("/any").string()).toBeNull();
  });
});

describe("etcd outage", () => {
  it("answers 503 with the cause while etcd is down, and recovers", async () => {
    await etcd.stop();
    expectError(
      await request("GET", "/fleet/v1/units"),
      503,
      /^fleet server unable to communicate with etcd: /,
    );
    expectError(
      await request("PUT", "/fleet/v1/units/x2.service", { body: "{}", headers: JSON_TYPE }),
      503,
      /^fleet server unable/,
    );
    await etcd.start();
    await expect
      .poll(async () => (await request("GET", "/fleet/v1/units/hello.service")).status, {
        timeout: 30_000,
        interval: 500,
      })
      .toBe(200);
  });
});
