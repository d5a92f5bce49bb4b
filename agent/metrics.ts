// The agent's Prometheus metrics (GET /metrics, docs/metrics.md): every metric is defined here.
// Cluster-wide gauges are computed at scrape time from the registry, the same source the API
// answers from, so the engine and reconcile loops carry no bookkeeping for them; the few event
// counters and timers are fed by one-line hooks (countEngineAction, timePass, observeDnsReply,
// etcdCallPolicy, observeWatchLag). fleetctl never imports this module, so prom-client stays out of its bundle.

import { NoopPolicy } from "cockatiel";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { deriveCurrentState, indexStates } from "./api/units.js";
import type { QuarantinedValue } from "./registry/quarantine.js";
import type { Registry as UnitRegistry } from "./registry/registry.js";
import type { UpdatesOverview } from "./update/store.js";

/** Where the scrape-time gauges read from; all are read on each scrape, never cached. */
export interface MetricSources {
  registry: Pick<UnitRegistry, "snapshot">;
  machineID: string;
  /** The machine ID in the engine leader key, if any. */
  currentLeader(): Promise<string | undefined>;
  /** The update records; absent when the agent runs without the updater's store. */
  updates?: { overview(): Promise<UpdatesOverview> };
  /** The registry view's feed (registry/feed.ts); absent: no flotilla_registry_watch_unapplied_write_age_seconds. */
  watch?: { unappliedWriteAgeMs(): number };
  /** The registry values this agent skips as bad (docs/etcd-keys.md, "Quarantine"). */
  quarantine?: () => readonly Pick<QuarantinedValue, "family">[];
}

// Event metrics live in one registry for the process: hooks in other modules reach them without
// a handle being threaded through their constructors.
const register = new Registry();
collectDefaultMetrics({ register });

const engineActions = new Counter({
  name: "flotilla_engine_actions_total",
  help: "Engine actions applied by this machine while it led the engine, by kind (schedule, unschedule, pending, clear-pending, failures).",
  labelNames: ["kind"],
  registers: [register],
});

const passSeconds = new Histogram({
  name: "flotilla_pass_duration_seconds",
  help: "Duration of the agent's loop passes: engine (every machine; non-leaders only check the lease) and reconcile.",
  labelNames: ["loop"],
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [register],
});

const etcdRequests = new Counter({
  name: "flotilla_etcd_requests_total",
  help: "etcd requests by result (ok, error): unary calls, each attempt on a host, and the opening of watch and lease keep-alive streams.",
  labelNames: ["result"],
  registers: [register],
});

const etcdSeconds = new Histogram({
  name: "flotilla_etcd_request_duration_seconds",
  help: "Duration of the etcd requests counted by flotilla_etcd_requests_total.",
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2],
  registers: [register],
});

const dnsQueries = new Counter({
  name: "flotilla_dns_queries_total",
  help: "Service-discovery DNS queries by answer: answered, nodata (name exists, no record of the type), nxdomain, refused, formerr, notimp, servfail, dropped.",
  labelNames: ["answer"],
  registers: [register],
});

const watchLag = new Histogram({
  name: "flotilla_registry_watch_lag_seconds",
  help: "Time from etcd acknowledging a write of this agent to the agent's watch-fed registry view applying it (0: applied before the acknowledgement arrived).",
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [register],
});

/** One hook in the registry's feed: a write of this agent the view has applied, `lagMs` after etcd acknowledged it. */
export function observeWatchLag(lagMs: number): void {
  watchLag.observe(lagMs / 1000);
}

/** One hook in the engine: an action it has applied. */
export function countEngineAction(kind: string): void {
  engineActions.inc({ kind });
}

/** Times one loop pass; resolves and rejects as `pass` does. */
export async function timePass(loop: "engine" | "reconcile", pass: Promise<void>): Promise<void> {
  const end = passSeconds.startTimer({ loop });
  try {
    await pass;
  } finally {
    end();
  }
}

const RCODES = ["answered", "formerr", "servfail", "nxdomain", "notimp", "refused"];

/** Counts a DNS reply by its answer and returns it unchanged (undefined: the query was dropped). */
export function observeDnsReply<T extends Buffer | undefined>(reply: T): T {
  let answer = "dropped";
  if (reply !== undefined && reply.length >= 12) {
    const rcode = (reply[3] ?? 0) & 0xf;
    answer = rcode === 0 && reply.readUInt16BE(6) === 0 ? "nodata" : (RCODES[rcode] ?? `rcode${rcode}`);
  }
  dnsQueries.inc({ answer });
  return reply;
}

/** etcd3's per-host policy that does nothing but time each request and count its result. */
export function etcdCallPolicy(): NoopPolicy {
  const policy = new NoopPolicy();
  policy.onSuccess(({ duration }) => {
    etcdRequests.inc({ result: "ok" });
    etcdSeconds.observe(duration / 1000);
  });
  policy.onFailure(({ duration }) => {
    etcdRequests.inc({ result: "error" });
    etcdSeconds.observe(duration / 1000);
  });
  return policy;
}

/**
 * Defines the scrape-time gauges over `sources` and returns the scrape function. A scrape that
 * cannot read etcd still answers with the process and event metrics, and
 * flotilla_scrape_registry_up says the cluster gauges are missing.
 */
