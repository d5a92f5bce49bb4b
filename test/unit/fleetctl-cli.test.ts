import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type {
  WireCommandOutput,
  WireMachine,
  WireService,
  WireUnit,
  WireUnitOption,
  WireUnitState,
  WireUpdateCheck,
  WireUpdateGroup,
  WireUpdates,
} from "../../agent/api/schema.js";
import type { DesiredState } from "../../agent/model.js";
import type { QuarantinedValue } from "../../agent/registry/quarantine.js";
import type { GroupConfigChange } from "../../agent/update/records.js";
import { runCli, runFleetctl } from "../../fleetctl/cli.js";
import type { ClientOptions, FleetApi, JournalOptions } from "../../fleetctl/client.js";
import { VERSION } from "../../fleetctl/version.js";
import type { Clock } from "../../fleetctl/wait.js";

const M1 = "113f16a7a5fb45a6b6e5b7f1e0a7c0d1";
const HELLO_TEXT = '[Service]\nExecStart=/bin/bash -c "while true; do echo Hello, World!; sleep 1; done"\n';
const HELLO: WireUnitOption[] = [
  {
    section: "Service",
    name: "ExecStart",
    value: '/bin/bash -c "while true; do echo Hello, World!; sleep 1; done"',
  },
];
const SLEEP: WireUnitOption[] = [{ section: "Service", name: "ExecStart", value: "/bin/sleep 1000" }];
const GLOBAL: WireUnitOption[] = [...SLEEP, { section: "X-Fleet", name: "Global", value: "true" }];

/**
 * An in-memory cluster. With `settle` on, a desired-state change is reflected at once in the
 * unit's currentState and in systemd's state on machine M1, as a healthy cluster would.
 */
class FakeCluster implements FleetApi {
  store = new Map<string, WireUnit>();
  machineList: WireMachine[] = [{ id: M1, primaryIP: "172.17.8.103" }];
  settle = true;
  calls: string[] = [];
  status: WireCommandOutput | undefined = { exitCode: 0, output: "● a.service\n" };
  journalOutput: WireCommandOutput = { exitCode: 0, output: "-- Logs --\n" };
  journalCalls: JournalOptions[] = [];
  failMachines = false;
  serviceList: WireService[] = [];
  failServices: string | undefined;
  updateData: WireUpdates = { machines: [], groups: [], bad: [] };
  failUpdates: string | undefined;
  quarantined: QuarantinedValue[] | undefined = [];

  add(
    name: string,
    options: WireUnitOption[],
    state: DesiredState = "inactive",
    extra: Partial<WireUnit> = {},
  ) {
    this.store.set(name, {
      name,
      options,
      desiredState: state,
      currentState: state,
      ...(state === "inactive" ? {} : { machineID: M1 }),
      ...extra,
    });
  }

  async units(): Promise<WireUnit[]> {
    this.calls.push("units");
    return [...this.store.values()].map((u) => ({ ...u }));
  }
  async unit(name: string): Promise<WireUnit | undefined> {
    this.calls.push(`unit ${name}`);
    const u = this.store.get(name);
    return u && { ...u };
  }
  async createUnit(name: string, options: WireUnitOption[]): Promise<void> {
    this.calls.push(`create ${name}`);
    this.store.set(name, { name, options, desiredState: "inactive", currentState: "inactive" });
  }
  async setUnitTargetState(name: string, state: DesiredState): Promise<void> {
    this.calls.push(`set ${name} ${state}`);
    const u = this.store.get(name);
    if (!u) throw new Error("googleapi: Error 404: unit does not exist");
    u.desiredState = state;
    if (this.settle) {
      u.currentState = state;
      if (state === "inactive") delete u.machineID;
      else u.machineID = M1;
    }
  }
  async destroyUnit(name: string): Promise<boolean> {
    this.calls.push(`destroy ${name}`);
    return this.store.delete(name);
  }
  async unitStates(): Promise<WireUnitState[]> {
    this.calls.push("states");
    return [...this.store.values()].flatMap((u) => {
      const s = this.stateOf(u);
      return s ? [s] : [];
    });
  }
  async unitState(name: string): Promise<WireUnitState | undefined> {
    this.calls.push(`state ${name}`);
    const u = this.store.get(name);
    return u && this.stateOf(u);
  }
  async machines(): Promise<WireMachine[]> {
    this.calls.push("machines");
    if (this.failMachines)
      throw new Error("googleapi: Error 503: fleet server unable to communicate with etcd");
    return this.machineList;
  }
  async services(service?: string): Promise<WireService[]> {
    this.calls.push(service === undefined ? "services" : `services ${service}`);
    if (this.failServices !== undefined) throw new Error(this.failServices);
    return this.serviceList.filter((s) => service === undefined || s.service === service);
  }
  async unitStatus(name: string): Promise<WireCommandOutput | undefined> {
    this.calls.push(`status ${name}`);
    return this.status;
  }
  async unitJournal(name: string, opts: JournalOptions): Promise<WireCommandOutput | undefined> {
    this.calls.push(`journal ${name}`);
    this.journalCalls.push(opts);
    return this.journalOutput;
  }
  async followJournal(name: string, opts: JournalOptions, sink: (chunk: string) => void): Promise<boolean> {
    this.calls.push(`follow ${name}`);
    this.journalCalls.push(opts);
    sink("a\n");
    sink("b\n");
    return true;
  }
  async updates(): Promise<WireUpdates> {
    this.calls.push("updates");
    if (this.failUpdates !== undefined) throw new Error(this.failUpdates);
    return this.updateData;
  }
  async checkUpdates(machineID?: string): Promise<WireUpdateCheck> {
    this.calls.push(`check ${machineID ?? "all"}`);
    return { target: machineID ?? "all", nonce: "n" };
  }
  async changeUpdateGroup(group: string, change: GroupConfigChange): Promise<WireUpdateGroup> {
    this.calls.push(`group ${group} ${JSON.stringify(change)}`);
    if (this.failUpdates !== undefined) throw new Error(this.failUpdates);
    return {
      name: group,
      strategy: "etcd-lock",
      maxHolders: 1,
      paused: false,
      ...change,
      window: undefined,
      holders: [],
    };
  }
  async releaseHolder(group: string, holder: string): Promise<boolean> {
    this.calls.push(`release ${group} ${holder}`);
    return this.updateData.groups.some((g) => g.name === group && g.holders.some((h) => h.holder === holder));
  }
  async clearBadVersion(version: string): Promise<boolean> {
    this.calls.push(`clear-bad ${version}`);
    return this.updateData.bad.some((b) => b.version === version);
  }
  async quarantine(): Promise<QuarantinedValue[] | undefined> {
    return this.quarantined;
  }
  close(): void {}

