// The engine loop: when this machine holds the leader key, read a snapshot, let the pure
// scheduler decide, and apply its actions in batched, leader-fenced transactions. A follower's
// pass asks etcd nothing: the election watches the leader key (cluster/leader.ts).

import type { Election } from "../cluster/leader.js";
import type { Logger } from "../log.js";
import { countEngineAction } from "../metrics.js";
import type { Placement, Requirements } from "../model.js";
import {
  type ClusterSnapshot,
  ENGINE_TXN_MAX_WRITES,
  type EngineWrite,
  type Registry,
  RegistryUnavailableError,
} from "../registry/registry.js";
import { parseRequirements } from "../unit/index.js";
import { decide, type EngineAction, type SchedUnit } from "./scheduler.js";

/** What the engine needs of the registry; a fake stands in for etcd in unit tests. */
export type EngineRegistry = Pick<Registry, "snapshot" | "writeAsLeader">;

export interface EngineOptions {
  machineID: string;
  ttlSeconds: number;
  maxMoves: number;
  backoffBaseMs: number;
  /** See EnginePolicy.singleInstanceGraceMs. */
  singleInstanceGraceMs?: number;
  /** How long a young agent lets a vacant leader key be before it campaigns (default YOUNG_CAMPAIGN_DELAY_MS). */
  youngCampaignDelayMs?: number;
}

/**
 * How long an agent younger than one TTL lets a vacant leader key be before it campaigns: an agent
 * that just restarted (after a crash, perhaps the leader's own) leaves the engine to the agents
 * that kept running, which campaign at once, so a crash-looping agent cannot keep taking it.
 */
export const YOUNG_CAMPAIGN_DELAY_MS = 1500;

export class Engine {
  private leading = false;
  /** The first pass's time: an agent is young for one TTL after it. */
  private startedAt: number | undefined;
  /** When this engine first saw the leader key vacant, until it is held again. */
  private vacantSince: number | undefined;
  /** Until then, machines missing from the snapshot are not treated as lost (see docs). */
  private settleUntil = 0;
  private etcdWasDown = false;
  /**
   * When this engine first saw each machine that units are placed on missing (performance.now(),
   * monotonic): the SingleInstance grace counts from there. The deletion it saw happened when the
   * lease expired or earlier, so the count never starts before the expiry.
   */
  private readonly missingSince = new Map<string, number>();
  /** Parsed [X-Fleet] rules by unit name, reused while the unit's content hash is unchanged. */
  private readonly parsed = new Map<string, { hash: string; requirements: Requirements }>();

