// Every [X-Fleet] option, template specifiers and the cases where nothing can be scheduled, on
// 3 real machines. Machines carry metadata `name=m1..m3` (plus region) so tests can aim at one.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Cluster, type Machine } from "../harness/index.js";
import { destroyAllUnits, EtcdView, fleetctl, httpRequest, unitDir, waitFor } from "./support.js";

const SLEEP = "[Service]\nExecStart=/bin/sleep infinity\n";
const unit = (xfleet: string) => `${SLEEP}\n[X-Fleet]\n${xfleet}\n`;

let cluster: Cluster;
let etcd: EtcdView;
let endpoint: string;
let m1: Machine;
let m2: Machine;
let m3: Machine;

beforeAll(async () => {
  cluster = await Cluster.start({
    machines: 3,
    metadata: [
      { name: "m1", region: "east" },
      { name: "m2", region: "west" },
      { name: "m3", region: "east" },
    ],
  });
  [m1, m2, m3] = cluster.machines as [Machine, Machine, Machine];
  etcd = new EtcdView(cluster.endpoint);
  endpoint = m1.apiURL;
  await waitFor(
    "3 machines",
    async () =>
      (await fleetctl(endpoint, ["list-machines", "--no-legend"])).stdout.trim().split("\n").length === 3,
    30_000,
  );
});

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

// Each test starts from an empty cluster.
afterEach(() => destroyAllUnits((args) => fleetctl(endpoint, args)));

/** Starts units from `files` (all written to one dir) and returns fleetctl's result. */
async function start(files: Record<string, string>, ...names: string[]) {
  return fleetctl(endpoint, ["start", "--block-attempts=5", ...names], unitDir(files));
}

async function placedOn(name: string): Promise<string | undefined> {
  return (await etcd.placement(name))?.machineID;
}

