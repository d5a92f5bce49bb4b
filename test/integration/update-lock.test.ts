// The reboot semaphore, the updater's records and FleetLock against a real etcd: concurrent
// acquirers never exceed the group's slots, a holder that stops keeping its lease alive frees its
// slot within the TTL, a holder re-attaches by lease ID, and FleetLock and the Flotilla update
// routes answer over real HTTP from the real API server. No machines are needed.

import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Etcd3 } from "etcd3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WireUpdates } from "../../agent/api/schema.js";
import { type ApiServer, createApiServer } from "../../agent/api/server.js";
import type { Machine } from "../../agent/model.js";
import { createEtcdClient } from "../../agent/registry/client.js";
import type { ViewFeed } from "../../agent/registry/feed.js";
import { Keys } from "../../agent/registry/keys.js";
import { openRegistry } from "../../agent/registry/open.js";
import { RebootLock } from "../../agent/update/lock.js";
import type { UpdateStatus } from "../../agent/update/records.js";
import { UpdateStore } from "../../agent/update/store.js";
import { runFleetctl } from "../../fleetctl/cli.js";
import { type Etcd, harnessPki, startEtcd } from "../harness/index.js";
import { type HttpAnswer, httpRequest } from "./support.js";

const M1 = "1".repeat(32);
const M2 = "2".repeat(32);
/** Short enough to watch expire, above etcd's minimum TTL (1.5 × the 1 s election timeout). */
const TTL = 3;

let etcd: Etcd;
let client: Etcd3;
let keys: Keys;
let lock: RebootLock;
let store: UpdateStore;
let server: ApiServer;
let feed: ViewFeed;
let base: string;

beforeAll(async () => {
  etcd = await startEtcd();
  client = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
  keys = new Keys(`/update-lock-${randomBytes(4).toString("hex")}/`);
  lock = new RebootLock(client, keys, { leaseSeconds: TTL });
  store = new UpdateStore(client, keys);
  const opened = openRegistry(client, keys, pino({ level: "silent" }));
  feed = opened.feed;
  await feed.ready();
  server = createApiServer({
    registry: opened.registry,
    version: "9.9.9-test",
    log: pino({ level: "silent" }),
    isReady: () => true,
    machineID: M1,
    updates: { lock, store },
  });
  const tlsDir = mkdtempSync(path.join(tmpdir(), "flotilla-update-lock-"));
  const pki = harnessPki();
  const tls = pki.material(pki.machine("update-lock", ["127.0.0.1"], tlsDir));
  rmSync(tlsDir, { recursive: true, force: true });
  const bound = await server.listen({ tcp: "127.0.0.1:0", tls });
  base = `https://127.0.0.1:${bound.tcp?.port}`;
  const machine = (id: string): Machine => ({ id, publicIP: `10.0.0.${id[0]}`, metadata: {}, version: "x" });
  await client.put(keys.machine(M1)).value(JSON.stringify(machine(M1)));
  const put = await client
    .put(keys.machine(M2))
    .value(JSON.stringify(machine(M2)))
    .exec();
  // The API reads machines from its view: wait until the view holds both.
  await feed.current(Number(put.header.revision), 5000);
});

