// The engine's reconcile pass (fleet's engine/reconciler.go): compare the units' desired
// states with the schedule and return what to change, each change with a reason for the logs.
// Pure: the caller reads the snapshot, supplies `now`, and applies the actions (engine.ts).
//
// One pass, in order:
//   1. drop placements that are invalid now (inactive, machine gone, rules no longer met, replaced),
//      cascading to MachineOf followers;
//   2. move units that systemd gave up on (fleet#1103), with backoff and a move limit;
//   3. place every unplaced unit on its least-loaded eligible machine, in name order, repeating
//      until nothing more fits so followers named before their target still land in this pass;
//   4. record why the rest could not be placed, and forget stale failure records.

import type { FailureRecord, Machine, Placement, Requirements, UnitRecord, UnitState } from "../model.js";
import type { PendingReason } from "../registry/registry.js";
import { isTemplate } from "../unit/index.js";
import {
  ableToRun,
  admitGlobals,
  compare,
  displacedBy,
  formatMetadata,
  matchesMachineID,
  metadataMismatch,
  occupants,
  type Rule,
  runnableGlobals,
  shortID,
  type UnitRef,
} from "./eligibility.js";
import { LoadHeap } from "./load-heap.js";
import { RuleIndexOfUnits } from "./rule-index.js";

export interface SchedUnit extends UnitRecord {
  requirements: Requirements;
}

export interface EnginePolicy {
  /** How many times a failed unit is moved before the engine leaves it where it failed. */
  maxMoves: number;
  /** Wait before the n-th move is backoffBaseMs * 2^n, counted from the current placement. */
  backoffBaseMs: number;
  /**
   * How long a SingleInstance unit stays placed on a machine after the engine first saw the
   * machine gone (its lease expired), default DEFAULT_SINGLE_INSTANCE_GRACE_MS: the lost machine
   * fences (kills) it before its lease can expire, and the grace covers the kill itself.
   */
  singleInstanceGraceMs?: number;
}

/** See EnginePolicy.singleInstanceGraceMs and docs/architecture.md, "Fencing". */
export const DEFAULT_SINGLE_INSTANCE_GRACE_MS = 2000;

export interface EngineInput {
  now: number;
  units: SchedUnit[];
  schedule: Map<string, Placement>;
  pending: Map<string, PendingReason>;
  failures: Map<string, FailureRecord>;
  machines: Machine[];
  states: UnitState[];
  /** etcd just came back: a machine missing from the snapshot may be unseen rather than lost. */
  settling: boolean;
  /**
   * How long the engine has seen each missing machine missing, by machine ID; a machine not listed
   * counts as just gone. Only SingleInstance units wait for it (policy.singleInstanceGraceMs).
   */
  missingForMs?: ReadonlyMap<string, number>;
  policy: EnginePolicy;
}

export type EngineAction =
  | { kind: "unschedule"; unit: string; machineID: string; reason: string }
  | { kind: "schedule"; unit: string; machineID: string; reason: string }
  /** Could not place the unit; `reason` says why. Only emitted when the reason changed. */
  | { kind: "pending"; unit: string; reason: string }
  | { kind: "clear-pending"; unit: string }
  /** Write (or, when undefined, delete) the unit's failure record. */
  | { kind: "failures"; unit: string; record: FailureRecord | undefined };

export function decide(input: EngineInput): EngineAction[] {
  return new Pass(input).run();
}

/** How far a machine got through the checks for a unit; the furthest explains a pending unit. */
const STAGE: Record<Rule | "replaced" | "excluded" | "ok", number> = {
  machineID: 0,
  metadata: 1,
  machineOf: 2,
  conflicts: 3,
  replaced: 4,
  excluded: 5,
  ok: 6,
};

interface Verdict {
  machine: Machine;
  stage: number;
  reason: string;
  /** The conflicting or replacing unit. */
  other?: string;
}