  constructor(
    private readonly registry: EngineRegistry,
    private readonly election: Election,
    private readonly opts: EngineOptions,
    private readonly log: Logger,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * One engine pass. Never throws: an unreachable etcd just skips the pass. Only a vacant leader
   * key makes it campaign, so an agent that just started (or restarted) leaves a leadership that
   * exists alone, and a follower's pass does no etcd work at all.
   */
  async pass(now = Date.now()): Promise<void> {
    try {
      const seen = this.election.observed();
      this.vacantSince = seen === "vacant" ? (this.vacantSince ?? now) : undefined;
      this.startedAt ??= now;
      const young = now < this.startedAt + this.opts.ttlSeconds * 1000;
      const delay = this.opts.youngCampaignDelayMs ?? YOUNG_CAMPAIGN_DELAY_MS;
      const mayCampaign = !young || now - (this.vacantSince ?? now) >= delay;
      const leading = seen === "vacant" ? mayCampaign && (await this.election.campaign()) : seen === "leader";
      this.setLeading(leading);
      if (!leading) return;
      const snap = await this.registry.snapshot();
      if (this.etcdWasDown) {
        this.etcdWasDown = false;
        this.settleUntil = now + this.opts.ttlSeconds * 1000;
        this.log.info("etcd is back; waiting one TTL before treating missing machines as lost");
      }
      await this.apply(this.decideFor(snap, now), snap.revision, now);
    } catch (err) {
      if (!(err instanceof RegistryUnavailableError)) {
        this.log.error({ err: String(err) }, "engine pass failed");
        return;
      }
      if (!this.etcdWasDown) this.log.warn({ err: String(err) }, "engine pass skipped: etcd unreachable");
      this.etcdWasDown = true;
    }
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    // No settling on takeover: other machines' leases live in etcd, not in the old leader,
    // so a machine missing from the snapshot really has gone.
    this.log.info(leading ? "became the engine leader" : "lost the engine leadership");
  }

  private decideFor(snap: ClusterSnapshot, now: number): EngineAction[] {
    const names = new Set<string>();
    const units: SchedUnit[] = snap.units.map((u) => {
      names.add(u.name);
      let known = this.parsed.get(u.name);
      if (known?.hash !== u.hash) {
        known = { hash: u.hash, requirements: parseRequirements(u.name, u.options).requirements };
        this.parsed.set(u.name, known);
      }
      return { ...u, requirements: known.requirements };
    });
    for (const name of this.parsed.keys()) if (!names.has(name)) this.parsed.delete(name);
    return decide({
      missingForMs: this.missingFor(snap),
      now,
      units,
      schedule: snap.schedule,
      pending: snap.pending,
      failures: snap.failures,
      machines: snap.machines,
      states: snap.states,
      settling: now < this.settleUntil,
      policy: {
        maxMoves: this.opts.maxMoves,
        backoffBaseMs: this.opts.backoffBaseMs,
        ...(this.opts.singleInstanceGraceMs !== undefined
          ? { singleInstanceGraceMs: this.opts.singleInstanceGraceMs }
          : {}),
      },
    });
  }

  /** How long each machine with placements but no record has been seen missing. */
  private missingFor(snap: ClusterSnapshot): Map<string, number> {
    const now = performance.now();
    const present = new Set(snap.machines.map((m) => m.id));
    const missing = new Set<string>();
    for (const p of snap.schedule.values()) if (!present.has(p.machineID)) missing.add(p.machineID);
    for (const id of this.missingSince.keys()) if (!missing.has(id)) this.missingSince.delete(id);
    const out = new Map<string, number>();
    for (const id of missing) {
      const since = this.missingSince.get(id) ?? now;
      this.missingSince.set(id, since);
      out.set(id, now - since);
    }
    return out;
  }

  /**
   * Writes the actions in order, in transactions of up to ENGINE_TXN_MAX_WRITES. A refused
   * transaction (leadership lost, or a placement changed since the snapshot) ends the pass: the
   * next pass decides again from what is there.
   */
  private async apply(actions: EngineAction[], revision: number, now: number): Promise<void> {
    /** Placements this pass wrote: a later unschedule of one expects exactly it. */
    const written = new Map<string, Placement>();
    for (const batch of batches(actions, ENGINE_TXN_MAX_WRITES)) {
      if (this.election.observed() !== "leader") {
        this.setLeading(false);
        return;
      }
      const writes = batch.map((a) => toWrite(a, revision, now, written));
      if (!(await this.registry.writeAsLeader(writes, this.opts.machineID))) {
        this.log.info(
          { writes: writes.length, first: batch[0]?.unit },
          "engine write refused (leadership or a placement changed); deciding again next pass",
        );
        return;
      }
      for (const [i, a] of batch.entries()) {
        const w = writes[i];
        if (w?.kind === "schedule") written.set(w.unit, w.placement);
        this.logAction(a);
        countEngineAction(a.kind);
      }
    }
  }

  private logAction(a: EngineAction): void {
    switch (a.kind) {
      case "schedule":
      case "unschedule":
        this.log.info({ unit: a.unit, machine: a.machineID, reason: a.reason }, `${a.kind} ${a.unit}`);
        break;
      case "pending":
        this.log.warn({ unit: a.unit, reason: a.reason }, `cannot schedule ${a.unit}`);
        break;
      case "failures":
        if (a.record?.gaveUp) this.log.warn({ unit: a.unit, reason: a.record.gaveUp }, "stopped moving unit");
        break;
    }
  }
}

function toWrite(
  a: EngineAction,
  revision: number,
  now: number,
  written: Map<string, Placement>,
): EngineWrite {
  switch (a.kind) {
    case "schedule":
      return {
        kind: "schedule",
        unit: a.unit,
        placement: { machineID: a.machineID, at: now, reason: a.reason },
      };
    case "unschedule": {
      const placement = written.get(a.unit);
      return {
        kind: "unschedule",
        unit: a.unit,
        expect: placement ? { placement } : { unchangedSince: revision },
      };
    }
    case "pending":
      return { kind: "pending", unit: a.unit, reason: { reason: a.reason, at: now } };
    case "clear-pending":
      return { kind: "pending", unit: a.unit, reason: undefined };
    case "failures":
      return { kind: "failures", unit: a.unit, record: a.record };
  }
}

/**
 * Splits the actions, in order, into transactions of at most `limit`, starting a new one where an
 * action would touch a key the current one already writes (etcd refuses a duplicate key in a
 * transaction, and a move is an unschedule and a schedule of the same unit).
 */
export function batches(actions: readonly EngineAction[], limit: number): EngineAction[][] {
  const out: EngineAction[][] = [];
  let current: EngineAction[] = [];
  let keys = new Set<string>();
  for (const a of actions) {
    const key = `${writtenKey(a)}\n${a.unit}`;
    if (current.length >= limit || keys.has(key)) {
      out.push(current);
      current = [];
      keys = new Set();
    }
    current.push(a);
    keys.add(key);
  }
  if (current.length > 0) out.push(current);
  return out;
}

function writtenKey(a: EngineAction): "schedule" | "pending" | "failures" {
  return a.kind === "schedule" || a.kind === "unschedule"
    ? "schedule"
    : a.kind === "failures"
      ? "failures"
      : "pending";
}
