import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { Machine, UnitRecord, UnitState } from "../../agent/model.js";
import { JOB_CONCURRENCY, REFUSED_LOAD_STATE, Reconciler } from "../../agent/reconcile/reconciler.js";
import { Keys } from "../../agent/registry/keys.js";
import type { ClusterSnapshot } from "../../agent/registry/registry.js";
import { MemoryUnitManager, type MemoryUnitManagerOptions } from "../../agent/systemd/memory.js";
import { unitHash } from "../../agent/unit/index.js";

const ME = "m1";
const keys = new Keys();
const log = pino({ level: "silent" });

function unit(name: string, desiredState: UnitRecord["desiredState"] = "launched", cmd = "sleep 1d") {
  const options = [{ section: "Service", name: "ExecStart", value: `/bin/${cmd}` }];
  return { name, options, hash: unitHash(options), desiredState } satisfies UnitRecord;
}

/** The registry and membership as the reconciler sees them: units placed on this machine, and what it publishes. */
class FakeCluster {
  readonly units = new Map<string, UnitRecord>();
  readonly states = new Map<string, UnitState>();
  readonly machine: Machine = { id: ME, publicIP: "10.0.0.1", metadata: {}, version: "test" };
  unreachable = false;

  place(...records: UnitRecord[]): void {
    for (const r of records) this.units.set(r.name, r);
  }

  remove(...names: string[]): void {
    for (const n of names) this.units.delete(n);
  }

  readonly registry = {
    snapshot: async (): Promise<ClusterSnapshot> => {
      if (this.unreachable) throw new Error("etcd is unreachable");
      const units = [...this.units.values()];
      return {
        revision: 1,
        units,
        schedule: new Map(units.map((u) => [u.name, { machineID: ME, at: 0, reason: "test" }])),
        pending: new Map(),
        failures: new Map(),
        machines: [this.machine],
        states: [],
      };
    },
    deleteState: async (name: string, machineID: string) => {
      this.states.delete(keys.state(name, machineID));
    },
    deleteKey: async (_key: string) => undefined,
  };

  readonly membership = {
    current: this.machine,
    putLeased: async (entries: readonly (readonly [string, string])[]) => {
      for (const [key, value] of entries)
        if (key.startsWith(`${keys.prefix}states/`)) this.states.set(key, JSON.parse(value) as UnitState);
    },
  };

  state(name: string): UnitState | undefined {
    return this.states.get(keys.state(name, ME));
  }
}

function setup(opts: MemoryUnitManagerOptions = {}, systemd = new MemoryUnitManager(opts)) {
  const cluster = new FakeCluster();
  const reconciler = new Reconciler(cluster.registry, keys, cluster.membership, systemd, () => ({}), log);
  return { cluster, systemd, reconciler };
}

const names = (n: number, prefix = "u") => Array.from({ length: n }, (_, i) => `${prefix}${i}.service`);
const settle = () => new Promise((resolve) => setTimeout(resolve, 5));
const active = (systemd: MemoryUnitManager, name: string) => systemd.units.get(name)?.activeState;

