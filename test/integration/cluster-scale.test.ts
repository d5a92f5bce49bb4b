// The registry view at scale, on 3 real machines: 10 000 unit records (about 5 MB, past the 4 MiB a
// single etcd reply may carry), a watch cut by an etcd restart, and a compaction past the agents'
// revision while they cannot reach etcd. Through all of it the API answers, the engine places and
// the reconcilers start units, and no running unit restarts.

import { execFileSync } from "node:child_process";
import type { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEtcdClient } from "../../agent/registry/client.js";
import { Keys } from "../../agent/registry/keys.js";
import { unitHash } from "../../agent/unit/index.js";
import { Cluster, type Machine } from "../harness/index.js";
import { EtcdView, fleetctlWith, httpRequest, invocationID, machineByID, waitFor } from "./support.js";

const RECORDS = 10_000;
/** etcd's default limit of operations in one transaction. */
const TXN_OPS = 128;

let cluster: Cluster;
let etcd: EtcdView;
/** Straight to etcd over loopback, which the machines' firewall rule below does not cover. */
let direct: Etcd3;
const keys = new Keys();
const fc = (args: string[], files: Record<string, string> = {}) =>
  fleetctlWith(cluster.machines[0]?.apiURL ?? "", args, files);
const sleeper = "[Service]\nExecStart=/bin/sleep infinity\n";

interface Health {
  ok: boolean;
  view?: { state: string; lists: number; units: number; revision: number; error?: string };
}
async function health(m: Machine): Promise<{ status: number; body: Health }> {
  const r = await httpRequest("GET", m.apiURL, "/flotilla/v1/health");
  return { status: r.status, body: JSON.parse(r.text) as Health };
}

/** A filler unit of about 500 bytes: 10 000 of them do not fit in one 4 MiB etcd reply. */
function fillerRecord(i: number): string {
  const name = `scale-${String(i).padStart(5, "0")}.service`;
  const options = [
    { section: "Unit", name: "Description", value: `scale filler ${i} ${"x".repeat(200)}` },
    { section: "Service", name: "ExecStart", value: "/bin/sleep infinity" },
    { section: "X-Fleet", name: "MachineMetadata", value: "role=nowhere" },
  ];
  return JSON.stringify({ name, options, hash: unitHash(options), desiredState: "inactive" });
}

async function runningInvocations(units: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const u of units) {
    const on = await etcd.activeOn(u);
    if (on) out.set(u, await invocationID(machineByID(cluster, on), u));
  }
  return out;
}

/** Every machine's view is live and holds `units` units, and has listed `lists` times at least. */
async function viewsConverged(units: number, lists = 1): Promise<void> {
  await waitFor(
    `every machine's view live with ${units} units`,
    async () => {
      for (const m of cluster.machines) {
        const h = await health(m);
        if (h.status !== 200 || h.body.view?.units !== units || (h.body.view?.lists ?? 0) < lists)
          return false;
      }
      return true;
    },
    60_000,
  );
}

/**
 * Each machine's agent PID. A crashed agent is restarted by systemd within a second, and a new one
 * counts its lists from zero again: comparing PIDs is what tells a restart from a resumed watch.
 */
async function agentPids(): Promise<Map<string, string>> {
  const pids = new Map<string, string>();
  for (const m of cluster.machines) {
    const r = await m.exec(["systemctl", "show", "-p", "MainPID", "--value", "flotilla-agent.service"]);
    pids.set(m.name, r.stdout.trim());
  }
  return pids;
}

/** Runs `check`; when it fails, prints each agent's recent journal before rethrowing. */
async function dumpLogsOnFailure<T>(check: () => Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (err) {
    for (const m of cluster.machines) {
      // Warnings and errors, systemd's lines about the agent's process and how often it restarted.
      const j = await m.exec([
        "sh",
        "-c",
        "journalctl -u flotilla-agent.service -o cat --no-pager | grep -v '\"level\":[23]0,' | tail -n 80; " +
          "systemctl show -p NRestarts -p ExecMainStatus flotilla-agent.service",
      ]);
      console.log(`--- ${m.name} agent journal ---\n${j.stdout}`);
    }
    throw err;
  }
}

beforeAll(async () => {
  cluster = await Cluster.start({ machines: 3 });
  etcd = new EtcdView(cluster.endpoint);
  direct = createEtcdClient([cluster.etcd.endpoints.at(-1) ?? cluster.endpoint], { tls: cluster.etcd.tls });
  await waitFor(
    "3 machines and a leader",
    async () => (await fc(["list-machines", "--no-legend"])).stdout.trim().split("\n").length === 3,
    60_000,
  );
}, 180_000);

afterAll(async () => {
  direct?.close();
  etcd?.close();
  await cluster?.teardown();
});

