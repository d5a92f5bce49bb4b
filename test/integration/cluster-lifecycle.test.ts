// The full unit lifecycle through every fleetctl command, on 3 real machines, with fleetctl's
// tables compared byte for byte.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unitHash } from "../../agent/unit/index.js";
import { Cluster } from "../harness/index.js";
import {
  EtcdView,
  fleetctl,
  goTabTable,
  invocationID,
  machineByID,
  machineCell,
  unitDir,
  waitFor,
} from "./support.js";

const HELLO = `[Unit]
Description=Hello from Flotilla

[Service]
ExecStart=/bin/sh -c "while true; do echo hello-from-flotilla; sleep 1; done"
`;

let cluster: Cluster;
let etcd: EtcdView;
let endpoint: string;
let dir: string;
const fc = (...args: string[]) => fleetctl(endpoint, args, dir);

beforeAll(async () => {
  cluster = await Cluster.start({
    machines: 3,
    metadata: [{ region: "east", disk: "ssd" }, { region: "west" }, {}],
  });
  etcd = new EtcdView(cluster.endpoint);
  endpoint = cluster.machines[0]?.apiURL ?? "";
  dir = unitDir({ "hello.service": HELLO });
  await waitFor(
    "3 machines",
    async () => (await fc("list-machines", "--no-legend")).stdout.split("\n").length === 4,
    30_000,
  );
});

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