describe("Reconciler with an in-memory systemd", () => {
  it("loads a batch of units new to systemd without a daemon-reload, then starts them all", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(...names(100).map((n) => unit(n)));
    await reconciler.trigger("test");
    await settle();
    expect(systemd.stats.reloads).toBe(0);
    expect(systemd.stats.starts).toBe(100);
    expect(names(100).filter((n) => active(systemd, n) !== "active")).toEqual([]);
    await reconciler.publishStates(); // the agent does this on systemd's change events
    expect(cluster.state("u7.service")).toMatchObject({ activeState: "active", launched: true });
  });

  it("a systemd call that fails ends the pass and the publish without rejecting; the next pass recovers", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(unit("a.service"));
    const states = systemd.states.bind(systemd);
    systemd.states = async () => {
      throw new Error("org.freedesktop.DBus.Error.NoReply");
    };
    // The agent's loops fire these and forget them: a rejection would end the process.
    await expect(reconciler.trigger("test")).resolves.toBeUndefined();
    await expect(reconciler.publishStates()).resolves.toBeUndefined();
    expect(cluster.state("a.service")).toBeUndefined();
    systemd.states = states;
    await reconciler.trigger("test");
    await settle();
    await reconciler.publishStates();
    expect(active(systemd, "a.service")).toBe("active");
    expect(cluster.state("a.service")).toMatchObject({ activeState: "active" });
  });

  it("unloads a batch with one reload, and a pass with nothing to do does not reload", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(...names(20).map((n) => unit(n)));
    await reconciler.trigger("test");
    await reconciler.trigger("again");
    expect(systemd.stats.reloads).toBe(0);
    cluster.remove(...names(20));
    await reconciler.trigger("test");
    await reconciler.publishStates(); // runs after each pass, not awaited by it
    expect(systemd.stats.reloads).toBe(1);
    expect(systemd.files.size).toBe(0);
    expect(systemd.units.size).toBe(0);
    expect(cluster.states.size).toBe(0);
  });

  it("unloads and loads in one pass with a single reload; a changed unit is stopped, replaced and started", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(unit("old.service"), unit("changed.service"));
    await reconciler.trigger("test");
    await settle();
    cluster.remove("old.service");
    cluster.place(unit("changed.service", "launched", "sleep 2d"), unit("new.service"));
    await reconciler.trigger("test");
    await settle();
    expect(systemd.stats.reloads).toBe(1);
    expect(systemd.files.has("old.service")).toBe(false);
    expect(systemd.units.get("changed.service")?.contents).toContain("sleep 2d");
    expect(active(systemd, "changed.service")).toBe("active");
    expect(active(systemd, "new.service")).toBe("active");
  });

  it("keeps at most JOB_CONCURRENCY start calls in flight, and more than one", async () => {
    const { cluster, systemd, reconciler } = setup({ startCallMs: 2 });
    cluster.place(...names(60).map((n) => unit(n)));
    await reconciler.trigger("test");
    expect(systemd.stats.starts).toBe(60);
    expect(systemd.stats.maxConcurrentStarts).toBe(JOB_CONCURRENCY);
  });

  it("removes a unit's file only once its stop has finished, waiting for the batch together", async () => {
    const { cluster, systemd, reconciler } = setup({ stopMs: 150 });
    cluster.place(...names(5).map((n) => unit(n)));
    await reconciler.trigger("test");
    await settle();
    const removedWhileRunning: string[] = [];
    const remove = systemd.removeUnit.bind(systemd);
    systemd.removeUnit = async (name) => {
      if (active(systemd, name) !== "inactive" && systemd.units.has(name)) removedWhileRunning.push(name);
      return remove(name);
    };
    cluster.remove(...names(5));
    const t0 = performance.now();
    await reconciler.trigger("test");
    const took = performance.now() - t0;
    expect(removedWhileRunning).toEqual([]);
    expect(systemd.files.size).toBe(0);
    expect(systemd.stats.reloads).toBe(1);
    // Five stops of 150 ms each, waited for as one batch, not one by one.
    expect(took).toBeGreaterThanOrEqual(150);
    expect(took).toBeLessThan(5 * 150);
  });

  it("a unit whose file cannot be written costs only that unit, and is retried on the next pass", async () => {
    const { cluster, systemd, reconciler } = setup();
    systemd.failWrites.add("u3.service");
    cluster.place(...names(10).map((n) => unit(n)));
    await reconciler.trigger("test");
    await settle();
    expect(names(10).filter((n) => active(systemd, n) !== "active")).toEqual(["u3.service"]);
    expect(systemd.stats.reloads).toBe(0);
    expect(cluster.state("u3.service")).toBeUndefined();
    await reconciler.trigger("retry");
    await settle();
    expect(active(systemd, "u3.service")).toBe("active");
  });

  it("after a failed daemon-reload the changed unit is not started on its old definition; the next pass retries", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(unit("a.service"));
    await reconciler.trigger("test");
    await settle();
    const reload = systemd.reload.bind(systemd);
    let fail = true;
    systemd.reload = async () => {
      if (fail) throw new Error("injected reload failure");
      return reload();
    };
    cluster.place(unit("a.service", "launched", "sleep 2d"));
    await reconciler.trigger("changed");
    await settle();
    expect(systemd.stats.starts).toBe(1);
    expect(active(systemd, "a.service")).toBe("inactive");
    fail = false;
    await reconciler.trigger("retry");
    await settle();
    expect(systemd.units.get("a.service")?.contents).toContain("sleep 2d");
    expect(active(systemd, "a.service")).toBe("active");
  });

  it("reloads for a unit systemd still holds, and starts the new definition", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(unit("a.service", "loaded"));
    await reconciler.trigger("test");
    await systemd.start("a.service"); // systemd now holds a.service's definition in memory
    await systemd.stop("a.service");
    await settle();
    cluster.place(unit("a.service", "launched", "sleep 2d"));
    await reconciler.trigger("changed");
    await settle();
    expect(systemd.stats.reloads).toBe(1);
    expect(systemd.units.get("a.service")?.contents).toContain("sleep 2d");
    expect(active(systemd, "a.service")).toBe("active");
  });

  it("a restarted agent recovers what the earlier run loaded and neither stops nor restarts it", async () => {
    const first = setup();
    first.cluster.place(unit("a.service"), unit("b.service", "loaded"));
    await first.reconciler.trigger("test");
    await settle();
    const systemd = first.systemd;
    const { starts, stops, reloads } = systemd.stats;
    const second = setup({}, systemd);
    second.cluster.place(unit("a.service"), unit("b.service", "loaded"));
    await second.reconciler.recover();
    await second.reconciler.trigger("startup");
    await settle();
    await second.reconciler.publishStates();
    expect(systemd.stats).toMatchObject({ starts, stops, reloads });
    expect(active(systemd, "a.service")).toBe("active");
    expect(second.cluster.state("a.service")).toMatchObject({ launched: true, activeState: "active" });
    expect(second.cluster.state("b.service")).toMatchObject({ launched: false, loadState: "loaded" });
  });

  it("does not start a launched unit again after it failed (the engine moves it)", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(unit("a.service"));
    await reconciler.trigger("test");
    await settle();
    systemd.crash("a.service");
    await reconciler.trigger("again");
    await reconciler.publishStates();
    expect(systemd.stats.starts).toBe(1);
    expect(cluster.state("a.service")).toMatchObject({ activeState: "failed", launched: true });
  });

  it("changes nothing while etcd is unreachable", async () => {
    const { cluster, systemd, reconciler } = setup();
    cluster.place(unit("a.service"));
    await reconciler.trigger("test");
    cluster.unreachable = true;
    cluster.remove("a.service");
    await reconciler.trigger("test");
    await settle();
    expect(active(systemd, "a.service")).toBe("active");
  });

  it("stops and unloads everything with one reload on shutdown", async () => {
    const { cluster, systemd, reconciler } = setup({ stopMs: 10 });
    cluster.place(...names(30).map((n) => unit(n)));
    await reconciler.trigger("test");
    await settle();
    await reconciler.unloadAll();
    expect(systemd.stats.stops).toBe(30);
    expect(systemd.stats.reloads).toBe(1);
    expect(systemd.units.size).toBe(0);
  });

  describe("units the machine already has", () => {
    const host = { "ssh.service": "/usr/lib/systemd/system/ssh.service" };

    it("refuses them with a reason in the published state, and never touches the OS unit", async () => {
      const { cluster, systemd, reconciler } = setup({ hostUnits: host });
      cluster.place(unit("ssh.service"), unit("web.service"));
      await reconciler.trigger("test");
      await settle();
      await reconciler.publishStates();
      expect(active(systemd, "web.service")).toBe("active");
      expect(systemd.files.has("ssh.service")).toBe(false);
      const state = cluster.state("ssh.service");
      expect(state).toMatchObject({
        loadState: REFUSED_LOAD_STATE,
        activeState: "inactive",
        launched: false,
      });
      expect(state?.reason).toContain("/usr/lib/systemd/system/ssh.service");
      expect(state?.hash).toBe(unit("ssh.service").hash);

      // Destroyed: its refused state goes, and the OS unit still runs untouched.
      cluster.remove("ssh.service", "web.service");
      await reconciler.trigger("destroyed");
      await reconciler.unloadAll();
      await reconciler.publishStates();
      expect(cluster.state("ssh.service")).toBeUndefined();
      expect(active(systemd, "ssh.service")).toBe("active");
      expect(systemd.stats.hostUnitCalls).toEqual([]);
    });

    it("loads nothing while systemd cannot say which units are its own", async () => {
      const systemd = new MemoryUnitManager();
      systemd.hostUnits = async () => {
        throw new Error("D-Bus timeout");
      };
      const { cluster, reconciler } = setup({}, systemd);
      cluster.place(unit("a.service"));
      await reconciler.trigger("test");
      expect(systemd.files.size).toBe(0);
      expect(systemd.stats.starts).toBe(0);
    });
  });
});