class Pass {
  private readonly actions: EngineAction[] = [];
  private readonly units: Map<string, SchedUnit>;
  private readonly machines: Map<string, Machine>;
  /** Machines in ID order, the scheduler's tie-break. */
  private readonly machineList: Machine[];
  /** Machines by 8-character ID, for MachineID pins. */
  private readonly machinesByShortID = new Map<string, Machine[]>();
  /** Machines that have each MachineMetadata requirement, by the requirement's formatted text. */
  private readonly metadataCandidates = new Map<string, Set<Machine>>();
  private readonly rules: RuleIndexOfUnits;
  /** Runnable global units in name order. */
  private readonly globals: SchedUnit[];
  /** The working schedule: engine-placed units by name. */
  private readonly placed = new Map<string, { machineID: string }>();
  /** What is on each machine (placed units and globals); change it only through admit and evict. */
  private readonly view = new Map<string, Map<string, UnitRef>>();
  /** Where each unit is in the view, by unit name: one machine, or many for a global unit. */
  private readonly hosts = new Map<string, Set<string>>();
  /** Machines whose occupants changed since their placed units were last checked (settle). */
  private readonly dirty = new Set<string>();
  private readonly loads: LoadHeap;
  /** Units to place in step 3. */
  private readonly queue = new Set<string>();
  /** Units unscheduled this pass for a reason other than inactivity, to explain their next placement. */
  private readonly moved = new Map<string, { from: string; why: string }>();
  /** Placed at most once per pass, so a chain of Replaces cannot make the pass loop. */
  private readonly scheduledThisPass = new Set<string>();
  /** Machines a failed unit must not return to, and the reason its new placement will carry. */
  private readonly migrations = new Map<string, { exclude: ReadonlySet<string>; reason: string }>();
  private readonly failuresWritten = new Set<string>();

  constructor(private readonly input: EngineInput) {
    this.units = new Map(input.units.map((u) => [u.name, u]));
    this.machineList = [...input.machines].sort((a, b) => compare(a.id, b.id));
    this.machines = new Map(this.machineList.map((m) => [m.id, m]));
    for (const m of this.machineList) {
      const same = this.machinesByShortID.get(shortID(m.id));
      if (same) same.push(m);
      else this.machinesByShortID.set(shortID(m.id), [m]);
    }
    this.rules = new RuleIndexOfUnits(input.units);
    this.globals = runnableGlobals(input.units);
    this.loads = new LoadHeap((id) => this.load(id));
  }

  run(): EngineAction[] {
    this.loadSchedule();
    this.settle();
    this.migrateFailed();
    const pending = this.placeAll();
    this.writePending(pending);
    this.forgetFailures();
    return this.actions;
  }

  /** Takes the input schedule, dropping placements the engine should never have made. */
  private loadSchedule(): void {
    for (const [name, { machineID }] of sorted(this.input.schedule)) {
      const unit = this.units.get(name);
      const wrong = !unit
        ? "unit no longer exists"
        : unit.requirements.global
          ? "global units are not scheduled by the engine"
          : isTemplate(name)
            ? "templates are never scheduled"
            : undefined;
      if (wrong) this.actions.push({ kind: "unschedule", unit: name, machineID, reason: wrong });
      else {
        this.placed.set(name, { machineID });
        this.admit(machineID, this.unit(name));
      }
    }
    for (const machine of this.machineList) {
      this.occupants(machine.id);
      this.refreshGlobals(machine.id);
      this.loads.touch(machine.id);
    }
  }

  /**
   * Step 1: unschedules every placement that is no longer valid, until none is left. A placement's
   * validity depends only on its unit and its machine's occupants, so only machines whose occupants
   * changed since the last check are looked at again; each round goes in name order, as one pass
   * over all placements would.
   */
  private settle(): void {
    while (this.dirty.size > 0) {
      const names: string[] = [];
      for (const machineID of this.dirty) {
        for (const [name, unit] of this.view.get(machineID) ?? []) {
          if (!unit.requirements.global && this.placed.get(name)?.machineID === machineID) names.push(name);
        }
      }
      this.dirty.clear();
      for (const name of names.sort(compare)) {
        const machineID = this.placed.get(name)?.machineID;
        if (machineID === undefined) continue;
        const invalid = this.invalid(this.unit(name), machineID);
        if (invalid) this.unschedule(name, machineID, invalid.reason, invalid.why);
      }
    }
  }

