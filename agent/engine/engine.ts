// The engine loop: when this machine holds the leader key, read a snapshot, let the pure
// scheduler decide, and apply its actions as leader-guarded writes. Only the leader runs passes.

import type { LeaderElection } from "../cluster/leader.js";
import type { Logger } from "../log.js";
import { countEngineAction } from "../metrics.js";
import type { ClusterSnapshot, Registry } from "../registry/registry.js";
import { parseRequirements } from "../unit/index.js";
import { decide, type EngineAction, type SchedUnit } from "./scheduler.js";

export interface EngineOptions {
  machineID: string;
  ttlSeconds: number;
  maxMoves: number;
  backoffBaseMs: number;
}

export class Engine {
  private leading = false;
  /** Until then, machines missing from the snapshot are not treated as lost (see docs). */
  private settleUntil = 0;
  private etcdWasDown = false;
  private readonly startedAt = Date.now();

  constructor(
    private readonly registry: Registry,
    private readonly election: LeaderElection,
    private readonly opts: EngineOptions,
    private readonly log: Logger,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /** One engine pass. Never throws: an unreachable etcd just skips the pass. */
  async pass(now = Date.now()): Promise<void> {
    try {
      // A freshly started agent leaves an existing leadership alone for one TTL, so an agent that
      // crash-loops (or was just restarted) cannot keep grabbing the engine from healthy peers.
      const young = now < this.startedAt + this.opts.ttlSeconds * 1000;
      if (!this.leading && young && (await this.election.currentLeader()) !== undefined) return;
      const leading = await this.election.campaign();
      if (leading !== this.leading) {
        this.leading = leading;
        // No settling on takeover: other machines' leases live in etcd, not in the old leader,
        // so a machine missing from the snapshot really has gone.
        this.log.info(leading ? "became the engine leader" : "lost the engine leadership");
      }
      if (!leading) return;
      const snap = await this.registry.snapshot();
      if (this.etcdWasDown) {
        this.etcdWasDown = false;
        this.settleUntil = now + this.opts.ttlSeconds * 1000;
        this.log.info("etcd is back; waiting one TTL before treating missing machines as lost");
      }
      await this.apply(this.decideFor(snap, now), now);
    } catch (err) {
      if (!this.etcdWasDown) this.log.warn({ err: String(err) }, "engine pass skipped: etcd unreachable");
      this.etcdWasDown = true;
    }
  }

  private decideFor(snap: ClusterSnapshot, now: number): EngineAction[] {
    const units: SchedUnit[] = snap.units.map((u) => ({
      ...u,
      requirements: parseRequirements(u.name, u.options).requirements,
    }));
    return decide({
      now,
      units,
      schedule: snap.schedule,
      pending: snap.pending,
      failures: snap.failures,
      machines: snap.machines,
      states: snap.states,
      settling: now < this.settleUntil,
      policy: { maxMoves: this.opts.maxMoves, backoffBaseMs: this.opts.backoffBaseMs },
    });
  }

  private async apply(actions: EngineAction[], now: number): Promise<void> {
    const me = this.opts.machineID;
    for (const a of actions) {
      let ok = false;
      switch (a.kind) {
        case "schedule":
          ok = await this.registry.schedule(
            a.unit,
            { machineID: a.machineID, at: now, reason: a.reason },
            me,
          );
          this.log.info({ unit: a.unit, machine: a.machineID, reason: a.reason }, `schedule ${a.unit}`);
          break;
        case "unschedule":
          ok = await this.registry.unschedule(a.unit, a.machineID, me);
          this.log.info({ unit: a.unit, machine: a.machineID, reason: a.reason }, `unschedule ${a.unit}`);
          break;
        case "pending":
          ok = await this.registry.setPending(a.unit, { reason: a.reason, at: now }, me);
          this.log.warn({ unit: a.unit, reason: a.reason }, `cannot schedule ${a.unit}`);
          break;
        case "clear-pending":
          ok = await this.registry.setPending(a.unit, undefined, me);
          break;
        case "failures":
          ok = await this.registry.setFailures(a.unit, a.record, me);
          if (a.record?.gaveUp)
            this.log.warn({ unit: a.unit, reason: a.record.gaveUp }, "stopped moving unit");
          break;
      }
      if (ok) countEngineAction(a.kind);
      if (!ok) {
        // Lost the leadership (or the placement changed) mid-pass: stop; the next pass re-reads.
        this.log.info({ action: a.kind, unit: a.unit }, "engine write refused; re-reading next pass");
        return;
      }
    }
  }
}
