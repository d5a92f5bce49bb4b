// Corrupt registry values on real machines and etcd: `null`, wrong types and garbage bytes in every
// key family the agents read are quarantined (skipped, shown with a reason through the API and
// fleetctl, logged at error), the agents stay healthy, every other unit is still scheduled and
// reconciled, and fixing or deleting the values releases them (docs/etcd-keys.md, "Quarantine").

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { QuarantinedValue } from "../../agent/registry/quarantine.js";
import { Cluster, type Machine } from "../harness/index.js";
import { EtcdView, fleetctl, httpRequest, invocationID, unitDir, waitFor } from "./support.js";

let cluster: Cluster;
let etcd: EtcdView;
const machines = () => cluster.machines as Machine[];
const first = () => machines()[0] as Machine;
const fc = (args: string[], files: Record<string, string> = {}) =>
  fleetctl(first().apiURL, args, unitDir(files));
const SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n";

/** Bytes that are neither UTF-8 nor JSON. */
const GARBAGE = Buffer.from([0xff, 0xfe, 0x00, 0x9c, 0x7b, 0xc3]);
/** A machine ID no machine has. */
const GHOST_ID = "0000000000000000000000000000dead";

async function getJSON<T>(m: Machine, path: string): Promise<{ status: number; body: T }> {
  const r = await httpRequest("GET", m.apiURL, path);
  return { status: r.status, body: JSON.parse(r.text) as T };
}

async function quarantined(m: Machine): Promise<QuarantinedValue[]> {
  const r = await getJSON<{ values: QuarantinedValue[] }>(m, "/flotilla/v1/quarantine");
  expect(r.status).toBe(200);
  return r.body.values;
}

async function unreachableLines(m: Machine): Promise<number> {
  return (await m.journal("flotilla-agent.service", 5000))
    .split("\n")
    .filter((l) => /etcd (is )?unreachable/.test(l)).length;
}

beforeAll(async () => {
  cluster = await Cluster.start({ machines: 2 });
  etcd = new EtcdView(cluster.endpoint);
  await waitFor(
    "2 machines",
    async () => (await fc(["list-machines", "--no-legend"])).stdout.trim().split("\n").length === 2,
    30_000,
  );
}, 120_000);

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