  private invalid(unit: SchedUnit, machineID: string): { reason: string; why?: string } | undefined {
    if (unit.desiredState === "inactive") return { reason: "desired state is inactive" };
    const machine = this.machines.get(machineID);
    if (!machine) {
      if (this.input.settling) return undefined;
      if (unit.requirements.singleInstance) {
        const grace = this.input.policy.singleInstanceGraceMs ?? DEFAULT_SINGLE_INSTANCE_GRACE_MS;
        if ((this.input.missingForMs?.get(machineID) ?? 0) < grace) return undefined;
      }
      return { reason: `machine ${shortID(machineID)} went away`, why: "machine went away" };
    }
    const able = ableToRun(unit, machine, this.view, this.rules);
    if (!able.ok) return { reason: able.reason, why: able.reason };
    const by = displacedBy(unit, machineID, this.view, this.rules);
    if (by) return { reason: `replaced by ${by}`, why: `replaced by ${by}` };
    return undefined;
  }

  /** Step 2: moves launched units whose systemd state on their machine is `failed`. */
  private migrateFailed(): void {
    const { now, policy } = this.input;
    const failed = new Set<string>();
    for (const s of this.input.states) {
      if (s.activeState === "failed" && this.units.get(s.name)?.hash === s.hash)
        failed.add(`${s.name}\n${s.machineID}`);
    }
    const names = [...new Set([...failed].map((key) => key.slice(0, key.indexOf("\n"))))].sort(compare);
    for (const unit of names.map((name) => this.unit(name))) {
      const from = this.placed.get(unit.name)?.machineID;
      if (from === undefined || unit.desiredState !== "launched" || !this.machines.has(from)) continue;
      if (!failed.has(`${unit.name}\n${from}`)) continue;
      const prior = this.input.failures.get(unit.name);
      const record = prior?.hash === unit.hash ? prior : undefined;
      if (record?.gaveUp) continue;
      const moves = record?.moves ?? [];
      if (moves.length >= policy.maxMoves) {
        const where = [...new Set([...moves.map((m) => m.from), from])].map(shortID);
        const gaveUp =
          `failed on ${plural(where.length, "machine")} (${where.join(", ")}); ` +
          `stopped moving after ${plural(moves.length, "move")}`;
        this.writeFailures(unit.name, { hash: unit.hash, moves, gaveUp });
        continue;
      }
      const since = this.input.schedule.get(unit.name)?.at ?? now;
      if (now < since + policy.backoffBaseMs * 2 ** moves.length) continue;
      const exclude = new Set([...moves.map((m) => m.from), from]);
      if (!this.best(unit, exclude)) {
        this.writeFailures(unit.name, { hash: unit.hash, moves, gaveUp: "failed on every eligible machine" });
        continue;
      }
      this.unschedule(unit.name, from, `failed on ${shortID(from)}`);
      this.writeFailures(unit.name, { hash: unit.hash, moves: [...moves, { from, at: now }] });
      this.migrations.set(unit.name, {
        exclude,
        reason: `moved from ${shortID(from)}: failed there (move ${moves.length + 1}/${policy.maxMoves})`,
      });
      this.settle();
    }
  }

  /**
   * Step 3: places what it can, in name order, again and again while that places anything (a
   * MachineOf follower named before its target lands in the next round); returns why each
   * remaining unit could not be placed.
   */
  private placeAll(): Map<string, string> {
    for (const unit of this.units.values()) {
      if (this.schedulable(unit) && !this.placed.has(unit.name)) this.queue.add(unit.name);
    }
    for (let progress = true; progress; ) {
      progress = false;
      for (const name of [...this.queue].sort(compare)) {
        if (this.scheduledThisPass.has(name) && this.moved.has(name)) continue;
        const unit = this.unit(name);
        const choice = this.best(unit);
        if (!choice) continue;
        this.place(unit, choice.machineID, this.scheduleReason(unit, choice.eligible));
        progress = true;
      }
    }
    // Nothing changes any more: explain each unit left, as it stands now.
    const pending = new Map<string, string>();
    for (const name of [...this.queue].sort(compare)) {
      const unit = this.unit(name);
      const moved = this.moved.get(name);
      if (!this.best(unit)) pending.set(name, this.pendingReason(unit));
      else if (moved) pending.set(name, `${moved.why} on ${shortID(moved.from)}; placing it again next pass`);
    }
    return pending;
  }