export function agentMetrics(sources: MetricSources): { contentType: string; scrape(): Promise<string> } {
  // The cluster gauges have a registry of their own, printed only when the registry was read:
  // a scrape while etcd is away shows them missing rather than as zeros.
  const cluster = new Registry();
  const gauge = <L extends string>(config: { name: string; help: string; labelNames?: L[] }) =>
    new Gauge<L>({ ...config, registers: [cluster] });
  const units = gauge({
    name: "flotilla_units",
    help: "Units in the registry by desired state and current state (fleet's job state).",
    labelNames: ["desired_state", "current_state"],
  });
  const unitStates = gauge({
    name: "flotilla_unit_states",
    help: "Unit states reported by the machines (systemd's ActiveState), cluster-wide.",
    labelNames: ["active_state"],
  });
  const machines = gauge({
    name: "flotilla_machines",
    help: "Machines in the cluster.",
  });
  const pending = gauge({
    name: "flotilla_units_unschedulable",
    help: "Units the engine could not place (their reason is in list-unit-files --fields unit,reason).",
  });
  const moves = gauge({
    name: "flotilla_unit_failure_moves",
    help: "Moves of failed units recorded for the current version of each unit, summed over units.",
  });
  const gaveUp = gauge({
    name: "flotilla_units_gave_up",
    help: "Units the engine stopped moving after max-failure-moves moves.",
  });
  const leader = gauge({
    name: "flotilla_engine_leader",
    help: "1 when this machine holds the engine leader lease, else 0.",
  });
  const updateState = gauge({
    name: "flotilla_update_state",
    help: "1 for this machine's OS update state (idle, downloading, rebooting, …).",
    labelNames: ["state"],
  });
  const lockHolders = gauge({
    name: "flotilla_reboot_lock_holders",
    help: "Holders of each reboot group's update lock.",
    labelNames: ["group"],
  });
  const quarantined = gauge({
    name: "flotilla_registry_quarantined",
    help: "Registry values this agent skips because they failed their checks, by key family (GET /flotilla/v1/quarantine says why).",
    labelNames: ["family"],
  });
  // One agent per process; a second call (tests) replaces the first one's gauge.
  register.removeSingleMetric("flotilla_scrape_registry_up");
  const registryUp = new Gauge({
    name: "flotilla_scrape_registry_up",
    help: "1 when this scrape read the registry, 0 when etcd could not be read (cluster gauges are then absent).",
    registers: [register],
  });

  register.removeSingleMetric("flotilla_registry_watch_unapplied_write_age_seconds");
  const { watch } = sources;
  if (watch) {
    new Gauge({
      name: "flotilla_registry_watch_unapplied_write_age_seconds",
      help: "Seconds since etcd acknowledged the oldest write of this agent that its registry view has not applied yet; 0 when it has applied them all. Rises while the watch is stalled or broken.",
      registers: [register],
      collect() {
        this.set(watch.unappliedWriteAgeMs() / 1000);
      },
    });
  }

  const clusterGauges = [
    units,
    unitStates,
    machines,
    pending,
    moves,
    gaveUp,
    leader,
    updateState,
    lockHolders,
    quarantined,
  ];

  async function readCluster(): Promise<void> {
    const [snap, leaderID, overview] = await Promise.all([
      sources.registry.snapshot(),
      sources.currentLeader(),
      sources.updates?.overview(),
    ]);
    const stateOf = indexStates(snap.states);
    for (const unit of snap.units) {
      const placement = snap.schedule.get(unit.name);
      const target = placement ? stateOf(unit.name, placement.machineID) : undefined;
      units.inc({ desired_state: unit.desiredState, current_state: deriveCurrentState(placement, target) });
    }
    for (const s of snap.states) unitStates.inc({ active_state: s.activeState });
    machines.set(snap.machines.length);
    pending.set(snap.pending.size);
    const hashOf = new Map(snap.units.map((u) => [u.name, u.hash]));
    let moveCount = 0;
    let gaveUpCount = 0;
    for (const [name, record] of snap.failures) {
      if (record.hash !== hashOf.get(name)) continue;
      moveCount += record.moves.length;
      if (record.gaveUp) gaveUpCount++;
    }
    moves.set(moveCount);
    gaveUp.set(gaveUpCount);
    leader.set(leaderID === sources.machineID ? 1 : 0);
    const mine = overview?.statuses.find((s) => s.machineId === sources.machineID);
    if (mine) updateState.set({ state: mine.state }, 1);
    for (const g of overview?.groups ?? []) lockHolders.set({ group: g.name }, g.holders.length);
    // After the overview, which checks update/ again.
    for (const q of sources.quarantine?.() ?? []) quarantined.inc({ family: q.family });
  }

  return {
    contentType: register.contentType,
    async scrape() {
      for (const g of clusterGauges) g.reset();
      let read = true;
      try {
        await readCluster();
      } catch {
        read = false;
      }
      registryUp.set(read ? 1 : 0);
      const own = await register.metrics();
      return read ? `${own}${await cluster.metrics()}` : own;
    },
  };
}