describe("registry quarantine", () => {
  /** Key → value written, and a pattern its reason must match. */
  let bad: { key: string; value: string | Buffer; reason: RegExp }[];

  it("quarantines bad values in every key family with a reason; every other unit is still scheduled and reconciled", async () => {
    const k = etcd.keys;
    const m1 = first().id;
    expect((await fc(["start", "before.service"], { "before.service": SLEEPER })).code).toBe(0);
    const beforeOn = await waitFor("before.service active", () => etcd.activeOn("before.service"), 30_000);
    const beforeMachine = machines().find((m) => m.id === beforeOn) as Machine;
    const beforeInvocation = await invocationID(beforeMachine, "before.service");
    const unreachableBefore = await Promise.all(machines().map(unreachableLines));

    const unit = { name: "typed.service", options: [], hash: "h", desiredState: 7 };
    bad = [
      { key: k.unit("null.service"), value: "null", reason: /^want a JSON object, got null$/ },
      {
        key: k.unit("typed.service"),
        value: JSON.stringify(unit),
        reason: /^field desiredState: want a string, got number 7$/,
      },
      { key: k.unit("garbage.service"), value: GARBAGE, reason: /^not JSON: / },
      {
        key: k.schedule("ghost.service"),
        value: '{"machineID":5,"at":1}',
        reason: /^field machineID: want a string, got number 5$/,
      },
      { key: k.pending("ghost.service"), value: "null", reason: /^want a JSON object, got null$/ },
      {
        key: k.failures("ghost.service"),
        value: '{"hash":"h","moves":"no"}',
        reason: /^field moves: want an array, got string "no"$/,
      },
      { key: k.machine(GHOST_ID), value: GARBAGE, reason: /^not JSON: / },
      { key: k.metadata(m1, "disk"), value: GARBAGE, reason: /^metadata value: not UTF-8 text/ },
      { key: k.state("ghost.service", m1), value: "[1,2]", reason: /^want a JSON object, got an array$/ },
      {
        key: k.service("ghost", m1, "ghost.service"),
        value: "null",
        reason: /^want a JSON object, got null$/,
      },
      {
        key: k.updateStatus(GHOST_ID),
        value: '{"machineId":5}',
        reason: /^field machineId: want a string, got number 5$/,
      },
    ];
    const leaderBefore = await etcd.leader();
    for (const b of bad) await etcd.client.put(b.key).value(b.value);
    // A lease-less value would never expire: the cluster would have no engine again unless one
    // replaces it.
    await etcd.client.put(k.engineLeader()).value("null");

    // A fresh unit is scheduled and started: the engine and the agents still work.
    const started = await fc(["start", "after.service"], { "after.service": SLEEPER });
    expect(started.code, started.stderr).toBe(0);
    expect(await waitFor("after.service active", () => etcd.activeOn("after.service"), 30_000)).toBeDefined();
    expect(await invocationID(beforeMachine, "before.service")).toBe(beforeInvocation);

    // The leader key holds a machine again, under a lease.
    const leaderKv = await waitFor(
      "a valid leader key",
      async () => {
        const kv = (await etcd.client.get(k.engineLeader()).exec()).kvs[0];
        return kv && /^[0-9a-f]{32}$/.test(kv.value.toString()) && String(kv.lease) !== "0" ? kv : undefined;
      },
      15_000,
    );
    console.log(`leader before ${leaderBefore}, after the bad value ${leaderKv.value.toString()}`);

    for (const m of machines()) {
      // update/ is read on demand: an overview checks it.
      expect((await httpRequest("GET", m.apiURL, "/flotilla/v1/updates")).status).toBe(200);
      const values = await waitFor(
        `${m.name}: every bad value quarantined`,
        async () => {
          const v = await quarantined(m);
          const all = bad.every((b) => v.some((q) => q.key === b.key));
          return all && !v.some((q) => q.key === k.engineLeader()) ? v : undefined;
        },
        10_000,
      );
      for (const b of bad) expect(values.find((q) => q.key === b.key)?.reason, b.key).toMatch(b.reason);
      const health = await getJSON<{ ok: boolean; quarantined: number; view: { state: string } }>(
        m,
        "/flotilla/v1/health",
      );
      expect(health.status).toBe(200);
      expect(health.body).toMatchObject({ ok: true, view: { state: "live" } });
      expect(health.body.quarantined).toBe(bad.length);
      const journal = await m.journal("flotilla-agent.service", 5000);
      expect(journal).toContain("registry value quarantined");
      expect(journal).toContain(k.engineLeader());
    }
    const unreachableAfter = await Promise.all(machines().map(unreachableLines));
    expect(unreachableAfter).toEqual(unreachableBefore);

    // fleetctl: the table is fleet's, the bad unit records are named on stderr, exit 0.
    const files = await fc(["list-unit-files", "--no-legend", "--fields=unit,dstate"]);
    expect(files.code).toBe(0);
    expect(files.stdout).toBe("after.service\tlaunched\nbefore.service\tlaunched\n");
    expect(files.stderr).toContain("skipped until fixed or deleted");
    expect(files.stderr).toContain(`${k.unit("null.service")}: want a JSON object, got null\n`);
    expect(files.stderr).toContain(
      `${k.unit("typed.service")}: field desiredState: want a string, got number 7\n`,
    );
    expect(files.stderr).toContain(`${k.schedule("ghost.service")}: field machineID`);
    const listed = await fc(["list-machines", "--no-legend"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.trim().split("\n")).toHaveLength(2);
    expect(listed.stderr).toContain(`${k.machine(GHOST_ID)}: not JSON`);
    expect(listed.stderr).toContain(`${k.metadata(m1, "disk")}: metadata value: not UTF-8 text`);
  }, 120_000);

  it("fixing or deleting the bad values releases them", async () => {
    const k = etcd.keys;
    await etcd.client.put(k.metadata(first().id, "disk")).value("ssd");
    // A bad unit record counts as absent: starting a good file of that name replaces it.
    const replaced = await fc(["start", "typed.service"], { "typed.service": SLEEPER });
    expect(replaced.code, replaced.stderr).toBe(0);
    const fixed = new Set([k.metadata(first().id, "disk"), k.unit("typed.service")]);
    for (const b of bad) if (!fixed.has(b.key)) await etcd.client.delete().key(b.key);
    for (const m of machines()) {
      expect((await httpRequest("GET", m.apiURL, "/flotilla/v1/updates")).status).toBe(200);
      await waitFor(`${m.name}: quarantine empty`, async () => (await quarantined(m)).length === 0, 10_000);
    }
    const listed = await fc(["list-machines", "--no-legend", "--fields=machine,metadata", "--full"]);
    expect(listed.stderr).toBe("");
    expect(listed.stdout).toMatch(new RegExp(`^${first().id}\t.*disk=ssd`, "m"));
    const files = await fc(["list-unit-files", "--no-legend", "--fields=unit"]);
    expect(files).toMatchObject({
      code: 0,
      stdout: "after.service\nbefore.service\ntyped.service\n",
      stderr: "",
    });
    expect(await etcd.activeOn("typed.service")).toBeDefined();
    expect((await fc(["destroy", "before.service", "after.service", "typed.service"])).code).toBe(0);
  }, 60_000);
});
