// The machine-side reconciler: desired units (scheduled here, plus matching global units) against
// what systemd has, planned by the pure `plan` and applied through the UnitManager port in phases
// (stops → unit files removed and written → at most one daemon-reload → starts), so a batch of N
// units costs systemd one reload at most, not N, and none when all are new to it. It acts only on a fresh etcd snapshot, so when etcd is
// unreachable nothing is stopped (fixes fleet#1289).

import { forEachBounded } from "../bounded.js";
import { isSingleInstance, unitsToFence } from "../cluster/fence.js";
import type { Fencing } from "../cluster/fence-guard.js";
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
import type { SystemdUnitState, UnitManager } from "../systemd/port.js";
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

/**
 * Start and stop calls in flight at once. Each returns once systemd has queued the job, so a few
 * overlap the D-Bus round trips and let systemd run the jobs side by side; more would only queue.
 */
export const JOB_CONCURRENCY = 16;

/** The published load state of a unit the machine already has (an OS unit): see docs/units.md. */
export const REFUSED_LOAD_STATE = "refused";

/** What the reconciler reads and deletes in the registry. */
export type ReconcilerRegistry = Pick<Registry, "snapshot" | "deleteState" | "deleteKey">;
/** What the reconciler needs of this machine's membership. */
export type ReconcilerMembership = Pick<Membership, "current" | "putLeased">;
/** What the reconciler needs of fencing (cluster/fence-guard.ts); absent: no SingleInstance fencing. */
export type ReconcilerFence = Pick<Fencing, "lapses" | "mayStart" | "ensureGuard" | "setUnits">;

export class Reconciler {
  /** Hash of each unit file we have written, by unit name. */
  private readonly loaded = new Map<string, string>();
  /** Units we have issued a start for since loading them (fleet's agent cache). */
  private readonly launched = new Set<string>();
  /** Units desired here that the machine already has outside our unit directory: why, by name. */
  private readonly refused = new Map<string, string>();
  /** Unit files were written or removed since systemd last reloaded (a failed reload is retried). */
  private reloadNeeded = false;
  /** Last state JSON published per unit, so unchanged states are not rewritten. */
  private readonly published = new Map<string, string>();
  /** The registry record of each unit desired here, as of the last pass. */
  private readonly records = new Map<string, UnitRecord>();
  /** Service records published, by etcd key. */
  private readonly services = new Map<string, string>();
  private lastTrigger = "";
  /** The fence lapses already accounted for (see pass). */
  private lapsesSeen = 0;
  /** The registry revision the current pass read. */
  private viewRevision = 0;
  // Never rejects: callers fire and forget (loops.ts), and an unhandled rejection would end the
  // agent. A failed pass (e.g. a D-Bus call refused) is logged; the next trigger or timer retries.
  private readonly passes = coalesced(() =>
    timePass(
      "reconcile",
      this.pass(this.lastTrigger).catch((err: unknown) =>
        this.log.error({ err: String(err) }, "reconcile pass failed; the next pass retries"),
      ),
    ),
  );
  /** Publishing runs one at a time, so an older read of systemd never overwrites a newer one. */
  readonly publishStates = coalesced(() => this.publishOnce());

  constructor(
    private readonly registry: ReconcilerRegistry,
    private readonly keys: Keys,
    private readonly membership: ReconcilerMembership,
    private readonly systemd: UnitManager,
    /** Asked at each load, so that a registry auth file provisioned later is used by later loads. */
    private readonly render: () => RenderContext,
    private readonly log: Logger,
    private readonly fence?: ReconcilerFence,
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
    this.viewRevision = snap.revision;
    const desired = this.desiredUnits(snap);
    this.forgetFenced(desired.map((d) => d.record));
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
    this.records.clear();
    for (const d of desired) this.records.set(d.want.name, d.record);
    for (const name of this.refused.keys()) if (!this.records.has(name)) this.refused.delete(name);
    if (tasks.length > 0) this.log.debug({ trigger: reason, tasks: tasks.length }, "reconcile pass");
    await this.run(await this.withoutHostUnits(tasks));
    // Not awaited: the next pass (units placed meanwhile) need not wait for etcd writes.
    void this.publishStates();
  }