afterAll(async () => {
  await server?.close();
  await feed?.stop();
  client?.close();
  await etcd?.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function leaseTTL(leaseId: string): Promise<number> {
  return Number((await client.leaseClient.leaseTimeToLive({ ID: leaseId })).TTL);
}

describe("the semaphore", () => {
  it("gives exactly one of 10 concurrent acquirers the only slot", async () => {
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => lock.acquire("one", `h${i}`, { machineId: M1 })),
    );
    const winners = results.filter((r) => r.acquired);
    expect(winners).toHaveLength(1);
    const { holders } = await lock.view("one");
    expect(holders.map((h) => h.holder)).toEqual(winners.map((w) => w.holders[0]));
    expect(holders[0]?.leaseId).toBe(winners[0]?.leaseId);
    expect(holders[0]?.machineId).toBe(M1);
    for (const r of results.filter((x) => !x.acquired)) expect(r.reason).toBe("full");
    // The losers' leases were revoked: the winner's is the only lease in etcd.
    const leases = (await client.leaseClient.leaseLeases()).leases.map((l) => l.ID);
    expect(leases).toEqual([winners[0]?.leaseId]);
  });

  it("gives exactly two of 10 concurrent acquirers a slot when maxHolders is 2", async () => {
    await store.changeGroupConfig("two", { maxHolders: 2 });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => lock.acquire("two", `h${i}`)));
    expect(results.filter((r) => r.acquired)).toHaveLength(2);
    expect((await lock.view("two")).holders).toHaveLength(2);
  });

  it("is idempotent for the same holder and refreshes its lease", async () => {
    const first = await lock.acquire("idem", "a");
    expect(first.acquired).toBe(true);
    await sleep(1500);
    const again = await lock.acquire("idem", "a");
    expect(again).toMatchObject({ acquired: true, leaseId: first.leaseId, holders: ["a"] });
    expect(await leaseTTL(first.leaseId as string)).toBeGreaterThanOrEqual(TTL - 1);
    expect(await lock.acquire("idem", "b")).toMatchObject({
      acquired: false,
      reason: "full",
      holders: ["a"],
    });
  });

  it("frees the slot of a holder that stops keeping its lease alive, within the TTL", async () => {
    const dead = await lock.acquire("expiry", "dead");
    expect(dead.acquired).toBe(true);
    expect((await lock.acquire("expiry", "next")).acquired).toBe(false);
    const started = Date.now();
    let next = await lock.acquire("expiry", "next");
    while (!next.acquired && Date.now() - started < (TTL + 3) * 1000) {
      await sleep(200);
      next = await lock.acquire("expiry", "next");
    }
    expect(next.acquired).toBe(true);
    // etcd expires a lease up to about a second after its TTL.
    expect(Date.now() - started).toBeLessThan((TTL + 2) * 1000);
    expect(await lock.keepAlive(dead.leaseId as string)).toBe(false);
  });

  it("keeps the slot of a holder that keeps its lease alive by ID, as after a reboot", async () => {
    const held = await lock.acquire("reattach", "m");
    const leaseId = held.leaseId as string;
    // A fresh client stands for the rebooted agent: it knows nothing but the stored lease ID.
    const rebooted = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
    try {
      const again = new RebootLock(rebooted, keys, { leaseSeconds: TTL });
      for (let i = 0; i < 5; i++) {
        await sleep(1000);
        expect(await again.keepAlive(leaseId)).toBe(true);
      }
      expect((await again.view("reattach")).holders.map((h) => h.holder)).toEqual(["m"]);
      expect(await again.acquire("reattach", "m")).toMatchObject({ acquired: true, leaseId });
      expect(await again.release("reattach", "m")).toBe(true);
      expect(await again.keepAlive(leaseId)).toBe(false);
      expect(await again.release("reattach", "m")).toBe(false);
    } finally {
      rebooted.close();
    }
  });

  it("grants no slot in a paused group, and applies a new size at once", async () => {
    await store.changeGroupConfig("paused", { paused: true });
    expect(await lock.acquire("paused", "a")).toMatchObject({ acquired: false, reason: "paused" });
    await store.changeGroupConfig("paused", { paused: false });
    expect((await lock.acquire("paused", "a")).acquired).toBe(true);
    expect((await lock.acquire("paused", "b")).acquired).toBe(false);
    await store.changeGroupConfig("paused", { maxHolders: 2 });
    expect(await lock.acquire("paused", "b")).toMatchObject({ acquired: true, holders: ["a", "b"] });
    expect(await store.groupConfig("paused")).toEqual({
      strategy: "etcd-lock",
      maxHolders: 2,
      paused: false,
    });
  });
});

function request(method: string, target: string, body?: string, headers: Record<string, string> = {}) {
  return httpRequest(method, base, target, { ...(body !== undefined ? { body } : {}), headers });
}

const FLEETLOCK = { "fleet-lock-protocol": "true", "Content-Type": "application/json" };
const params = (id: string, group = "fl") => JSON.stringify({ client_params: { id, group } });

function expectKind(res: HttpAnswer, status: number, kind: string, value?: RegExp): void {
  expect(res.status, res.text).toBe(status);
  expect(res.headers["content-type"]).toBe("application/json");
  const body = JSON.parse(res.text) as { kind: string; value: string };
  expect(Object.keys(body)).toEqual(["kind", "value"]);
  expect(body.kind).toBe(kind);
  expect(body.value).not.toBe("");
  if (value) expect(body.value).toMatch(value);
}

