// One identity per machine and membership that heals, on real machines and etcd: a second machine
// given the first one's machine ID is refused; a machine whose key is deleted is back at once and
// restarts nothing; a machine whose lease is revoked rejoins under a new lease.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster, type Machine } from "../harness/index.js";
import { EtcdView, fleetctl, invocationID, unitDir, waitFor } from "./support.js";

const TTL_MS = 5000;

let cluster: Cluster;
let etcd: EtcdView;
const api = () => (cluster.machines.find((m) => m.running) as Machine).apiURL;
const fc = (args: string[], files: Record<string, string> = {}) => fleetctl(api(), args, unitDir(files));
const sleeper = (machine: Machine) =>
  `[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineID=${machine.id}\n`;

async function sh(m: Machine, script: string): Promise<string> {
  const r = await m.exec(["sh", "-c", script]);
  if (r.code !== 0) throw new Error(`${m.name}: ${script}: exit ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

async function members(): Promise<{ id: string; ip: string }[]> {
  const r = await fc(["list-machines", "--full", "--no-legend", "--fields", "machine,ip"]);
  return r.stdout
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [id = "", ip = ""] = l.split("\t");
      return { id, ip };
    });
}

beforeAll(async () => {
  cluster = await Cluster.start({ machines: 3 });
  etcd = new EtcdView(cluster.endpoint);
  await waitFor("3 machines", async () => (await members()).length === 3, 30_000);
}, 120_000);

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

describe("membership", () => {
  it("a machine whose key is deleted is back within TTL + 2 s and restarts none of its units", async () => {
    const [m] = cluster.machines as Machine[];
    const units = ["keep1.service", "keep2.service"];
    const files = Object.fromEntries(units.map((u) => [u, sleeper(m as Machine)]));
    // Pinned, so they have nowhere else to go: they stay scheduled to m.
    expect((await fc(["start", ...units], files)).code).toBe(0);
    const before = await Promise.all(units.map((u) => invocationID(m as Machine, u)));

    const t = Date.now();
    await etcd.client.delete().key(etcd.keys.machine((m as Machine).id));
    await waitFor(
      "the machine's key again",
      async () => (await etcd.client.get(etcd.keys.machine((m as Machine).id)).string()) !== null,
      TTL_MS + 2000,
      20,
    );
    console.log(`deleted machine key back after ${Date.now() - t} ms`);
    // Let the engine and the agent react to the deletion, if they do.
    await new Promise((r) => setTimeout(r, 2000));
    for (const [i, u] of units.entries()) {
      expect((await etcd.placement(u))?.machineID).toBe((m as Machine).id);
      expect(await invocationID(m as Machine, u)).toBe(before[i]);
    }
    expect((await fc(["destroy", ...units])).code).toBe(0);
  }, 60_000);

  it("a machine whose lease is revoked rejoins under a new lease within a TTL", async () => {
    const m = cluster.machines[1] as Machine;
    const key = etcd.keys.machine(m.id);
    const old = (await etcd.client.get(key).exec()).kvs[0]?.lease;
    expect(old).toBeDefined();
    const t = Date.now();
    await etcd.client.leaseClient.leaseRevoke({ ID: old as string });
    const lease = await waitFor(
      "the machine's key under a new lease",
      async () => {
        const kv = (await etcd.client.get(key).exec()).kvs[0];
        return kv !== undefined && kv.lease !== old ? kv.lease : undefined;
      },
      TTL_MS + 2000,
      50,
    );
    console.log(`revoked lease: rejoined under lease ${lease} after ${Date.now() - t} ms`);
    expect((await members()).map((x) => x.id)).toContain(m.id);
  }, 60_000);

  it("a second machine given the first one's machine ID is refused, naming the ID and the other address", async () => {
    const [first, second] = cluster.machines as Machine[];
    if (first === undefined || second === undefined) throw new Error("need two machines");
    await sh(second, `systemctl stop flotilla-agent.service && echo ${first.id} > /etc/machine-id`);
    await sh(second, "systemctl start --no-block flotilla-agent.service");
    const result = await waitFor(
      "the duplicate agent to exit",
      async () => {
        const state = await sh(second, "systemctl show -p ActiveState,ExecMainStatus flotilla-agent.service");
        return /ActiveState=(failed|inactive)/.test(state) && state.includes("ExecMainStatus=3")
          ? state
          : undefined;
      },
      TTL_MS + 20_000,
      200,
    );
    expect(result).toContain("ExecMainStatus=3");
    const journal = await second.journal("flotilla-agent.service", 50);
    expect(journal).toContain(
      `machine ID ${first.id} is already a live member of the cluster at ${first.ip}`,
    );
    // Not restarted (RestartPreventExitStatus), and the cluster shows the ID once, with the first's address.
    await new Promise((r) => setTimeout(r, 3000));
    expect(await sh(second, "systemctl show -p ActiveState --value flotilla-agent.service")).toMatch(
      /failed|inactive/,
    );
    const listed = (await members()).filter((x) => x.id === first.id);
    expect(listed).toEqual([{ id: first.id, ip: first.ip }]);
  }, 60_000);
});