  /**
   * The fence deadline passed since the last pass: the guard has killed this machine's
   * SingleInstance units, so they count as not started, and are started again once the lease is
   * confirmed (if they are still placed here).
   */
  private forgetFenced(records: UnitRecord[]): void {
    const lapses = this.fence?.lapses() ?? 0;
    if (lapses === this.lapsesSeen) return;
    this.lapsesSeen = lapses;
    const fenced = records.filter((r) => this.launched.has(r.name) && isSingleInstance(r)).map((r) => r.name);
    for (const name of fenced) this.launched.delete(name);
    if (fenced.length > 0) this.log.warn({ units: fenced }, "fence deadline passed: these units were fenced");
  }

  /**
   * Lists this machine's SingleInstance units for the guard before any is started, and keeps
   * those starts back unless the guard runs and the lease is confirmed and unexpired.
   */
  private async fencedStarts(starts: Task[]): Promise<Task[]> {
    const fence = this.fence;
    if (!fence) return starts;
    const single = starts.filter((t) => {
      const record = this.records.get(t.unit);
      return record !== undefined && isSingleInstance(record);
    });
    try {
      fence.setUnits(unitsToFence(this.loaded.keys(), this.records));
    } catch (err) {
      this.log.error(
        { err: String(err) },
        "cannot list the units to fence; not starting SingleInstance units",
      );
      return starts.filter((t) => !single.includes(t));
    }
    if (single.length === 0) return starts;
    if ((await fence.ensureGuard()) && fence.mayStart(this.viewRevision)) return starts;
    this.log.warn(
      { units: single.map((t) => t.unit) },
      "not starting SingleInstance units: this machine's lease is not confirmed (fenced)",
    );
    return starts.filter((t) => !single.includes(t));
  }

  /**
   * Drops the load and start of every unit the machine already has outside our unit directory
   * (an OS unit such as ssh.service): writing ours would replace its definition, and stopping or
   * removing ours later would stop the OS's service. Such units are published as refused instead.
   */
  private async withoutHostUnits(tasks: Task[]): Promise<Task[]> {
    const names = tasks.filter((t) => t.kind === "load").map((t) => t.unit);
    if (names.length === 0) return tasks;
    let host: Map<string, string>;
    try {
      host = await this.systemd.hostUnits(names);
    } catch (err) {
      // Unknown is not "free": loading blindly could replace an OS unit. The next pass asks again.
      this.log.error({ units: names, err: String(err) }, "cannot ask systemd for its own units; not loading");
      const skip = new Set(names);
      return tasks.filter((t) => !skip.has(t.unit) || (t.kind !== "load" && t.kind !== "start"));
    }
    for (const name of names) {
      const path = host.get(name);
      if (path === undefined) {
        this.refused.delete(name);
        continue;
      }
      const why = `refused: this machine already has ${name} (${path}); the cluster unit would replace it`;
      if (this.refused.get(name) !== why) this.log.warn({ unit: name, path }, why);
      this.refused.set(name, why);
    }
    return tasks.filter((t) => !host.has(t.unit) || (t.kind !== "load" && t.kind !== "start"));
  }