describe("FleetLock over HTTP", () => {
  it("locks recursively, refuses a second holder while full, and unlocks if held", async () => {
    const lockA = await request("POST", "/v1/pre-reboot", params("node-a"), FLEETLOCK);
    expect(lockA.status, lockA.text).toBe(200);
    expect((await request("POST", "/v1/pre-reboot", params("node-a"), FLEETLOCK)).status).toBe(200);
    expectKind(
      await request("POST", "/v1/pre-reboot", params("node-b"), FLEETLOCK),
      409,
      "failed_lock_semaphore_full",
      /held by node-a/,
    );
    expect((await lock.view("fl")).holders.map((h) => h.holder)).toEqual(["node-a"]);
    // Unlocking a slot one does not hold is a success that changes nothing.
    expect((await request("POST", "/v1/steady-state", params("node-b"), FLEETLOCK)).status).toBe(200);
    expect((await lock.view("fl")).holders).toHaveLength(1);
    for (let i = 0; i < 2; i++) {
      expect((await request("POST", "/v1/steady-state", params("node-a"), FLEETLOCK)).status).toBe(200);
    }
    expect((await request("POST", "/v1/pre-reboot", params("node-b"), FLEETLOCK)).status).toBe(200);
    expect((await lock.view("fl")).holders.map((h) => h.holder)).toEqual(["node-b"]);
  });

  it("refuses requests without the header, with a bad body, or another method", async () => {
    expectKind(
      await request("POST", "/v1/pre-reboot", params("x"), { "Content-Type": "application/json" }),
      400,
      "invalid_client_identity",
      /fleet-lock-protocol/,
    );
    expectKind(
      await request("POST", "/v1/pre-reboot", params("x", "bad/group"), FLEETLOCK),
      400,
      "invalid_client_identity",
      /client_params\.group/,
    );
    expectKind(
      await request("POST", "/v1/steady-state", JSON.stringify({ client_params: { group: "g" } }), FLEETLOCK),
      400,
      "invalid_client_identity",
      /client_params\.id/,
    );
    const get = await request("GET", "/v1/pre-reboot", undefined, FLEETLOCK);
    expectKind(get, 405, "method_not_allowed");
    expect(get.headers.allow).toBe("POST");
    expect((await lock.view("g")).holders).toHaveLength(0);
  });

  it("refuses a paused group with its own kind", async () => {
    await store.changeGroupConfig("fl-paused", { paused: true });
    expectKind(
      await request("POST", "/v1/pre-reboot", params("n", "fl-paused"), FLEETLOCK),
      409,
      "failed_lock_group_paused",
    );
  });
});

describe("the Flotilla update routes", () => {
  const JSON_TYPE = { "Content-Type": "application/json" };

  it("lists machines with their status, groups with holders, and bad versions", async () => {
    const status: UpdateStatus = {
      machineId: M2,
      version: "1.2.0",
      slot: "B",
      state: "idle",
      lastCheck: "2030-01-02T03:04:05.000Z",
      lastRollback: {
        version: "1.3.0",
        reason: "health gate: web.service failed",
        at: "2030-01-01T00:00:00.000Z",
      },
      updatedAt: "2030-01-02T03:04:05.000Z",
    };
    await store.putStatus(status);
    await store.putStatus({ ...status, machineId: "9".repeat(32) });
    await store.markBad({ version: "1.3.0", reason: "first", machineId: M2, at: "2030-01-01T00:00:00.000Z" });
    await store.markBad({
      version: "1.3.0",
      reason: "second",
      machineId: M1,
      at: "2030-01-01T00:00:01.000Z",
    });
    expect(await store.badVersions()).toEqual(new Set(["1.3.0"]));
    const res = await request("GET", "/flotilla/v1/updates");
    expect(res.status, res.text).toBe(200);
    const body = JSON.parse(res.text) as WireUpdates;
    expect(body.machines).toEqual([
      { machineID: M1, primaryIP: "10.0.0.1", inCluster: true },
      { machineID: M2, primaryIP: "10.0.0.2", inCluster: true, status },
      { machineID: "9".repeat(32), inCluster: false, status: { ...status, machineId: "9".repeat(32) } },
    ]);
    expect(body.bad).toEqual([
      { version: "1.3.0", reason: "first", machineId: M2, at: "2030-01-01T00:00:00.000Z" },
    ]);
    const fl = body.groups.find((g) => g.name === "fl");
    expect(fl).toMatchObject({ strategy: "etcd-lock", maxHolders: 1, paused: false });
    expect(fl?.holders.map((h) => h.holder)).toEqual(["node-b"]);
    expect(body.groups.map((g) => g.name)).toContain("default");
  });

  it("changes a group's config field by field, refusing bad fields by name", async () => {
    const put = (body: unknown, group = "web") =>
      request("PUT", `/flotilla/v1/update-groups/${group}`, JSON.stringify(body), JSON_TYPE);
    let res = await put({ maxHolders: 3 });
    expect(res.status, res.text).toBe(200);
    expect(JSON.parse(res.text)).toEqual({
      name: "web",
      strategy: "etcd-lock",
      maxHolders: 3,
      paused: false,
      holders: [],
    });
    const window = { days: ["sat"], start: "02:00", lengthMinutes: 60, timeZone: "Europe/Berlin" };
    res = await put({ paused: true, window });
    expect(JSON.parse(res.text)).toMatchObject({ maxHolders: 3, paused: true, window });
    res = await put({ window: null });
    expect(JSON.parse(res.text)).not.toHaveProperty("window");
    for (const [body, field] of [
      [{ maxHolders: 0 }, /maxHolders/],
      [{ strategy: "later" }, /strategy/],
      [{ paused: "yes" }, /paused/],
      [{ window: { ...window, timeZone: "Mars/Base" } }, /timeZone/],
      [{ colour: "red" }, /colour/],
      [{}, /at least one/],
    ] as const) {
      res = await put(body);
      expect(res.status, res.text).toBe(400);
      expect(JSON.parse(res.text).error.message).toMatch(field);
    }
    res = await put({ paused: false }, "no%2Fslash");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).error.message).toMatch(/group/);
    expect(await store.groupConfig("web")).toEqual({ strategy: "etcd-lock", maxHolders: 3, paused: true });
  });

  it("releases a stuck holder, and answers 404 for one that holds nothing", async () => {
    const stuck = await lock.acquire("admin", "stuck");
    let res = await request("DELETE", "/flotilla/v1/update-groups/admin/holders/stuck");
    expect(res.status, res.text).toBe(204);
    expect((await lock.view("admin")).holders).toEqual([]);
    expect(await lock.keepAlive(stuck.leaseId as string)).toBe(false);
    res = await request("DELETE", "/flotilla/v1/update-groups/admin/holders/stuck");
    expect(res.status).toBe(404);
    expect(JSON.parse(res.text).error.message).toBe("group admin has no lock holder stuck");
  });

  it("clears a bad version", async () => {
    expect((await request("DELETE", "/flotilla/v1/updates/bad/1.3.0")).status).toBe(204);
    expect(await store.badVersions()).toEqual(new Set());
    expect((await request("DELETE", "/flotilla/v1/updates/bad/1.3.0")).status).toBe(404);
  });

  it("asks one machine or all to check now", async () => {
    let res = await request(
      "POST",
      "/flotilla/v1/updates/check",
      JSON.stringify({ machineID: M2 }),
      JSON_TYPE,
    );
    expect(res.status, res.text).toBe(200);
    const one = JSON.parse(res.text) as { target: string; nonce: string };
    expect(one.target).toBe(M2);
    expect(JSON.parse((await client.get(keys.updateCheck(M2)).string()) ?? "")).toMatchObject({
      nonce: one.nonce,
    });
    res = await request("POST", "/flotilla/v1/updates/check");
    expect(JSON.parse(res.text)).toMatchObject({ target: "all" });
    res = await request(
      "POST",
      "/flotilla/v1/updates/check",
      JSON.stringify({ machineID: "f".repeat(32) }),
      JSON_TYPE,
    );
    expect(res.status).toBe(404);
    res = await request("GET", "/flotilla/v1/updates/check");
    expect(res.status).toBe(405);
  });
});