  /**
   * The least-loaded machine `unit` may run on (ties: the lower ID), and how many it may run on;
   * undefined when none. Restricting rules (MachineID, MachineMetadata, MachineOf) name the few
   * candidates to look at; a unit without them walks the machines by load, skipping those where a
   * conflicting or replacing unit runs.
   */
  private best(
    unit: SchedUnit,
    exclude?: ReadonlySet<string>,
  ): { machineID: string; eligible: number } | undefined {
    const candidates = this.candidates(unit);
    if (candidates) {
      let best: Machine | undefined;
      let eligible = 0;
      for (const m of candidates) {
        if (exclude?.has(m.id) || this.evaluate(unit, m).stage !== STAGE.ok) continue;
        eligible++;
        if (!best || this.load(m.id) < this.load(best.id)) best = m;
      }
      return best && { machineID: best.id, eligible };
    }
    const blocked = new Set<string>(exclude);
    for (const id of this.migrations.get(unit.name)?.exclude ?? []) blocked.add(id);
    for (const names of this.rules.conflicting(unit)) {
      for (const other of names) {
        if (other !== unit.name) for (const id of this.hosts.get(other) ?? []) blocked.add(id);
      }
    }
    for (const other of this.rules.replacing(unit))
      for (const id of this.hosts.get(other) ?? []) blocked.add(id);
    let eligible = this.machineList.length;
    for (const id of blocked) if (this.machines.has(id)) eligible--;
    if (eligible === 0) return undefined;
    const machineID = this.loads.first((id) => !blocked.has(id));
    return machineID === undefined ? undefined : { machineID, eligible };
  }

  /** The machines `unit`'s restricting rules leave, in ID order; undefined when it has none. */
  private candidates(unit: SchedUnit): Machine[] | undefined {
    const req = unit.requirements;
    let out: Machine[] | undefined;
    if (req.machineID !== undefined) {
      const full = this.machines.get(req.machineID);
      out = [...(full ? [full] : []), ...(this.machinesByShortID.get(req.machineID) ?? [])];
      out = [...new Set(out)].sort((a, b) => compare(a.id, b.id));
    }
    if (Object.keys(req.metadata).length > 0) {
      const have = this.withMetadata(req.metadata);
      out = out ? out.filter((m) => have.has(m)) : [...have];
    }
    for (const peer of req.machineOf) {
      const on = this.hosts.get(peer) ?? new Set<string>();
      out = out
        ? out.filter((m) => on.has(m.id))
        : [...on]
            .map((id) => this.machines.get(id))
            .filter((m): m is Machine => m !== undefined)
            .sort((a, b) => compare(a.id, b.id));
    }
    return out;
  }

  /** The machines that have the required metadata, in ID order. */
  private withMetadata(required: Record<string, string[]>): Set<Machine> {
    const key = formatMetadata(required);
    let have = this.metadataCandidates.get(key);
    if (!have) {
      have = new Set(this.machineList.filter((m) => !metadataMismatch(m, required)));
      this.metadataCandidates.set(key, have);
    }
    return have;
  }

  private evaluate(unit: SchedUnit, machine: Machine): Verdict {
    const able = ableToRun(unit, machine, this.view, this.rules);
    if (!able.ok) return { machine, stage: STAGE[able.rule], reason: able.reason, other: able.other };
    const by = displacedBy(unit, machine.id, this.view, this.rules);
    if (by) return { machine, stage: STAGE.replaced, reason: `replaced by ${by}`, other: by };
    if (this.migrations.get(unit.name)?.exclude.has(machine.id)) {
      return { machine, stage: STAGE.excluded, reason: "failed there" };
    }
    return { machine, stage: STAGE.ok, reason: "" };
  }

  /** Units placed there plus the global units that run there. */
  private load(machineID: string): number {
    return this.view.get(machineID)?.size ?? 0;
  }

