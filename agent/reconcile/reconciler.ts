// The machine-side reconciler: desired units (scheduled here, plus matching global units) against
// what systemd has, planned by the pure `plan` and applied through the systemd adapter. It acts
// only on a fresh etcd snapshot, so when etcd is unreachable nothing is stopped (fixes fleet#1289).

import type { Membership } from "../cluster/membership.js";
import { coalesced } from "../coalesce.js";
import { hasContainerSection, type RenderContext, renderContainerUnit } from "../containers/index.js";
import { servicesToPublish } from "../discovery/publish.js";
import { encodeServiceRecord } from "../discovery/record.js";
import { globalUnitsFor } from "../engine/eligibility.js";
import type { Logger } from "../log.js";
import { timePass } from "../metrics.js";
import type { UnitRecord, UnitState } from "../model.js";
import type { Keys } from "../registry/keys.js";
import type { ClusterSnapshot, Registry } from "../registry/registry.js";
import type { SystemdManager } from "../systemd/manager.js";
import { parseRequirements, parseUnitFile, serializeUnit, unitHash } from "../unit/index.js";
import { type CurrentUnit, type DesiredUnit, plan, type Task } from "./plan.js";

/** First line of every unit file we write: the hash of the unit as submitted (before rendering). */
const HASH_HEADER = "# flotilla-unit-hash=";

/**
 * How long an unload waits for the unit's stop to finish: beyond a container's stop timeout
 * (10 s, then SIGKILL) and its cleanup, short of blocking the agent on a unit that hangs.
 */
const UNLOAD_STOP_WAIT_MS = 30_000;
const STOPPING_STATES = new Set(["active", "activating", "reloading", "deactivating"]);

/** systemd states in which a unit counts as started by us (fleet's "launched"). */
const STARTED_STATES = new Set(["active", "activating", "reloading", "deactivating", "failed"]);

export class Reconciler {
  /** Hash of each unit file we have written, by unit name. */
  private readonly loaded = new Map<string, string>();
  /** Units we have issued a start for since loading them (fleet's agent cache). */
  private readonly launched = new Set<string>();
  /** Last state JSON published per unit, so unchanged states are not rewritten. */
  private readonly published = new Map<string, string>();
  /** The registry record of each unit desired here, as of the last pass. */
  private readonly records = new Map<string, UnitRecord>();
  /** Service records published, by etcd key. */
  private readonly services = new Map<string, string>();
  private lastTrigger = "";
  private readonly passes = coalesced(() => timePass("reconcile", this.pass(this.lastTrigger)));
  /** Publishing runs one at a time, so an older read of systemd never overwrites a newer one. */
  readonly publishStates = coalesced(() => this.publishOnce());

  constructor(
    private readonly registry: Registry,
    private readonly keys: Keys,
    private readonly membership: Membership,
    private readonly systemd: SystemdManager,
    /** Asked at each load, so that a registry auth file provisioned later is used by later loads. */
    private readonly render: () => RenderContext,
    private readonly log: Logger,
  ) {}

  /** Learns what an earlier run of the agent left loaded, so a restart does not restart units. */
  async recover(): Promise<void> {
    const files = await this.systemd.loadedFiles();
    const states = await this.systemd.states([...files.keys()]);
    for (const [name, text] of files) {
      try {
        const header = text.startsWith(HASH_HEADER) ? text.slice(HASH_HEADER.length, text.indexOf("\n")) : "";
        this.loaded.set(name, header || unitHash(parseUnitFile(text, name)));
      } catch (err) {
        this.log.warn({ unit: name, err: String(err) }, "unreadable unit file left by an earlier run");
        this.loaded.set(name, "");
      }
      if (STARTED_STATES.has(states.get(name)?.activeState ?? "")) this.launched.add(name);
    }
    this.log.info({ units: [...this.loaded.keys()] }, "recovered loaded units");
  }

  /** Runs a pass, coalescing triggers that arrive while one is running. */
  trigger(reason: string): Promise<void> {
    this.lastTrigger = reason;
    return this.passes();
  }

  /** Forgets what was published, e.g. after a rejoin under a new lease. */
  republish(): Promise<void> {
    this.published.clear();
    this.services.clear();
    return this.publishStates();
  }

  private async pass(reason: string): Promise<void> {
    let snap: ClusterSnapshot;
    try {
      snap = await this.registry.snapshot();
    } catch (err) {
      this.log.debug({ err: String(err) }, "reconcile skipped: etcd unreachable; units keep running");
      return;
    }
    if (snap.corrupt.length > 0)
      this.log.warn({ keys: snap.corrupt }, "ignoring unparseable registry values");
    const desired = this.desiredUnits(snap);
    const current: CurrentUnit[] = [];
    const states = await this.systemd.states([...this.loaded.keys()]);
    for (const [name, hash] of this.loaded) {
      current.push({
        name,
        hash,
        launched: this.launched.has(name),
        activeState: states.get(name)?.activeState ?? "inactive",
      });
    }
    const tasks = plan(
      desired.map((d) => d.want),
      current,
    );
    if (tasks.length > 0) this.log.debug({ trigger: reason, tasks: tasks.length }, "reconcile pass");
    this.records.clear();
    for (const d of desired) this.records.set(d.want.name, d.record);
    for (const task of tasks) await this.apply(task, this.records.get(task.unit));
    await this.publishStates();
  }