describe("10 000 unit records", () => {
  const units = ["s1.service", "s2.service", "s3.service"];
  let before = new Map<string, string>();

  it("are listed by every agent's view, and the API, engine and reconcilers work", async () => {
    let t = Date.now();
    for (let i = 0; i < RECORDS; i += TXN_OPS) {
      const success = [];
      for (let j = i; j < Math.min(i + TXN_OPS, RECORDS); j++) {
        const record = fillerRecord(j);
        const name = (JSON.parse(record) as { name: string }).name;
        success.push({ request_put: { key: Buffer.from(keys.unit(name)), value: Buffer.from(record) } });
      }
      await direct.kv.txn({ success });
    }
    console.log(`wrote ${RECORDS} unit records in ${Date.now() - t} ms`);
    await viewsConverged(RECORDS);
    for (const m of cluster.machines) {
      const rss = await m.exec([
        "sh",
        "-c",
        "grep VmRSS /proc/$(systemctl show -p MainPID --value flotilla-agent.service)/status",
      ]);
      console.log(`${m.name} agent with ${RECORDS} records in its view: ${rss.stdout.trim()}`);
    }

    // The engine places, and the reconcilers start, units among the 10 000 records.
    t = Date.now();
    const files = Object.fromEntries(units.map((u) => [u, sleeper]));
    const started = await fc(["start", ...units], files);
    expect(started.code, started.stderr).toBe(0);
    console.log(`fleetctl start of 3 units among ${RECORDS}: ${Date.now() - t} ms`);
    before = await runningInvocations(units);
    expect(before.size).toBe(3);

    // Every page of every list answers; fleetctl pages through all of them.
    t = Date.now();
    const listed = await fc(["list-unit-files", "--no-legend", "--fields", "unit"]);
    expect(listed.code).toBe(0);
    const names = listed.stdout.trim().split("\n");
    expect(names).toHaveLength(RECORDS + units.length);
    expect(names).toContain("scale-09999.service");
    console.log(
      `fleetctl list-unit-files (${names.length} units, ${Math.ceil(names.length / 100)} pages): ${Date.now() - t} ms`,
    );
    t = Date.now();
    const states = await fc(["list-units", "--no-legend", "--fields", "unit,active"]);
    expect(states.code).toBe(0);
    for (const u of units)
      expect(states.stdout).toMatch(new RegExp(`^${u.replace(".", "\\.")}\t+active$`, "m"));
    console.log(`fleetctl list-units: ${Date.now() - t} ms`);

    for (const m of cluster.machines) {
      t = Date.now();
      const one = await httpRequest("GET", m.apiURL, "/fleet/v1/units/scale-04242.service");
      expect(one.status).toBe(200);
      expect(JSON.parse(one.text)).toMatchObject({ name: "scale-04242.service", desiredState: "inactive" });
      console.log(`GET /fleet/v1/units/scale-04242.service on ${m.name}: ${Date.now() - t} ms`);
    }
    // An inactive record is never placed; the engine has worked through all of them.
    expect(await etcd.placement("scale-00001.service")).toBeUndefined();
  }, 300_000);

  it("resume their watch after an etcd restart, with no relist and no unit restarted", async () => {
    const listsBefore = new Map<string, number>();
    for (const m of cluster.machines) listsBefore.set(m.name, (await health(m)).body.view?.lists ?? 0);
    const pids = await agentPids();
    await cluster.etcd.stop();
    const m = cluster.machines[1] as Machine;
    const broken = await waitFor(
      "the agent to report its view broken",
      async () => {
        const h = await health(m);
        return h.status === 503 && h.body.view?.state === "broken" ? h.body : undefined;
      },
      20_000,
    );
    console.log(`health while etcd is down: ${JSON.stringify(broken.view)}`);
    await cluster.etcd.start();
    await viewsConverged(RECORDS + units.length);
    // etcd kept its history: each agent resumed from its revision instead of listing again (a
    // restarted agent would have listed once, like before: its PID tells).
    for (const m of cluster.machines)
      expect((await health(m)).body.view?.lists).toBe(listsBefore.get(m.name));
    expect(await agentPids()).toEqual(pids);

    // The engine and the reconcilers work again: a new unit is placed and started.
    expect((await fc(["start", "after-restart.service"], { "after-restart.service": sleeper })).code).toBe(0);
    expect(await runningInvocations(units)).toEqual(before);
  }, 120_000);

  it("relist after a compaction past their revision, with no unit restarted", async () => {
    const port = new URL(cluster.endpoint).port;
    const rule = [
      "INPUT",
      "-i",
      cluster.bridge.name,
      "-p",
      "tcp",
      "--dport",
      port,
      "-j",
      "REJECT",
      "--reject-with",
      "tcp-reset",
    ];
    const listsBefore = new Map<string, number>();
    for (const m of cluster.machines) listsBefore.set(m.name, (await health(m)).body.view?.lists ?? 0);
    const pids = await agentPids();
    execFileSync("iptables", ["-I", ...rule]);
    try {
      await waitFor(
        "every agent to lose its watch",
        async () => {
          for (const m of cluster.machines) if ((await health(m)).body.view?.state !== "broken") return false;
          return true;
        },
        20_000,
        100,
      );
      // While they cannot see it: a record goes, and etcd forgets the history they would resume from.
      await direct.delete().key(keys.unit("scale-00000.service")).exec();
      const rev = (await direct.put(`${keys.prefix}test/marker`).value("x").exec()).header.revision;
      await direct.kv.compact({ revision: rev, physical: true });
    } finally {
      execFileSync("iptables", ["-D", ...rule]);
    }
    await dumpLogsOnFailure(async () => {
      await waitFor(
        "every agent to relist",
        async () => {
          for (const m of cluster.machines) {
            const h = await health(m);
            if (h.status !== 200 || (h.body.view?.lists ?? 0) <= (listsBefore.get(m.name) ?? 0)) return false;
          }
          return true;
        },
        60_000,
      );
      // Each relisted in the process it had: none died on the watches etcd ended meanwhile.
      expect(await agentPids()).toEqual(pids);
    });
    // One record less, one unit (after-restart) more.
    await viewsConverged(RECORDS - 1 + units.length + 1);
    for (const m of cluster.machines) {
      expect((await httpRequest("GET", m.apiURL, "/fleet/v1/units/scale-00000.service")).status).toBe(404);
    }
    expect(await runningInvocations(units)).toEqual(before);
    expect(
      (await fc(["start", "after-compaction.service"], { "after-compaction.service": sleeper })).code,
    ).toBe(0);
  }, 120_000);
});