describe("fleetctl lifecycle", () => {
  it("list-machines prints fleet's table", async () => {
    const r = await fc("list-machines");
    expect(r.code).toBe(0);
    const sorted = [...cluster.machines].sort((a, b) => (a.id < b.id ? -1 : 1));
    const meta = (i: number) => {
      const m = [{ disk: "ssd", region: "east" }, { region: "west" }, {}][
        cluster.machines.indexOf(sorted[i] as never)
      ];
      const pairs = Object.entries(m ?? {}).map(([k, v]) => `${k}=${v}`);
      return pairs.length ? pairs.join(",") : "-";
    };
    expect(r.stdout).toBe(
      goTabTable([
        ["MACHINE", "IP", "METADATA"],
        ...sorted.map((m, i) => [`${m.id.slice(0, 8)}...`, m.ip, meta(i)]),
      ]),
    );
    const full = await fc("list-machines", "-l", "--no-legend");
    expect(full.stdout).toContain(sorted[0]?.id);
  });

  it("submit stores the unit inactive; cat shows the serialized unit", async () => {
    const r = await fc("submit", "hello.service");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("Unit hello.service inactive\n");
    const cat = await fc("cat", "hello.service");
    expect(cat.stdout).toBe(
      '[Unit]\nDescription=Hello from Flotilla\n\n[Service]\nExecStart=/bin/sh -c "while true; do echo hello-from-flotilla; sleep 1; done"\n',
    );
    const files = await fc("list-unit-files", "--full");
    const hash = files.stdout.split("\n")[1]?.split("\t")[1];
    expect(hash).toMatch(/^[0-9a-f]{40}$/);
    expect(files.stdout).toBe(
      goTabTable([
        ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"],
        ["hello.service", hash ?? "", "inactive", "inactive", "-"],
      ]),
    );
  });

  it("load places the unit and loads it into systemd without starting it", async () => {
    const r = await fc("load", "hello.service");
    expect(r.code).toBe(0);
    const placed = await etcd.placement("hello.service");
    expect(placed).toBeDefined();
    const m = machineByID(cluster, placed?.machineID ?? "");
    expect(r.stdout).toBe(`Unit hello.service loaded on ${machineCell(m)}\n`);
    const active = await m.exec(["systemctl", "is-active", "hello.service"]);
    expect(active.stdout.trim()).toBe("inactive");
  });

  it("start launches it and waits until systemd reports it active", async () => {
    const r = await fc("start", "hello.service");
    expect(r.code).toBe(0);
    const placed = await etcd.placement("hello.service");
    const m = machineByID(cluster, placed?.machineID ?? "");
    expect(r.stdout).toBe(`Unit hello.service launched on ${machineCell(m)}\n`);
    expect((await m.exec(["systemctl", "is-active", "hello.service"])).stdout.trim()).toBe("active");

    const units = await fc("list-units");
    expect(units.stdout).toBe(
      goTabTable([
        ["UNIT", "MACHINE", "ACTIVE", "SUB"],
        ["hello.service", machineCell(m), "active", "running"],
      ]),
    );
    const files = await fc("list-unit-files");
    const hash = files.stdout.split("\n")[1]?.split("\t")[1] ?? "";
    expect(files.stdout).toBe(
      goTabTable([
        ["UNIT", "HASH", "DSTATE", "STATE", "TARGET"],
        ["hello.service", hash, "launched", "launched", machineCell(m)],
      ]),
    );
  });

  it("status and journal come from the unit's machine, through its agent", async () => {
    const st = await fc("status", "hello.service");
    expect(st.code).toBe(0);
    expect(st.stdout).toContain("hello.service - Hello from Flotilla");
    expect(st.stdout).toMatch(/Active: active \(running\)/);
    await waitFor(
      "a journal line",
      async () => (await fc("journal", "hello.service")).stdout.includes("hello-from-flotilla"),
      15_000,
    );
    const j = await fc("journal", "--lines", "3", "hello.service");
    expect(j.code).toBe(0);
    expect(j.stdout.split("\n").filter((l) => l.includes("hello-from-flotilla")).length).toBeGreaterThan(0);
  });

  it("restart restarts the unit in place", async () => {
    const placed = await etcd.placement("hello.service");
    const m = machineByID(cluster, placed?.machineID ?? "");
    const before = await invocationID(m, "hello.service");
    const r = await fc("restart", "hello.service");
    expect(r.code).toBe(0);
    const after = await invocationID(m, "hello.service");
    expect(after).not.toBe(before);
    expect((await m.exec(["systemctl", "is-active", "hello.service"])).stdout.trim()).toBe("active");
  });

  it("stop leaves it loaded but inactive; stopping an inactive unit is refused", async () => {
    const placed = await etcd.placement("hello.service");
    const m = machineByID(cluster, placed?.machineID ?? "");
    const r = await fc("stop", "hello.service");
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("Successfully stopped units [hello.service].");
    expect((await m.exec(["systemctl", "is-active", "hello.service"])).stdout.trim()).toBe("inactive");
    const units = await fc("list-units", "--no-legend");
    expect(units.stdout).toBe(goTabTable([["hello.service", machineCell(m), "inactive", "dead"]]));
  });

  it("unload removes it from systemd; destroy removes it from the cluster", async () => {
    const placed = await etcd.placement("hello.service");
    const m = machineByID(cluster, placed?.machineID ?? "");
    const u = await fc("unload", "hello.service");
    expect(u.code).toBe(0);
    expect(u.stdout).toBe("Unit hello.service inactive\n");
    await waitFor(
      "unit file removed",
      async () => (await m.exec(["test", "-e", "/run/fleet/units/hello.service"])).code !== 0,
      10_000,
    );
    const stopAgain = await fc("stop", "hello.service");
    expect(stopAgain.code).toBe(1);
    expect(stopAgain.stderr).toContain("Unable to stop unit hello.service in state inactive");

    const d = await fc("destroy", "hello.service");
    expect(d.code).toBe(0);
    expect(d.stdout).toBe("Destroyed hello.service\n");
    expect((await fc("list-unit-files", "--no-legend")).stdout).toBe("");
    const missing = await fc("cat", "hello.service");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("Unit hello.service not found");
    const gone = await fc("destroy", "hello.service");
    expect(gone.code).toBe(0);
    expect(gone.stdout + gone.stderr).toContain("Units not found in registry");
  });

  it("reports an unreachable endpoint quickly and clearly", async () => {
    const started = Date.now();
    const r = await fleetctl("http://127.0.0.1:9", ["list-units"], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/127\.0\.0\.1:9/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("rejects a malformed unit file, naming the file and line", async () => {
    const bad = unitDir({ "bad.service": "[Service]\nExecStart=/bin/true\nthis line has no equals sign\n" });
    const r = await fleetctl(endpoint, ["submit", "bad.service"], bad);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("bad.service:3");
    expect((await fc("list-unit-files", "--no-legend")).stdout).toBe("");
  });
});

describe("a cluster unit named like a unit the machine already has", () => {
  const LOCAL = "os-local.service";
  const JOURNALD = "systemd-journald.service";
  const activeWithID = async (m: (typeof cluster.machines)[number], name: string) =>
    `${(await m.exec(["systemctl", "is-active", name])).stdout.trim()} ${await invocationID(m, name)}`;
  const refusedOnEveryMachine = (name: string) =>
    waitFor(
      `${name} refused on every machine`,
      async () => {
        const states = await etcd.states(name);
        return states.length === cluster.machines.length && states.every((s) => s.loadState === "refused")
          ? states
          : undefined;
      },
      20_000,
    );

  it("is refused on every machine with the reason, and the OS units keep running, also after destroy", async () => {
    // An OS unit added by the machine's operator (/etc), and one the image ships (/usr). The API
    // may refuse image-shipped names itself; the journald record goes straight into etcd, as an
    // older agent or another image would have let it in, to show the machine holds on its own.
    for (const m of cluster.machines) {
      await m.exec([
        "sh",
        "-c",
        `printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > /etc/systemd/system/${LOCAL}`,
      ]);
      await m.exec(["systemctl", "daemon-reload"]);
      await m.exec(["systemctl", "start", LOCAL]);
    }
    const before = new Map<string, string>();
    for (const m of cluster.machines)
      for (const name of [LOCAL, JOURNALD]) before.set(`${m.name} ${name}`, await activeWithID(m, name));
    expect([...before.values()].every((v) => v.startsWith("active "))).toBe(true);

    const global = "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n";
    const hostDir = unitDir({ [LOCAL]: global });
    const start = await fleetctl(endpoint, ["start", "--no-block", LOCAL], hostDir);
    expect(start.code).toBe(0);
    const options = [
      { section: "Service", name: "ExecStart", value: "/bin/sleep infinity" },
      { section: "X-Fleet", name: "Global", value: "true" },
    ];
    await etcd.client
      .put(etcd.keys.unit(JOURNALD))
      .value(JSON.stringify({ name: JOURNALD, options, hash: unitHash(options), desiredState: "launched" }));

    for (const name of [LOCAL, JOURNALD]) {
      const states = await refusedOnEveryMachine(name);
      for (const s of states)
        expect(s.reason).toMatch(new RegExp(`^refused: this machine already has ${name} \\(/`));
    }
    // A global unit has a state per machine: each shows the refusal in its LOAD column.
    const list = await fc("list-units", "--no-legend", "--fields", "unit,load,active");
    const rows = list.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(/\t+/))
      .filter((r) => r[0] === LOCAL);
    expect(rows).toEqual(cluster.machines.map(() => [LOCAL, "refused", "inactive"]));
    const status = await fc("status", LOCAL);
    expect(status.code).not.toBe(0);
    expect(status.stderr).toContain(`refused: this machine already has ${LOCAL}`);

    const checkUntouched = async () => {
      for (const m of cluster.machines) {
        for (const name of [LOCAL, JOURNALD]) {
          expect(await activeWithID(m, name)).toBe(before.get(`${m.name} ${name}`));
          expect((await m.exec(["test", "-e", `/run/fleet/units/${name}`])).code).not.toBe(0);
          expect((await m.exec(["test", "-e", `/run/systemd/system/${name}`])).code).not.toBe(0);
        }
      }
    };
    await checkUntouched();

    expect((await fc("destroy", LOCAL, JOURNALD)).code).toBe(0);
    await waitFor(
      "refused states withdrawn",
      async () => (await etcd.states(LOCAL)).length + (await etcd.states(JOURNALD)).length === 0,
      20_000,
    );
    await checkUntouched();
  });
});