  private stateOf(u: WireUnit): WireUnitState | undefined {
    if (!u.machineID || u.currentState === "inactive") return undefined;
    const launched = u.currentState === "launched";
    return {
      name: u.name,
      hash: "3750b3e9f3962a56c7582929426e9abb012754cf",
      machineID: u.machineID,
      systemdLoadState: "loaded",
      systemdActiveState: launched ? "active" : "inactive",
      systemdSubState: launched ? "running" : "dead",
    };
  }
}

function fakeClock(): Clock {
  let now = 0;
  return {
    now: () => now,
    sleep: async (ms) => {
      now += ms;
    },
  };
}

let cwd: string;
let cluster: FakeCluster;

beforeEach(() => {
  cwd = mkdtempSync(path.join(tmpdir(), "fleetctl-cli-"));
  cluster = new FakeCluster();
});
afterEach(() => rmSync(cwd, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  client: ClientOptions | undefined;
  clock: Clock;
}

async function run(
  argv: string[],
  env: Record<string, string> = {},
  opts: { clock?: Clock; signal?: AbortSignal } = {},
): Promise<Run> {
  let stdout = "";
  let stderr = "";
  let client: ClientOptions | undefined;
  const clock = opts.clock ?? fakeClock();
  const code = await runCli(
    argv,
    {
      stdout: { write: (c: string) => (stdout += c) },
      stderr: { write: (c: string) => (stderr += c) },
      env,
      cwd,
    },
    {
      createApi: (opts) => {
        client = opts;
        return cluster;
      },
      clock,
      ...(opts.signal ? { signal: opts.signal } : {}),
    },
  );
  return { code, stdout, stderr, client, clock };
}

describe("command line", () => {
  it("prints help without arguments and exits 0", async () => {
    const r = await run([]);
    expect(r.code).toBe(0);
    for (const section of ["NAME:", "USAGE:", "VERSION:", "COMMANDS:", "GLOBAL OPTIONS:"]) {
      expect(r.stdout).toContain(section);
    }
    expect(r.client).toBeUndefined();
  });

  it("prints the version for version, --version and -v", async () => {
    for (const argv of [["version"], ["--version"], ["-v"], ["--version", "list-units"]]) {
      const r = await run(argv);
      expect(r).toMatchObject({ code: 0, stdout: `fleetctl version ${VERSION}\n` });
    }
    expect(VERSION).toMatch(/^1\.0\.0\+flotilla\./);
  });

  it("prints command help for help CMD and --help", async () => {
    const a = await run(["help", "list-units"]);
    const b = await run(["list-units", "--help"]);
    expect(a.code).toBe(0);
    expect(a.stdout).toContain("fleetctl list-units - List the current state of units in the cluster");
    expect(a.stdout).toContain("OPTIONS:");
    expect(b.stdout).toBe(a.stdout);
  });

  it("reports an unknown or ambiguous command and exits 0, like fleet", async () => {
    for (const word of ["bogus", "list"]) {
      const r = await run([word]);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe(
        `Error: unknown command "${word}" for "fleetctl"\nRun 'fleetctl --help' for usage.\n`,
      );
      expect(r.client).toBeUndefined();
    }
  });

  it("runs a command by unique prefix", async () => {
    const r = await run(["list-m"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("MACHINE\t\tIP\t\tMETADATA\n113f16a7...\t172.17.8.103\t-\n");
  });

  it("accepts -l and --l as --full (fleet's -l was broken)", async () => {
    for (const flag of ["-l", "--l", "--full"]) {
      const r = await run(["list-machines", flag, "--no-legend"]);
      expect(r.stdout).toBe(`${M1}\t172.17.8.103\t-\n`);
    }
  });

  it("reports flag errors with usage and exits 0, like fleet", async () => {
    const unknown = await run(["list-units", "--bogus"]);
    expect(unknown.code).toBe(0);
    expect(unknown.stderr).toMatch(/^Error: unknown flag: --bogus\nNAME:\n\tfleetctl list-units/);
    const short = await run(["list-units", "-x"]);
    expect(short.stderr).toMatch(/^Error: unknown shorthand flag: 'x' in -x\n/);
    const bad = await run(["start", "--block-attempts=many", "a.service"]);
    expect(bad.code).toBe(0);
    expect(bad.stderr).toMatch(
      /^Error: invalid argument "many" for "--block-attempts" flag: strconv.ParseInt: parsing "many": invalid syntax\n/,
    );
    expect(cluster.calls).toEqual([]);
  });

  it("verify is deprecated and exits 2", async () => {
    const r = await run(["verify", "a.service"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("WARNING: The signed/verified units feature is DEPRECATED and cannot be used.\n");
  });
});

describe("client setup", () => {
  it("defaults to the fleet socket with a 3 s request timeout", async () => {
    const r = await run(["list-units"]);
    expect(r.client).toMatchObject({
      endpoint: { kind: "unix", socketPath: "/var/run/fleet.sock" },
      timeoutMs: 3000,
      debug: undefined,
    });
  });

  it("reads global flags from FLEETCTL_* unless given, and places them anywhere", async () => {
    const env = {
      FLEETCTL_ENDPOINT: "http://env:1",
      FLEETCTL_REQUEST_TIMEOUT: "0.5",
      FLEETCTL_DEBUG: "true",
    };
    const fromEnv = await run(["list-units"], env);
    expect(fromEnv.client).toMatchObject({ endpoint: { host: "env", port: 1 }, timeoutMs: 500 });
    expect(fromEnv.client?.debug).toBeTypeOf("function");
    const fromFlags = await run(["list-units", "--endpoint", "http://cli:2", "--request-timeout=1.5"], env);
    expect(fromFlags.client).toMatchObject({ endpoint: { host: "cli", port: 2 }, timeoutMs: 1500 });
    const before = await run(["--endpoint", "http://pre:3", "--debug", "list-units"]);
    expect(before.client).toMatchObject({ endpoint: { host: "pre", port: 3 } });
    expect(before.client?.debug).toBeTypeOf("function");
  });

  it("refuses other drivers and bad endpoints with exit 1", async () => {
    const driver = await run(["list-units", "--driver=etcd"]);
    expect(driver).toMatchObject({
      code: 1,
      stderr: 'Unable to initialize client: unrecognized driver "etcd"\n',
    });
    const endpoint = await run(["list-units"], { FLEETCTL_ENDPOINT: "unix://var/run/x" });
    expect(endpoint).toMatchObject({
      code: 1,
      stderr: 'Unable to initialize client: unable to connect to host "var" with scheme "unix"\n',
    });
    expect((await run(["list-units", "--tunnel=bastion"])).code).toBe(1);
  });

  it("warns that only the first endpoint is used", async () => {
    const r = await run(["list-units", "--endpoint=http://a:1,http://b:2"]);
    expect(r.stderr).toBe("WARNING: multiple endpoints provided but only the first (http://a:1) is used\n");
    expect(r.client).toMatchObject({ endpoint: { host: "a" } });
  });

  it("fails fast, naming the endpoint, when the API is unreachable", async () => {
    let stderr = "";
    const socket = path.join(cwd, "absent.sock");
    const started = Date.now();
    const code = await runFleetctl(["list-units"], {
      stdout: { write: () => true },
      stderr: { write: (c: string) => (stderr += c) },
      env: { FLEETCTL_ENDPOINT: `unix://${socket}` },
      cwd,
    });
    expect(code).toBe(1);
    expect(stderr).toBe(
      `Error retrieving list of units from repository: cannot reach fleet API at unix://${socket} (GET /fleet/v1/state?alt=json): no such socket file (ENOENT)\n`,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe("submit, load and start", () => {
  it("submits a unit file and waits for inactive", async () => {
    writeFileSync(path.join(cwd, "hello.service"), HELLO_TEXT);
    const r = await run(["submit", "hello"]);
    expect(r).toMatchObject({ code: 0, stdout: "Unit hello.service inactive\n", stderr: "" });
    expect(cluster.store.get("hello.service")?.options).toEqual(HELLO);
  });

  it("says No units given and exits 0", async () => {
    for (const cmd of ["submit", "load", "start", "stop", "unload", "destroy"]) {
      expect(await run([cmd])).toMatchObject({ code: 0, stderr: "No units given\n" });
    }
  });

  it("starts a new unit: create, inactive, launched, systemd active", async () => {
    writeFileSync(path.join(cwd, "hello.service"), HELLO_TEXT);
    const r = await run(["start", "hello.service"]);
    expect(r).toMatchObject({
      code: 0,
      stdout: "Unit hello.service inactive\nUnit hello.service launched on 113f16a7.../172.17.8.103\n",
      stderr: "",
    });
    expect(cluster.calls).toContain("set hello.service launched");
    expect(cluster.calls.at(-1)).toBe("state hello.service");
  });

  it("loads a unit", async () => {
    cluster.add("a.service", SLEEP);
    const r = await run(["load", "a.service"]);
    expect(r).toMatchObject({ code: 0, stdout: "Unit a.service loaded on 113f16a7.../172.17.8.103\n" });
  });

  it("prints Triggered unit X start once with --no-block", async () => {
    cluster.add("a.service", SLEEP);
    const r = await run(["start", "--no-block", "a.service"]);
    expect(r).toMatchObject({ code: 0, stdout: "Triggered unit a.service start\n" });
  });

  it("triggers global units without waiting", async () => {
    cluster.add("g.service", GLOBAL);
    cluster.settle = false;
    const r = await run(["start", "g.service"]);
    expect(r).toMatchObject({ code: 0, stdout: "Triggered global unit g.service start\n" });
  });

  it("reports a unit already launched instead of staying silent (fleet#1091)", async () => {
    cluster.add("a.service", SLEEP, "launched");
    const r = await run(["start", "a.service"]);
    expect(r).toMatchObject({ code: 0, stdout: "Unit a.service launched on 113f16a7.../172.17.8.103\n" });
    expect(cluster.calls).not.toContain("set a.service launched");
  });

  it("creates an instance from the template on disk", async () => {
    writeFileSync(path.join(cwd, "web@.service"), "[Service]\nExecStart=/bin/sleep %i\n");
    const r = await run(["start", "web@1.service"]);
    expect(r.code).toBe(0);
    expect(cluster.calls.slice(0, 3)).toEqual([
      "unit web@1.service",
      "unit web@.service",
      "create web@1.service",
    ]);
    expect(cluster.store.get("web@1.service")?.options).toEqual([
      { section: "Service", name: "ExecStart", value: "/bin/sleep %i" },
    ]);
  });

  it("prefers the template in the registry", async () => {
    cluster.add("web@.service", SLEEP);
    writeFileSync(path.join(cwd, "web@.service"), "[Service]\nExecStart=/bin/other\n");
    const r = await run(["load", "web@2"]);
    expect(r.code).toBe(0);
    expect(cluster.store.get("web@2.service")?.options).toEqual(SLEEP);
    expect(r.stderr).toBe(
      "WARNING: Unit web@.service in registry differs from local template unit file web@2.service. Add --replace to override.\n",
    );
  });

  it("fails when neither the unit nor a template can be found", async () => {
    const r = await run(["start", "nothing.service"]);
    expect(r).toMatchObject({
      code: 1,
      stderr: "Error creating units: unable to find Unit(nothing.service) in Registry or on filesystem\n",
    });
  });

  it("gives up after --block-attempts with the server's reason (fleet#559)", async () => {
    cluster.add("a.service", SLEEP, "inactive", { reason: "no machine matches MachineMetadata=disk=ssd" });
    cluster.settle = false;
    const r = await run(["start", "a.service"]);
    expect(r).toMatchObject({
      code: 1,
      stdout: "",
      stderr:
        "Error waiting for units: unit a.service cannot be scheduled: no machine matches MachineMetadata=disk=ssd\n",
    });
    expect(r.clock.now()).toBe(20_000);
    const two = await run(["start", "--block-attempts=2", "a.service"]);
    expect(two.clock.now()).toBe(4000);
  });

  it("times out with fleet's message when there is no reason", async () => {
    cluster.add("a.service", SLEEP);
    cluster.settle = false;
    const r = await run(["load", "--block-attempts=1", "a.service"]);
    expect(r).toMatchObject({
      code: 1,
      stderr: "Error waiting for units: timed out waiting for unit a.service to report state loaded\n",
    });
  });
});

describe("submit --replace and local differences", () => {
  beforeEach(() => writeFileSync(path.join(cwd, "hello.service"), HELLO_TEXT));

  it("warns when the registry's unit differs and --replace is not given", async () => {
    cluster.add("hello.service", SLEEP);
    const r = await run(["submit", "hello.service"]);
    expect(r).toMatchObject({
      code: 0,
      stdout: "",
      stderr:
        "WARNING: Unit hello.service in registry differs from local unit file hello.service. Add --replace to override.\n",
    });
    expect(cluster.store.get("hello.service")?.options).toEqual(SLEEP);
  });

  it("replaces a unit whose desired state allows it", async () => {
    cluster.add("hello.service", SLEEP, "loaded");
    const r = await run(["start", "--replace", "hello.service"]);
    expect(r.code).toBe(0);
    expect(cluster.store.get("hello.service")).toMatchObject({ options: HELLO, desiredState: "launched" });
    expect(r.stdout).toBe(
      "Unit hello.service inactive\nUnit hello.service launched on 113f16a7.../172.17.8.103\n",
    );
  });

  it("refuses to replace in a state the command does not allow", async () => {
    cluster.add("hello.service", SLEEP, "launched");
    const r = await run(["submit", "--replace", "hello.service"]);
    expect(r).toMatchObject({
      code: 0,
      stderr:
        "Warning: can not replace Unit(hello.service) in state 'launched', use the appropriate command\n",
    });
    expect(cluster.store.get("hello.service")?.options).toEqual(SLEEP);
  });

  it("does nothing for an identical unit", async () => {
    cluster.add("hello.service", HELLO);
    const r = await run(["submit", "--replace", "hello.service"]);
    expect(r).toMatchObject({
      code: 0,
      stdout: "Found same Unit(hello.service) in Registry, nothing to do\n",
    });
    expect(cluster.calls).not.toContain("create hello.service");
  });
});

describe("stop, unload, destroy, restart", () => {
  it("stops launched units", async () => {
    cluster.add("a.service", SLEEP, "launched");
    cluster.add("b.service", SLEEP, "launched");
    const r = await run(["stop", "a", "b.service"]);
    expect(r).toMatchObject({
      code: 0,
      stdout:
        "Unit a.service loaded on 113f16a7.../172.17.8.103\nUnit b.service loaded on 113f16a7.../172.17.8.103\n",
      stderr: "Successfully stopped units [a.service b.service].\n",
    });
  });

  it("refuses to stop an inactive unit", async () => {
    cluster.add("a.service", SLEEP);
    expect(await run(["stop", "a.service"])).toMatchObject({
      code: 1,
      stderr: "Unable to stop unit a.service in state inactive\n",
    });
  });

  it("says Units not found in registry and exits 0", async () => {
    for (const cmd of ["stop", "unload", "destroy"]) {
      expect(await run([cmd, "nope.service"])).toMatchObject({
        code: 0,
        stderr: "Units not found in registry\n",
      });
    }
  });

  it("stops without blocking", async () => {
    cluster.add("a.service", SLEEP, "launched");
    cluster.add("g.service", GLOBAL, "launched");
    const r = await run(["stop", "--no-block", "a.service", "g.service"]);
    expect(r).toMatchObject({
      code: 0,
      stdout: "Triggered global unit g.service stop\nTriggered unit a.service stop\n",
      stderr: "Successfully stopped units [a.service].\n",
    });
  });

  it("unloads units", async () => {
    cluster.add("a.service", SLEEP, "loaded");
    const r = await run(["unload", "a.service"]);
    expect(r).toMatchObject({
      code: 0,
      stdout: "Unit a.service inactive\n",
      stderr: "Successfully unloaded units [a.service].\n",
    });
  });

  it("destroys units and waits until they are gone", async () => {
    cluster.add("a.service", SLEEP, "launched");
    const r = await run(["destroy", "a.service"]);
    expect(r).toMatchObject({ code: 0, stdout: "Destroyed a.service\n" });
    expect(cluster.calls).toEqual(["units", "destroy a.service", "unit a.service"]);
  });

  it("restart exits 1 for a unit that is neither in the registry nor on disk, as fleet does", async () => {
    cluster.add("a.service", SLEEP, "launched");
    const r = await run(["restart", "a.service", "nope.service"]);
    expect(r).toMatchObject({
      code: 1,
      stdout: "",
      stderr: "Error creating units: unable to find Unit(nope.service) in Registry or on filesystem\n",
    });
    expect(cluster.calls.filter((c) => c.startsWith("set"))).toEqual([]);
    expect(await run(["restart"])).toMatchObject({ code: 0, stderr: "No units given\n" });
  });

  it("restarts a launched unit through loaded", async () => {
    cluster.add("a.service", SLEEP, "launched");
    const r = await run(["restart", "a.service"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "Unit a.service loaded on 113f16a7.../172.17.8.103\nUnit a.service launched on 113f16a7.../172.17.8.103\n",
    );
    expect(cluster.calls.filter((c) => c.startsWith("set"))).toEqual([
      "set a.service loaded",
      "set a.service launched",
    ]);
  });
});

describe("listing and inspection", () => {
  it("lists units, with Flotilla's reason on request", async () => {
    cluster.add("b.service", SLEEP, "launched", { reason: "moved after failure" });
    cluster.add("a.service", HELLO, "launched");
    expect((await run(["list-units"])).stdout).toBe(
      "UNIT\t\tMACHINE\t\t\t\tACTIVE\tSUB\n" +
        "a.service\t113f16a7.../172.17.8.103\tactive\trunning\n" +
        "b.service\t113f16a7.../172.17.8.103\tactive\trunning\n",
    );
    expect((await run(["list-units", "--fields=unit,reason", "--no-legend"])).stdout).toBe(
      "a.service\t-\nb.service\tmoved after failure\n",
    );
  });

  it("rejects unknown fields with exit 1", async () => {
    expect(await run(["list-unit-files", "--fields=unit,foo"])).toMatchObject({
      code: 1,
      stderr: 'Invalid key in output format: "foo"\n',
    });
  });

  it("lists unit files sorted by name", async () => {
    cluster.add("hello.service", HELLO, "launched");
    cluster.add("a.service", SLEEP);
    expect((await run(["list-unit-files", "--no-legend", "--fields=unit,hash,dstate,state"])).stdout).toBe(
      "a.service\t2d432f4\tinactive\tinactive\nhello.service\t3750b3e\tlaunched\tlaunched\n",
    );
  });

  it("names quarantined values of its families on stderr, leaving stdout and the exit code as fleet's", async () => {
    cluster.add("a.service", SLEEP);
    const bad = (key: string, family: QuarantinedValue["family"], reason: string): QuarantinedValue => ({
      key,
      family,
      reason,
      revision: 9,
      since: "2026-12-04T22:00:00.000Z",
    });
    cluster.quarantined = [
      bad("/flotilla/machines/m9", "machines", "want a JSON object, got null"),
      bad("/flotilla/schedule/a.service", "schedule", "field machineID: want a string, got number 5"),
      bad("/flotilla/units/b.service", "units", 'not JSON: "\\u0000x" (2 characters)'),
    ];
    expect(await run(["list-unit-files", "--no-legend", "--fields=unit,dstate"])).toMatchObject({
      code: 0,
      stdout: "a.service\tinactive\n",
      stderr:
        "WARNING: 2 registry value(s) failed their checks and are skipped until fixed or deleted:\n" +
        "  /flotilla/schedule/a.service: field machineID: want a string, got number 5\n" +
        '  /flotilla/units/b.service: not JSON: "\\u0000x" (2 characters)\n',
    });
    const machines = await run(["list-machines", "--no-legend"]);
    expect(machines.code).toBe(0);
    expect(machines.stderr).toContain("  /flotilla/machines/m9: want a JSON object, got null\n");
    cluster.quarantined = undefined; // a server without the list
    expect(await run(["list-unit-files", "--no-legend", "--fields=unit"])).toMatchObject({
      code: 0,
      stdout: "a.service\n",
      stderr: "",
    });
  });

  it("explains list-machines failures like fleet", async () => {
    cluster.failMachines = true;
    expect(await run(["list-machines"])).toMatchObject({
      code: 1,
      stdout: "",
      stderr:
        "Error retrieving list of active machines from fleet API (googleapi: Error 503: fleet server unable to communicate with etcd)\n" +
        "Possible issues:\n" +
        "  etcd is unhealthy and/or lost quorum\n" +
        "  connection cannot be established to any etcd servers\n",
    });
  });

  it("cats the stored unit without adding a newline", async () => {
    cluster.add("web@.service", [
      { section: "Unit", name: "Description", value: "Web" },
      { section: "Service", name: "ExecStart", value: "/bin/web" },
      { section: "Unit", name: "After", value: "network.target" },
    ]);
    expect(await run(["cat", "web@"])).toMatchObject({
      code: 0,
      stdout: "[Unit]\nDescription=Web\nAfter=network.target\n\n[Service]\nExecStart=/bin/web\n",
    });
    expect(await run(["cat", "nope"])).toMatchObject({ code: 1, stderr: "Unit nope.service not found\n" });
    expect(await run(["cat"])).toMatchObject({ code: 1, stderr: "One unit file must be provided\n" });
  });

  it("passes status output and exit code through", async () => {
    cluster.add("a.service", SLEEP, "launched");
    cluster.status = { exitCode: 3, output: "● a.service - failed\n" };
    expect(await run(["status", "a.service"])).toMatchObject({ code: 3, stdout: "● a.service - failed\n" });
    expect(await run(["status", "b.service"])).toMatchObject({
      code: 1,
      stderr: "Unit b.service does not exist.\n",
    });
    expect(await run(["status"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
  });

  it("refuses status of a unit that is not loaded", async () => {
    cluster.add("a.service", SLEEP);
    expect(await run(["status", "a.service"])).toMatchObject({
      code: 1,
      stderr: "Unit a.service does not appear to be loaded.\n",
    });
  });

  it("prints the journal with --lines/-n and --output, and follows with -f", async () => {
    cluster.add("a.service", SLEEP, "launched");
    expect(await run(["journal", "-n", "5", "--output=cat", "a"])).toMatchObject({
      code: 0,
      stdout: "-- Logs --\n",
    });
    expect(await run(["journal", "-f", "a.service"])).toMatchObject({ code: 0, stdout: "a\nb\n" });
    expect(cluster.journalCalls).toEqual([
      { lines: 5, output: "cat" },
      { lines: 10, output: "short" },
    ]);
    expect(cluster.calls).toContain("follow a.service");
  });

  it("checks journal arguments like fleet", async () => {
    cluster.add("g.service", GLOBAL, "launched");
    expect(await run(["journal"])).toMatchObject({ code: 1, stderr: "One unit file must be provided.\n" });
    expect(await run(["journal", "x.service"])).toMatchObject({
      code: 1,
      stderr: "Unit x.service does not exist.\n",
    });
    expect(await run(["journal", "g.service"])).toMatchObject({
      code: 1,
      stderr: "Unable to retrieve journal of global unit g.service.\n",
    });
  });
});

describe("list-services", () => {
  const web = (machineID: string, unit: string, ip: string, host: number): WireService => ({
    service: "web",
    machineID,
    unit,
    ip,
    ports: [{ container: 80, host, protocol: "tcp" }],
  });
  const M2 = "5e6f7a8b000000000000000000000000";
  const dns: WireService = {
    service: "dns",
    machineID: M2,
    unit: "dns.service",
    ip: "172.17.8.104",
    ports: [
      { host: 53, protocol: "udp" },
      { host: 53, protocol: "tcp" },
    ],
  };
  const plain: WireService = {
    service: "batch",
    machineID: M1,
    unit: "batch.service",
    ip: "172.17.8.103",
    ports: [],
  };

  it("prints a table sorted by service, machine and unit, ports in Docker's notation", async () => {
    cluster.serviceList = [
      web(M2, "web@2.service", "172.17.8.104", 8081),
      dns,
      plain,
      web(M1, "web@1.service", "172.17.8.103", 8080),
    ];
    const r = await run(["list-services"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "SERVICE\tMACHINE\t\tUNIT\t\tIP\t\tPORTS\n" +
        "batch\t113f16a7...\tbatch.service\t172.17.8.103\t-\n" +
        "dns\t5e6f7a8b...\tdns.service\t172.17.8.104\t53/udp,53/tcp\n" +
        "web\t113f16a7...\tweb@1.service\t172.17.8.103\t8080->80/tcp\n" +
        "web\t5e6f7a8b...\tweb@2.service\t172.17.8.104\t8081->80/tcp\n",
    );
  });

  it("filters by service and honours --fields, --no-legend and --full", async () => {
    cluster.serviceList = [web(M1, "web@1.service", "172.17.8.103", 8080), dns];
    const r = await run(["list-services", "--no-legend", "--full", "--fields=machine,ip,ports", "web"]);
    expect(r.stdout).toBe(`${M1}\t172.17.8.103\t8080->80/tcp\n`);
    expect(cluster.calls).toContain("services web");
    expect((await run(["list-services", "--fields=unit,nope"])).stderr).toBe(
      'Invalid key in output format: "nope"\n',
    );
    expect((await run(["list-services", "a", "b"])).code).toBe(1);
  });

  it("prints only the legend when nothing is published, and explains a failure", async () => {
    expect((await run(["list-services"])).stdout).toBe("SERVICE\tMACHINE\tUNIT\tIP\tPORTS\n");
    cluster.failServices = "googleapi: Error 503: service discovery is not running on this agent";
    expect(await run(["list-services"])).toMatchObject({
      code: 1,
      stderr:
        "Error retrieving list of services: googleapi: Error 503: service discovery is not running on this agent\n",
    });
  });

  it("--watch prints the table again only when it changes, until interrupted", async () => {
    const stop = new AbortController();
    const first = web(M1, "web@1.service", "172.17.8.103", 8080);
    const moved = web(M2, "web@1.service", "172.17.8.104", 8080);
    // What the cluster holds after each poll: unchanged, moved, an error twice, back, then ^C.
    const script: (() => void)[] = [
      () => {},
      () => {
        cluster.serviceList = [moved];
      },
      () => {
        cluster.failServices = "boom";
      },
      () => {},
      () => {
        cluster.failServices = undefined;
      },
      () => stop.abort(),
    ];
    cluster.serviceList = [first];
    let now = 0;
    const clock: Clock = {
      now: () => now,
      sleep: async (ms) => {
        now += ms;
        script.shift()?.();
      },
    };
    const r = await run(["list-services", "-w", "--no-legend"], {}, { clock, signal: stop.signal });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "web\t113f16a7...\tweb@1.service\t172.17.8.103\t8080->80/tcp\n" +
        "\n" +
        "web\t5e6f7a8b...\tweb@1.service\t172.17.8.104\t8080->80/tcp\n",
    );
    expect(r.stderr).toBe("Error retrieving list of services: boom\n");
    expect(cluster.calls.filter((c) => c === "services")).toHaveLength(6);
    expect(now).toBe(6000);
  });
});

describe("OS updates", () => {
  const M2 = "5e6f7a8b000000000000000000000000";
  const status = {
    machineId: M1,
    version: "1.2.0",
    slot: "B" as const,
    state: "idle" as const,
    lastCheck: "2030-01-02T03:04:05.678Z",
    lastRollback: {
      version: "1.3.0",
      reason: "health gate:\nweb.service failed",
      at: "2030-01-01T00:00:00Z",
    },
    updatedAt: "2030-01-02T03:04:05.678Z",
  };
  beforeEach(() => {
    cluster.machineList = [
      { id: M1, primaryIP: "172.17.8.103" },
      { id: M2, primaryIP: "172.17.8.104" },
    ];
    cluster.updateData = {
      machines: [
        { machineID: M1, primaryIP: "172.17.8.103", inCluster: true, status },
        {
          machineID: M2,
          primaryIP: "172.17.8.104",
          inCluster: true,
          status: {
            ...status,
            machineId: M2,
            version: "1.1.0",
            slot: "A",
            state: "downloading",
            progress: { bytes: 42, total: 100 },
          },
        },
      ],
      groups: [
        {
          name: "default",
          strategy: "etcd-lock",
          maxHolders: 1,
          paused: false,
          holders: [{ holder: M2, machineId: M2, since: "2030-01-02T00:00:00Z", leaseId: "7" }],
        },
        {
          name: "db",
          strategy: "reboot",
          maxHolders: 2,
          paused: true,
          window: { days: ["sat", "sun"], start: "02:00", lengthMinutes: 120, timeZone: "Europe/Berlin" },
          holders: [],
        },
      ],
      bad: [{ version: "1.3.0", reason: "health gate failed", machineId: M1, at: "2030-01-01T00:00:00Z" }],
    };
  });

  it("list-machines keeps fleet's default output and its single request", async () => {
    const r = await run(["list-machines"]);
    expect(r.stdout).toBe(
      "MACHINE\t\tIP\t\tMETADATA\n113f16a7...\t172.17.8.103\t-\n5e6f7a8b...\t172.17.8.104\t-\n",
    );
    expect(cluster.calls).toEqual(["machines"]);
  });

  it("list-machines shows the update fields on request", async () => {
    const r = await run(["list-machines", "--no-legend", "--fields=machine,os,slot,update,checked,rollback"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "113f16a7...\t1.2.0\tB\tidle\t\t2030-01-02T03:04:05Z\t1.3.0: health gate: web.service failed\n" +
        "5e6f7a8b...\t1.1.0\tA\tdownloading 42%\t2030-01-02T03:04:05Z\t1.3.0: health gate: web.service failed\n",
    );
    cluster.failUpdates = "googleapi: Error 503: the updater is not running on this agent";
    expect(await run(["list-machines", "--fields=machine,os"])).toMatchObject({
      code: 1,
      stderr:
        "Error retrieving update status: googleapi: Error 503: the updater is not running on this agent\n",
    });
  });

  it("update-status prints machines, then groups and bad versions", async () => {
    const r = await run(["update-status"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      "MACHINE\t\tIP\t\tOS\tSLOT\tSTATE\t\tCHECKED\t\t\tROLLBACK\n" +
        "113f16a7...\t172.17.8.103\t1.2.0\tB\tidle\t\t2030-01-02T03:04:05Z\t1.3.0: health gate: web.service failed\n" +
        "5e6f7a8b...\t172.17.8.104\t1.1.0\tA\tdownloading 42%\t2030-01-02T03:04:05Z\t1.3.0: health gate: web.service failed\n" +
        "\n" +
        "GROUP\tSTRATEGY\tSLOTS\tPAUSED\tWINDOW\t\t\t\t\tHOLDERS\n" +
        `default\tetcd-lock\t1/1\tfalse\t-\t\t\t\t\t${M2}\n` +
        "db\treboot\t\t0/2\ttrue\tsat,sun 02:00+120m Europe/Berlin\t-\n" +
        "\n" +
        "BAD VERSION\tMACHINE\t\tAT\t\t\tREASON\n" +
        "1.3.0\t\t113f16a7...\t2030-01-01T00:00:00Z\thealth gate failed\n",
    );
  });

  it("update-status --no-legend --full prints only the machines, full IDs, no header", async () => {
    cluster.updateData.machines = [{ machineID: M2, inCluster: false }];
    const r = await run(["update-status", "--no-legend", "--full"]);
    expect(r.stdout).toBe(`${M2}\t-\t-\t-\t-\t-\t-\n`);
    cluster.failUpdates = "boom";
    expect(await run(["update-status"])).toMatchObject({
      code: 1,
      stderr: "Error retrieving update status: boom\n",
    });
  });

  it("update check asks one machine by prefix, or all", async () => {
    expect(await run(["update", "check"])).toMatchObject({
      code: 0,
      stdout: "Update check requested on all machines\n",
    });
    expect(await run(["update", "check", "5e6f"])).toMatchObject({
      code: 0,
      stdout: `Update check requested on ${M2}\n`,
    });
    expect(cluster.calls).toContain(`check ${M2}`);
    expect(await run(["update", "check", "99"])).toMatchObject({ code: 1, stderr: "Machine 99 not found\n" });
    cluster.updateData.machines.push({ machineID: `${M2.slice(0, 4)}ffff${M2.slice(8)}`, inCluster: false });
    expect((await run(["update", "check", "5e6f"])).stderr).toMatch(/^Machine 5e6f is ambiguous: /);
  });

  it("update pause, resume and lock-size change only their field", async () => {
    expect(await run(["update", "pause", "db"])).toMatchObject({
      code: 0,
      stdout: "Paused updates of group db\n",
    });
    expect(await run(["update", "resume", "db"])).toMatchObject({
      code: 0,
      stdout: "Resumed updates of group db\n",
    });
    expect(await run(["update", "lock-size", "db", "3"])).toMatchObject({
      code: 0,
      stdout: "Group db: at most 3 machine(s) reboot at once\n",
    });
    expect(cluster.calls.filter((c) => c.startsWith("group"))).toEqual([
      'group db {"paused":true}',
      'group db {"paused":false}',
      'group db {"maxHolders":3}',
    ]);
    expect(await run(["update", "lock-size", "db", "0"])).toMatchObject({
      code: 1,
      stderr: 'Invalid lock size "0": expected a whole number of at least 1\n',
    });
    cluster.failUpdates = 'googleapi: Error 400: invalid group: "a_b" must match ^[a-zA-Z0-9.-]+$';
    expect(await run(["update", "pause", "a_b"])).toMatchObject({
      code: 1,
      stderr:
        'Error changing group a_b: googleapi: Error 400: invalid group: "a_b" must match ^[a-zA-Z0-9.-]+$\n',
    });
  });

  it("update release and clear-bad report what they did, or that there was nothing", async () => {
    expect(await run(["update", "release", "default", M2])).toMatchObject({
      code: 0,
      stdout: `Released the reboot slot of ${M2} in group default\n`,
    });
    expect(await run(["update", "release", "db", "x"])).toMatchObject({
      code: 1,
      stderr: "Group db has no lock holder x\n",
    });
    expect(await run(["update", "clear-bad", "1.3.0"])).toMatchObject({
      code: 0,
      stdout: "Version 1.3.0 is no longer marked bad\n",
    });
    expect(await run(["update", "clear-bad", "9.9.9"])).toMatchObject({
      code: 1,
      stderr: "Version 9.9.9 is not marked bad\n",
    });
  });

  it("update explains missing arguments and unknown actions", async () => {
    expect(await run(["update", "release", "db"])).toMatchObject({
      code: 1,
      stderr: "Usage: fleetctl update release GROUP HOLDER\n",
    });
    const r = await run(["update", "reboot"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^Unknown update action "reboot"\n {2}fleetctl update check \[MACHINE\]\n/);
    expect((await run(["update"])).stderr).toMatch(/^No update action given\n/);
    expect((await run(["help", "update"])).stdout).toMatch(/fleetctl update - Steer OS updates/);
  });
});