  private place(unit: SchedUnit, machineID: string, reason: string): void {
    const here = this.occupants(machineID);
    const displaced = [...this.rules.replaced(unit)]
      .filter((name) => here.has(name) && this.placed.has(name))
      .sort(compare);
    // Admit the unit before evicting, so the global units recomputed on eviction already see it.
    this.placed.set(unit.name, { machineID });
    this.admit(machineID, unit);
    this.queue.delete(unit.name);
    this.scheduledThisPass.add(unit.name);
    for (const name of displaced) {
      this.unschedule(name, machineID, `replaced by ${unit.name}`, `replaced by ${unit.name}`);
    }
    this.actions.push({ kind: "schedule", unit: unit.name, machineID, reason });
    if (displaced.length > 0) this.settle();
  }

  private unschedule(name: string, machineID: string, reason: string, why?: string): void {
    this.placed.delete(name);
    this.evict(machineID, name);
    this.refreshGlobals(machineID);
    this.actions.push({ kind: "unschedule", unit: name, machineID, reason });
    if (why) this.moved.set(name, { from: machineID, why });
    if (this.schedulable(this.unit(name))) this.queue.add(name);
  }

  /** A unit leaving a machine may let a global unit it conflicted with run there. */
  private refreshGlobals(machineID: string): void {
    const machine = this.machines.get(machineID);
    const here = this.view.get(machineID);
    if (!machine || !here || this.globals.length === 0) return;
    const placed: SchedUnit[] = [];
    for (const [name, unit] of here) {
      if (unit.requirements.global) this.evict(machineID, name);
      else placed.push(this.unit(name));
    }
    for (const g of admitGlobals(machine, placed, this.globals, this.rules)) this.admit(machineID, g);
  }

  private occupants(machineID: string): Map<string, UnitRef> {
    return occupants(this.view, machineID);
  }

  private admit(machineID: string, unit: UnitRef): void {
    this.occupants(machineID).set(unit.name, unit);
    const on = this.hosts.get(unit.name);
    if (on) on.add(machineID);
    else this.hosts.set(unit.name, new Set([machineID]));
    this.changed(machineID);
  }

  private evict(machineID: string, name: string): void {
    if (!this.view.get(machineID)?.delete(name)) return;
    this.hosts.get(name)?.delete(machineID);
    this.changed(machineID);
  }

  private changed(machineID: string): void {
    this.dirty.add(machineID);
    if (this.machines.has(machineID)) this.loads.touch(machineID);
  }

  private scheduleReason(unit: SchedUnit, eligible: number): string {
    const migration = this.migrations.get(unit.name)?.reason;
    if (migration) return migration;
    const moved = this.moved.get(unit.name);
    const req = unit.requirements;
    if (req.machineOf.length > 0) {
      const peers = `with peer ${req.machineOf.join(", ")}`;
      return moved ? `${peers} (moved from ${shortID(moved.from)})` : peers;
    }
    if (moved) return `moved from ${shortID(moved.from)}: ${moved.why}`;
    if (req.machineID !== undefined) return `pinned to machine ${req.machineID}`;
    return eligible === 1 ? "only eligible machine" : `least loaded of ${eligible} eligible machines`;
  }

  /**
   * Explains the furthest any machine got through the checks. Machines failing MachineID or
   * MachineMetadata get no further, so only those passing both are evaluated in full.
   */
  private pendingReason(unit: SchedUnit): string {
    if (this.machineList.length === 0) return "no machines";
    const req = unit.requirements;
    const pinned =
      req.machineID === undefined
        ? this.machineList
        : this.machineList.filter((m) => matchesMachineID(m, req.machineID as string));
    if (pinned.length === 0) return `machine ${req.machineID} is not in the cluster`;
    const have = this.withMetadata(req.metadata);
    const verdicts = pinned.filter((m) => have.has(m)).map((m) => this.evaluate(unit, m));
    if (verdicts.length === 0) {
      return req.machineID !== undefined
        ? `machine ${req.machineID} ${this.evaluate(unit, pinned[0] as Machine).reason}`
        : `no machine has metadata ${formatMetadata(req.metadata)}`;
    }
    const furthest = Math.max(...verdicts.map((v) => v.stage));
    switch (furthest) {
      case STAGE.machineOf:
        return this.peerReason(unit);
      case STAGE.excluded:
        return `failed on ${[...(this.migrations.get(unit.name)?.exclude ?? [])].map(shortID).join(", ")}; no other machine is eligible`;
      default: {
        const blocked = verdicts.filter((v) => v.stage >= STAGE.conflicts);
        const names = (stage: number) =>
          [...new Set(blocked.filter((v) => v.stage === stage).map((v) => v.other ?? ""))]
            .sort(compare)
            .join(", ");
        const conflicts = names(STAGE.conflicts);
        const replacers = names(STAGE.replaced);
        const why = [conflicts && `conflicts with ${conflicts}`, replacers && `replaced by ${replacers}`];
        return `${why.filter(Boolean).join(" or ")} on every eligible machine`;
      }
    }
  }