  /**
   * Applies tasks in phases: stops; once those units have stopped, their files removed; new files
   * written; one daemon-reload for all of it; starts. Stops and starts run side by side, bounded.
   * Each task's failure is logged and costs only that unit (and its own later tasks).
   */
  private async run(tasks: Task[]): Promise<void> {
    const of = (kind: Task["kind"]) => tasks.filter((t) => t.kind === kind);
    const unloads = of("unload");
    const failed = new Set<string>();
    const step = (fn: (task: Task) => Promise<void>) => async (task: Task) => {
      // A unit whose file could not be written is not started; its failure is logged already.
      if (task.kind === "start" && failed.has(task.unit)) return;
      try {
        await fn(task);
        this.log.info(
          { unit: task.unit, task: task.kind, reason: task.reason },
          `${task.kind} ${task.unit}: ${task.reason}`,
        );
      } catch (err) {
        failed.add(task.unit);
        this.log.error(
          { unit: task.unit, task: task.kind, reason: task.reason, err: String(err) },
          `${task.kind} ${task.unit} failed`,
        );
      }
    };
    await forEachBounded(of("stop"), JOB_CONCURRENCY, step(this.stop));
    if (unloads.length > 0) await this.untilStopped(unloads.map((t) => t.unit));
    await forEachBounded(unloads, JOB_CONCURRENCY, step(this.removeFile));
    if (await this.holdsDefinitions(of("load").map((t) => t.unit))) this.reloadNeeded = true;
    await forEachBounded(of("load"), JOB_CONCURRENCY, step(this.writeFile));
    if (this.reloadNeeded) {
      try {
        await this.systemd.reload();
        this.reloadNeeded = false;
        this.log.debug({ unloaded: unloads.length, loaded: of("load").length }, "systemd reloaded");
      } catch (err) {
        this.log.error({ err: String(err) }, "systemd daemon-reload failed; retrying on the next pass");
        // systemd would start their old definitions: load them again on the next pass instead.
        for (const t of of("load")) {
          failed.add(t.unit);
          this.loaded.delete(t.unit);
        }
      }
    }
    // A unit that failed before it was unloaded leaves no failed state behind.
    await forEachBounded(unloads, JOB_CONCURRENCY, (t) =>
      failed.has(t.unit) || this.loaded.has(t.unit) ? Promise.resolve() : this.resetFailed(t.unit),
    );
    await forEachBounded(await this.fencedStarts(of("start")), JOB_CONCURRENCY, step(this.start));
  }

  private readonly stop = async (task: Task): Promise<void> => {
    await this.systemd.stop(task.unit);
    this.launched.delete(task.unit);
  };

  private readonly removeFile = async (task: Task): Promise<void> => {
    this.reloadNeeded = true;
    await this.systemd.removeUnit(task.unit);
    this.loaded.delete(task.unit);
    this.launched.delete(task.unit);
  };

  private readonly writeFile = async (task: Task): Promise<void> => {
    const record = this.records.get(task.unit);
    if (!record) throw new Error("no unit record to load");
    const enable = record.options.some((o) => o.section === "Install");
    const options = hasContainerSection(record.options)
      ? renderContainerUnit(task.unit, record.options, this.render()).options
      : record.options;
    await this.systemd.writeUnit(
      task.unit,
      `${HASH_HEADER}${record.hash}\n${serializeUnit(options)}`,
      enable,
    );
    this.loaded.set(task.unit, record.hash);
  };

  private readonly start = async (task: Task): Promise<void> => {
    if (!this.loaded.has(task.unit)) throw new Error("its unit file is not loaded");
    await this.systemd.start(task.unit);
    this.launched.add(task.unit);
  };