describe("fleetctl against the real API", () => {
  async function fleetctl(...args: string[]) {
    let stdout = "";
    let stderr = "";
    const code = await runFleetctl([`--endpoint=${base}`, ...harnessPki().fleetctlFlags(), ...args], {
      stdout: { write: (c: string) => (stdout += c) },
      stderr: { write: (c: string) => (stderr += c) },
      env: {},
      cwd: process.cwd(),
    });
    return { code, stdout, stderr };
  }

  it("pauses, sizes and releases through the API, and shows it in update-status", async () => {
    expect(await fleetctl("update", "lock-size", "cli", "2")).toMatchObject({ code: 0 });
    expect(await fleetctl("update", "pause", "cli")).toMatchObject({ code: 0 });
    expect(await store.groupConfig("cli")).toEqual({ strategy: "etcd-lock", maxHolders: 2, paused: true });
    expect(await fleetctl("update", "resume", "cli")).toMatchObject({ code: 0 });
    await lock.acquire("cli", "stuck-node");
    const status = await fleetctl("update-status");
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^cli\t+etcd-lock\t+1\/2\t+false\t+-\t+stuck-node$/m);
    expect(status.stdout).toMatch(/^22222222\.\.\.\t+10\.0\.0\.2\t+1\.2\.0\t+B\t+idle\t/m);
    expect(await fleetctl("update", "release", "cli", "stuck-node")).toMatchObject({
      code: 0,
      stdout: "Released the reboot slot of stuck-node in group cli\n",
    });
    expect(await fleetctl("update", "release", "cli", "stuck-node")).toMatchObject({ code: 1 });
    expect(await fleetctl("update", "pause", "no_such")).toMatchObject({
      code: 1,
      stderr:
        'Error changing group no_such: googleapi: Error 400: invalid group: "no_such" must match ^[a-zA-Z0-9.-]+$\n',
    });
    expect(await fleetctl("update", "check", "2222")).toMatchObject({
      code: 0,
      stdout: `Update check requested on ${M2}\n`,
    });
    const machines = await fleetctl("list-machines", "--no-legend", "--fields=machine,os,slot,rollback");
    expect(machines.stdout).toBe(
      "11111111...\t-\t-\t-\n22222222...\t1.2.0\tB\t1.3.0: health gate: web.service failed\n",
    );
  });
});