  private peerReason(unit: SchedUnit): string {
    const cycle = this.machineOfCycle(unit.name);
    if (cycle) return `MachineOf cycle ${cycle.join(" → ")} can never be scheduled`;
    const peers = unit.requirements.machineOf;
    let common: string[] | undefined;
    for (const peer of peers) {
      const hosts = [...(this.hosts.get(peer) ?? [])];
      if (hosts.length === 0) {
        const p = this.units.get(peer);
        if (!p) return `peer ${peer} does not exist`;
        return p.desiredState === "inactive"
          ? `waiting for peer ${peer}, which is inactive`
          : `waiting for peer ${peer} to be scheduled`;
      }
      common = common ? common.filter((id) => hosts.includes(id)) : hosts;
    }
    const host = common?.sort(compare)[0];
    if (host === undefined) return `peers ${peers.join(", ")} are on different machines`;
    const at = `${peers.length > 1 ? "peers" : "peer"} ${peers.join(", ")} ${peers.length > 1 ? "are" : "is"} on ${shortID(host)}`;
    const machine = this.machines.get(host);
    return machine ? `${at}: ${this.evaluate(unit, machine).reason}` : `${at}, which is not in the cluster`;
  }

  /** The MachineOf chain from `name` back to itself, if there is one: such units can never be placed. */
  private machineOfCycle(name: string): string[] | undefined {
    const seen = new Set<string>();
    const walk = (path: string[]): string[] | undefined => {
      const last = path[path.length - 1] as string;
      for (const peer of this.units.get(last)?.requirements.machineOf ?? []) {
        if (peer === name) return [...path, peer];
        if (seen.has(peer)) continue;
        seen.add(peer);
        const found = walk([...path, peer]);
        if (found) return found;
      }
      return undefined;
    };
    return walk([name]);
  }

  /** Step 4: a pending record only when the reason changed, so etcd is not rewritten every pass. */
  private writePending(pending: Map<string, string>): void {
    const names = new Set([...pending.keys(), ...this.input.pending.keys()]);
    for (const name of [...names].sort(compare)) {
      const reason = pending.get(name);
      if (reason === undefined) this.actions.push({ kind: "clear-pending", unit: name });
      else if (this.input.pending.get(name)?.reason !== reason) {
        this.actions.push({ kind: "pending", unit: name, reason });
      }
    }
  }

  /**
   * Failure records of another version of the unit, or of a unit stopped, unloaded or destroyed,
   * are stale: an operator's stop + start is a deliberate retry from scratch.
   */
  private forgetFailures(): void {
    for (const [name, record] of sorted(this.input.failures)) {
      if (this.failuresWritten.has(name)) continue;
      const unit = this.units.get(name);
      const stale = !unit || record.hash !== unit.hash || unit.desiredState !== "launched";
      if (stale) this.actions.push({ kind: "failures", unit: name, record: undefined });
    }
  }

  private writeFailures(name: string, record: FailureRecord): void {
    this.failuresWritten.add(name);
    this.actions.push({ kind: "failures", unit: name, record });
  }

  /** Units the engine places: not global, not templates, not inactive. */
  private schedulable(unit: SchedUnit): boolean {
    return !unit.requirements.global && !isTemplate(unit.name) && unit.desiredState !== "inactive";
  }

  private unit(name: string): SchedUnit {
    const unit = this.units.get(name);
    if (!unit) throw new Error(`scheduler: unknown unit ${name}`);
    return unit;
  }
}

function sorted<V>(map: ReadonlyMap<string, V>): [string, V][] {
  return [...map].sort(([a], [b]) => compare(a, b));
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