  private desiredUnits(snap: ClusterSnapshot): { want: DesiredUnit; record: UnitRecord }[] {
    const me = this.membership.current;
    const self = snap.machines.find((m) => m.id === me.id) ?? me;
    const out: { want: DesiredUnit; record: UnitRecord }[] = [];
    const byName = new Map(snap.units.map((u) => [u.name, u]));
    for (const [name, placement] of snap.schedule) {
      const unit = byName.get(name);
      if (!unit || placement.machineID !== me.id || unit.desiredState === "inactive") continue;
      out.push({ want: { name, hash: unit.hash, state: unit.desiredState }, record: unit });
    }
    const withReqs = snap.units.map((u) => ({
      ...u,
      requirements: parseRequirements(u.name, u.options).requirements,
    }));
    for (const unit of globalUnitsFor(self, withReqs, snap)) {
      if (unit.desiredState === "inactive") continue;
      out.push({ want: { name: unit.name, hash: unit.hash, state: unit.desiredState }, record: unit });
    }
    return out;
  }

  private async apply(task: Task, record: UnitRecord | undefined): Promise<void> {
    const log = this.log.child({ unit: task.unit, task: task.kind });
    try {
      switch (task.kind) {
        case "load": {
          if (!record) throw new Error("no unit record to load");
          const enable = record.options.some((o) => o.section === "Install");
          const options = hasContainerSection(record.options)
            ? renderContainerUnit(task.unit, record.options, this.render()).options
            : record.options;
          await this.systemd.load(
            task.unit,
            `${HASH_HEADER}${record.hash}\n${serializeUnit(options)}`,
            enable,
          );
          this.loaded.set(task.unit, record.hash);
          break;
        }
        case "start":
          await this.systemd.start(task.unit);
          this.launched.add(task.unit);
          break;
        case "stop":
          await this.systemd.stop(task.unit);
          this.launched.delete(task.unit);
          break;
        case "unload":
          await this.untilStopped(task.unit, log);
          await this.systemd.unload(task.unit);
          this.loaded.delete(task.unit);
          this.launched.delete(task.unit);
          break;
      }
      log.info({ reason: task.reason }, `${task.kind} ${task.unit}: ${task.reason}`);
    } catch (err) {
      log.error({ reason: task.reason, err: String(err) }, `${task.kind} ${task.unit} failed`);
    }
  }

  /**
   * Waits while the unit is still stopping. StopUnit returns once the job is queued; removing the
   * unit file and reloading systemd during the stop would drop the rest of it (ExecStopPost, which
   * removes a container whose conmon was killed, and SuccessExitStatus), leaving a container behind.
   */
  private async untilStopped(name: string, log: Logger): Promise<void> {
    const deadline = Date.now() + UNLOAD_STOP_WAIT_MS;
    for (;;) {
      const state = (await this.systemd.states([name])).get(name)?.activeState;
      // Just after StopUnit the job may not have begun: "active" still counts as stopping.
      if (state === undefined || !STOPPING_STATES.has(state)) return;
      if (Date.now() > deadline) {
        log.warn({ waitedMs: UNLOAD_STOP_WAIT_MS }, `${name} is still stopping; unloading it anyway`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Publishes systemd's view of every loaded unit under this machine's lease; removes stale ones. */
  private async publishOnce(): Promise<void> {
    const me = this.membership.current.id;
    const states = await this.systemd.states([...this.loaded.keys()]);
    try {
      for (const [name, hash] of this.loaded) {
        const s = states.get(name);
        const state: UnitState = {
          name,
          hash,
          machineID: me,
          loadState: s?.loadState ?? "not-found",
          activeState: s?.activeState ?? "inactive",
          subState: s?.subState ?? "dead",
          launched: this.launched.has(name),
        };
        const json = JSON.stringify(state);
        if (this.published.get(name) === json) continue;
        await this.membership.putLeased(this.keys.state(name, me), json);
        this.published.set(name, json);
      }
      for (const name of [...this.published.keys()]) {
        if (this.loaded.has(name)) continue;
        await this.registry.deleteState(name, me);
        this.published.delete(name);
      }
      await this.publishServices(states);
    } catch (err) {
      this.log.debug({ err: String(err) }, "state publish deferred: etcd unreachable or not a member");
    }
  }

  /** Keeps one service record per active unit under this machine's lease (docs/discovery.md). */
  private async publishServices(states: Map<string, { activeState: string }>): Promise<void> {
    const me = this.membership.current;
    const inputs = [...this.loaded.keys()].flatMap((name) => {
      const unit = this.records.get(name);
      return unit ? [{ unit, activeState: states.get(name)?.activeState ?? "inactive" }] : [];
    });
    const plan = servicesToPublish(me.id, me.publicIP, inputs);
    for (const p of plan.problems) this.log.warn(p, "not publishing a service record");
    const wanted = new Map(
      plan.records.map((r) => [this.keys.service(r.service, me.id, r.unit), encodeServiceRecord(r)]),
    );
    for (const [key, value] of wanted) {
      if (this.services.get(key) === value) continue;
      await this.membership.putLeased(key, value);
      this.services.set(key, value);
      this.log.info({ key }, "service record published");
    }
    for (const key of [...this.services.keys()]) {
      if (wanted.has(key)) continue;
      await this.registry.deleteKey(key);
      this.services.delete(key);
      this.log.info({ key }, "service record withdrawn");
    }
  }

  /** Graceful stop: stop and unload every unit so the engine can place them elsewhere at once. */
  async unloadAll(): Promise<void> {
    for (const name of [...this.loaded.keys()].sort()) {
      await this.apply({ kind: "stop", unit: name, reason: "agent shutting down" }, undefined);
      await this.apply({ kind: "unload", unit: name, reason: "agent shutting down" }, undefined);
    }
  }
}