describe("[X-Fleet] scheduling", () => {
  it("MachineID pins a unit, by full or short ID, and %i expands in a template", async () => {
    const r = await start(
      { "pin@.service": unit("MachineID=%i") },
      `pin@${m2.id}.service`,
      `pin@${m3.id.slice(0, 8)}.service`,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await placedOn(`pin@${m2.id}.service`)).toBe(m2.id);
    expect(await placedOn(`pin@${m3.id.slice(0, 8)}.service`)).toBe(m3.id);
    expect((await m2.exec(["systemctl", "is-active", `pin@${m2.id}.service`])).stdout.trim()).toBe("active");
  });

  it("MachineMetadata ORs values of one key and ANDs keys; %i expands", async () => {
    const r = await start(
      {
        "west.service": unit("MachineMetadata=region=west"),
        "either.service": unit('MachineMetadata="name=m2" "name=m3"\nMachineMetadata=region=east'),
        "meta@.service": unit("MachineMetadata=name=%i"),
      },
      "west.service",
      "either.service",
      "meta@m1.service",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await placedOn("west.service")).toBe(m2.id);
    expect(await placedOn("either.service")).toBe(m3.id);
    expect(await placedOn("meta@m1.service")).toBe(m1.id);
  });

  it("the deprecated X-Condition spellings still work", async () => {
    const r = await start(
      {
        "old.service": unit("X-ConditionMachineMetadata=region=west"),
        "oldpin.service": unit(`X-ConditionMachineID=${m3.id}`),
      },
      "old.service",
      "oldpin.service",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await placedOn("old.service")).toBe(m2.id);
    expect(await placedOn("oldpin.service")).toBe(m3.id);
  });

  it("Conflicts spreads instances, and says why when no machine is left", async () => {
    const files = { "spread@.service": unit("Conflicts=spread@*.service") };
    const r = await start(files, "spread@1.service", "spread@2.service", "spread@3.service");
    expect(r.code, r.stderr).toBe(0);
    const machines = await Promise.all([1, 2, 3].map((i) => placedOn(`spread@${i}.service`)));
    expect(new Set(machines).size).toBe(3);

    const extra = await start(files, "spread@4.service");
    expect(extra.code).toBe(1);
    expect(extra.stderr).toMatch(/spread@4\.service cannot be scheduled: .*conflicts with spread@/);
    expect(await placedOn("spread@4.service")).toBeUndefined();
  });

  it("MachineOf puts a unit beside its peer; mutual MachineOf can never be scheduled", async () => {
    const r = await start(
      { "db.service": unit("MachineMetadata=name=m3"), "app.service": unit("MachineOf=db.service") },
      "db.service",
      "app.service",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await placedOn("app.service")).toBe(m3.id);

    const cycle = await start(
      { "a.service": unit("MachineOf=b.service"), "b.service": unit("MachineOf=a.service") },
      "a.service",
      "b.service",
    );
    expect(cycle.code).toBe(1);
    expect(cycle.stderr).toMatch(/cannot be scheduled: .*MachineOf cycle/);
  });

  it("Global runs on every machine that matches its metadata", async () => {
    const r = await start(
      { "everywhere.service": unit("Global=true\nMachineMetadata=region=east") },
      "everywhere.service",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("Triggered global unit everywhere.service start");
    for (const m of [m1, m3]) {
      await waitFor(
        `everywhere.service active on ${m.name}`,
        async () =>
          (await m.exec(["systemctl", "is-active", "everywhere.service"])).stdout.trim() === "active",
        15_000,
      );
    }
    expect((await m2.exec(["systemctl", "is-active", "everywhere.service"])).stdout.trim()).not.toBe(
      "active",
    );
    const units = await fleetctl(endpoint, ["list-units", "--no-legend", "--fields", "unit,machine,active"]);
    expect(units.stdout.trim().split("\n")).toHaveLength(2);
  });

  it("Replaces moves the replaced unit off the machine it takes", async () => {
    expect((await start({ "old.service": unit("MachineMetadata=region=east") }, "old.service")).code).toBe(0);
    const oldMachine = await placedOn("old.service");
    const target = cluster.machines.find((m) => m.id === oldMachine) as Machine;
    const targetName = ["m1", "m2", "m3"][cluster.machines.indexOf(target)];
    const r = await start(
      { "new.service": unit(`MachineMetadata=name=${targetName}\nReplaces=old.service`) },
      "new.service",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(await placedOn("new.service")).toBe(oldMachine);
    const moved = await waitFor(
      "old.service active elsewhere",
      async () => {
        const on = await etcd.activeOn("old.service");
        return on !== undefined && on !== oldMachine ? on : undefined;
      },
      20_000,
    );
    expect([m1.id, m3.id]).toContain(moved);
  });

  it("says why a unit cannot be scheduled instead of hanging", async () => {
    const meta = await start({ "nowhere.service": unit("MachineMetadata=region=mars") }, "nowhere.service");
    expect(meta.code).toBe(1);
    expect(meta.stderr).toMatch(/nowhere\.service cannot be scheduled: no machine has metadata region=mars/);

    const ghost = await start(
      { "ghost.service": unit("MachineID=0123456789abcdef0123456789abcdef") },
      "ghost.service",
    );
    expect(ghost.code).toBe(1);
    expect(ghost.stderr).toMatch(/ghost\.service cannot be scheduled: .*01234567/);
    const files = await fleetctl(endpoint, ["list-unit-files", "--no-legend", "--fields", "unit,reason"]);
    expect(files.stdout).toMatch(/ghost\.service\t+.*01234567/);
  });

  it("rejects invalid option combinations with fleet's message", async () => {
    const r = await start({ "bad.service": unit(`MachineID=${m1.id}\nGlobal=true`) }, "bad.service");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Error creating units: .*MachineID cannot be used with Global/);
    const api = await httpRequest("PUT", endpoint, "/fleet/v1/units/bad.service", {
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        desiredState: "launched",
        options: [
          { section: "Service", name: "ExecStart", value: "/bin/true" },
          { section: "X-Fleet", name: "Global", value: "true" },
          { section: "X-Fleet", name: "MachineOf", value: "x.service" },
        ],
      }),
    });
    expect(api.status).toBe(400);
    expect(JSON.parse(api.text).error.message).toMatch(/Global cannot be used with Peers/);
  });
});