  /**
   * Whether systemd holds a definition of any of these names, so that their new files need a
   * daemon-reload. A name it has never loaded (or found no file for) needs none: systemd sees that
   * its unit directories changed and reads the new file when the unit is started. Names with glob
   * characters cannot be asked about by pattern and count as held.
   */
  private async holdsDefinitions(names: string[]): Promise<boolean> {
    if (names.length === 0) return false;
    if (names.some((n) => /[*?[\\]/.test(n))) return true;
    try {
      const held = await this.systemd.inMemory(names);
      return [...held.values()].some((s) => s.loadState !== "not-found");
    } catch (err) {
      this.log.warn({ err: String(err) }, "cannot tell which units systemd holds; reloading");
      return true;
    }
  }

  private async resetFailed(name: string): Promise<void> {
    try {
      await this.systemd.resetFailed(name);
    } catch (err) {
      this.log.warn({ unit: name, err: String(err) }, "reset-failed after unload failed");
    }
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

  /**
   * Waits while any of these units is still stopping. StopUnit returns once the job is queued;
   * removing a unit file and reloading systemd during the stop would drop the rest of it
   * (ExecStopPost, which removes a container whose conmon was killed, and SuccessExitStatus),
   * leaving a container behind. The batch waits together, so N stops cost the longest one.
   */
  private async untilStopped(names: string[]): Promise<void> {
    const deadline = Date.now() + UNLOAD_STOP_WAIT_MS;
    // Most stops take milliseconds: look again soon, then less often for slow ones.
    for (let pause = 20; ; pause = Math.min(pause * 2, 200)) {
      const states = await this.systemd.states(names);
      // Just after StopUnit the job may not have begun: "active" still counts as stopping.
      const stopping = names.filter((n) => STOPPING_STATES.has(states.get(n)?.activeState ?? ""));
      if (stopping.length === 0) return;
      if (Date.now() > deadline) {
        this.log.warn(
          { units: stopping, waitedMs: UNLOAD_STOP_WAIT_MS },
          `${stopping.join(", ")} still stopping; unloading anyway`,
        );
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }

  /**
   * Publishes systemd's view of every loaded unit under this machine's lease; removes stale ones.
   * Never throws: a failure is logged and the next change or pass publishes again.
   */
  private async publishOnce(): Promise<void> {
    const me = this.membership.current.id;
    let states: Map<string, SystemdUnitState>;
    try {
      states = await this.systemd.states([...this.loaded.keys()]);
    } catch (err) {
      this.log.warn({ err: String(err) }, "cannot read unit states from systemd to publish them");
      return;
    }
    try {
      const current = new Map<string, UnitState>();
      for (const [name, hash] of this.loaded) {
        const s = states.get(name);
        current.set(name, {
          name,
          hash,
          machineID: me,
          loadState: s?.loadState ?? "not-found",
          activeState: s?.activeState ?? "inactive",
          subState: s?.subState ?? "dead",
          launched: this.launched.has(name),
        });
      }
      for (const [name, reason] of this.refused) {
        const hash = this.records.get(name)?.hash ?? "";
        current.set(name, {
          name,
          hash,
          machineID: me,
          loadState: REFUSED_LOAD_STATE,
          activeState: "inactive",
          subState: "dead",
          launched: false,
          reason,
        });
      }
      const changed = [...current].filter(
        ([name, state]) => this.published.get(name) !== JSON.stringify(state),
      );
      // One transaction for all of them: after a batch, dozens of states change at once.
      const json = changed.map(([name, state]) => [name, JSON.stringify(state)] as const);
      await this.membership.putLeased(json.map(([name, value]) => [this.keys.state(name, me), value]));
      for (const [name, value] of json) this.published.set(name, value);
      const gone = [...this.published.keys()].filter((name) => !current.has(name));
      await forEachBounded(gone, JOB_CONCURRENCY, async (name) => {
        await this.registry.deleteState(name, me);
        this.published.delete(name);
      });
      await this.publishServices(states);
    } catch (err) {
      this.log.debug({ err: String(err) }, "state publish deferred: etcd unreachable or not a member");
    }
  }

  /** Keeps one service record per active unit under this machine's lease (docs/discovery.md). */
  private async publishServices(states: Map<string, SystemdUnitState>): Promise<void> {
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
    const changed = [...wanted].filter(([key, value]) => this.services.get(key) !== value);
    await this.membership.putLeased(changed);
    for (const [key, value] of changed) {
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
    const reason = "agent shutting down";
    const names = [...this.loaded.keys()].sort();
    this.refused.clear();
    await this.run([
      ...names.map((unit): Task => ({ kind: "stop", unit, reason })),
      ...names.map((unit): Task => ({ kind: "unload", unit, reason })),
    ]);
  }
}