describe("Reconciler and the fence of SingleInstance units", () => {
  function singleInstance(name: string): UnitRecord {
    const options = [
      { section: "Service", name: "ExecStart", value: "/bin/sleep 1d" },
      { section: "X-Fleet", name: "SingleInstance", value: "true" },
    ];
    return { name, options, hash: unitHash(options), desiredState: "launched" };
  }

  it("starts them only while the fence allows, lists them for the guard first, and again after the guard killed them", async () => {
    const fence = {
      allowed: false,
      lapseCount: 0,
      listed: [] as string[][],
      lapses: () => fence.lapseCount,
      mayStart: (_viewRevision: number) => fence.allowed,
      ensureGuard: async () => true,
      setUnits: (units: readonly string[]) => void fence.listed.push([...units]),
    };
    const systemd = new MemoryUnitManager();
    const cluster = new FakeCluster();
    const reconciler = new Reconciler(
      cluster.registry,
      keys,
      cluster.membership,
      systemd,
      () => ({}),
      log,
      fence,
    );
    cluster.place(singleInstance("solo.service"), unit("plain.service"));

    await reconciler.trigger("lease not confirmed");
    await settle();
    expect(active(systemd, "plain.service")).toBe("active");
    expect(active(systemd, "solo.service")).not.toBe("active");
    expect(fence.listed.at(-1)).toEqual(["solo.service"]);

    fence.allowed = true;
    await reconciler.trigger("lease confirmed");
    await settle();
    expect(active(systemd, "solo.service")).toBe("active");

    // The deadline passed: the guard killed it, and the lease is not confirmed yet.
    await systemd.stop("solo.service");
    fence.lapseCount = 1;
    fence.allowed = false;
    await reconciler.trigger("fenced");
    await settle();
    expect(active(systemd, "solo.service")).not.toBe("active");

    fence.allowed = true;
    await reconciler.trigger("lease confirmed again");
    await settle();
    expect(active(systemd, "solo.service")).toBe("active");
    expect(active(systemd, "plain.service")).toBe("active");
  });
});
