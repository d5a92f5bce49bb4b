// Scale bench in the spirit of kubemark's hollow nodes: N simulated machines against ONE real etcd
// (the harness's, with client-certificate TLS), many machines in this one process. Each machine
// runs the real agent code: its own etcd client, membership under a lease, the watch-fed registry
// view (openRegistry) with routing.ts waking its loops (agent/loops.ts, as main.ts), the reconciler
// and its state publishing, and the engine with its leader election. The simulation replaces only
// systemd: each machine's reconciler drives an in-memory UnitManager (agent/systemd/memory.ts)
// instead of D-Bus. No API server, DNS or updater runs (they are not on the path of a unit change).
// Prints figures, asserts nothing; stops by itself and removes etcd and its temp dir.
//   node --expose-gc --max-old-space-size=20000 --import tsx bench/scale.ts \
//     [--machines 100] [--units 1000] [--ttl 5] [--idle 20] [--changes 20]

import { randomBytes, randomUUID } from "node:crypto";
import https from "node:https";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Etcd3 } from "etcd3";
import { pino } from "pino";
import { LeaderElection } from "../agent/cluster/leader.js";
import { Membership } from "../agent/cluster/membership.js";
import { DEFAULT_CONFIG } from "../agent/config.js";
import { Engine } from "../agent/engine/engine.js";
import { type Loops, startLoops } from "../agent/loops.js";
import type { Machine, UnitRecord } from "../agent/model.js";
import { Reconciler } from "../agent/reconcile/reconciler.js";
import { createEtcdClient } from "../agent/registry/client.js";
import type { ViewFeed } from "../agent/registry/feed.js";
import { Keys } from "../agent/registry/keys.js";
import { openRegistry } from "../agent/registry/open.js";
import { type ClusterSnapshot, type Registry, RegistryUnavailableError } from "../agent/registry/registry.js";
import { route } from "../agent/routing.js";
import { MemoryUnitManager } from "../agent/systemd/memory.js";
import { unitHash } from "../agent/unit/index.js";
import { AGENT_VERSION } from "../agent/version.js";
import { type Etcd, startEtcd } from "../test/harness/index.js";

function flag(name: string, dflt: number): number {
  const i = process.argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return dflt;
  const arg = process.argv[i] as string;
  const raw = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : process.argv[i + 1];
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got ${raw}`);
  return n;
}
const MACHINES = flag("machines", 100);
const UNITS = flag("units", 1000);
const TTL = flag("ttl", DEFAULT_CONFIG.ttlSeconds);
const IDLE_S = flag("idle", 20);
const CHANGES = flag("changes", 20);
/** Submissions in flight at once, as many concurrent fleetctl/API clients would have. */
const SUBMIT_CONCURRENCY = 64;
/** Machines starting at once (their list of the registry and their join). */
const START_CONCURRENCY = 25;

const log = pino({ level: process.env.BENCH_LOG ?? "error" });
const keys = new Keys(DEFAULT_CONFIG.etcdPrefix);
const gc = () => (globalThis as { gc?: () => void }).gc?.();
const kb = (b: number) => `${(b / 1024).toFixed(1)} KB`;
const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const figure = (name: string, value: string) => console.log(`${name.padEnd(58)} ${value}`);

interface SimMachine {
  id: string;
  client: Etcd3;
  registry: Registry;
  feed: ViewFeed;
  membership: Membership;
  election: LeaderElection;
  engine: Engine;
  systemd: MemoryUnitManager;
  loops: Loops;
  alive: boolean;
}

/** Engine passes on the leader: wall time and process CPU around each (other machines run too). */
const enginePasses = { count: 0, wallMs: 0, cpuMs: 0, maxWallMs: 0 };

async function startMachine(etcd: Etcd, index: number): Promise<SimMachine> {
  const id = randomBytes(16).toString("hex");
  const mlog = log.child({ machine: id.slice(0, 8) });
  const machine: Machine = {
    id,
    publicIP: `10.${(index >> 16) & 255}.${(index >> 8) & 255}.${index & 255}`,
    metadata: {},
    version: AGENT_VERSION,
    runID: randomUUID(),
  };
  const client = createEtcdClient([...etcd.endpoints], { tls: etcd.tls });
  let loops: Loops | undefined;
  const { registry, feed } = openRegistry(client, keys, mlog.child({ part: "registry" }), {
    onEvents: (events, view) =>
      loops?.wake(
        route(
          {
            keys,
            machineID: id,
            updateGroup: DEFAULT_CONFIG.updateGroup,
            placedBefore: (unit) => view.placement(unit)?.machineID,
          },
          events,
        ),
      ),
    onResync: () => loops?.resync(),
  });
  const membership = new Membership(client, keys, machine, TTL, mlog.child({ part: "membership" }));
  const systemd = new MemoryUnitManager();
  const reconciler = new Reconciler(
    registry,
    keys,
    membership,
    systemd,
    () => ({}),
    mlog.child({ part: "agent" }),
  );
  await reconciler.recover();
  await membership.join();
  await feed.ready();
  const election = new LeaderElection(client, keys, membership, mlog.child({ part: "election" }));
  election.start();
  const engine = new Engine(
    registry,
    election,
    {
      machineID: id,
      ttlSeconds: TTL,
      maxMoves: DEFAULT_CONFIG.maxFailureMoves,
      backoffBaseMs: DEFAULT_CONFIG.failureBackoffMs,
    },
    mlog.child({ part: "engine" }),
  );
  const timedEngine = {
    pass: async () => {
      const cpu = process.cpuUsage();
      const t = performance.now();
      await engine.pass();
      if (!engine.isLeader) return;
      const wall = performance.now() - t;
      const used = process.cpuUsage(cpu);
      enginePasses.count++;
      enginePasses.wallMs += wall;
      enginePasses.maxWallMs = Math.max(enginePasses.maxWallMs, wall);
      enginePasses.cpuMs += (used.user + used.system) / 1000;
    },
  };
  loops = startLoops(DEFAULT_CONFIG, timedEngine, reconciler, systemd, {
    checkRequested: () => undefined,
    rebootGroupChanged: () => undefined,
  });
  membership.on("rejoined", () => {
    rejoins++;
    void reconciler.republish().then(() => reconciler.trigger("rejoined the cluster"));
  });
  await reconciler.trigger("startup");
  return { id, client, registry, feed, membership, election, engine, systemd, loops, alive: true };
}

/** Abrupt stop: keep-alives stop without revoking the lease, and the machine goes silent. */
async function killMachine(m: SimMachine): Promise<void> {
  m.alive = false;
  m.loops.stop();
  m.membership.leased().release();
  await m.election.stop();
  await m.feed.stop();
  m.client.close();
}

/** Polite stop at the end (etcd goes away next, so nothing is revoked). */
async function closeMachine(m: SimMachine): Promise<void> {
  if (!m.alive) return;
  m.alive = false;
  m.loops.stop();
  await m.election.stop().catch(() => undefined);
  await m.feed.stop().catch(() => undefined);
  m.membership.leased().release();
  m.client.close();
}

/** Machines that lost their lease and rejoined (keep-alives starved by a saturated process). */
let rejoins = 0;

/** Submissions that etcd did not answer in time (a client sees a 503) and were sent again. */
let submitRetries = 0;

/** Submits as an API client does: a 503 (etcd did not answer in time) is retried. */
async function submit(registry: Registry, name: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await registry.putUnit(unitRecord(name));
      return;
    } catch (err) {
      if (!(err instanceof RegistryUnavailableError) || attempt >= 20) throw err;
      submitRetries++;
      await sleep(200);
    }
  }
}

function unitRecord(name: string): UnitRecord {
  const options = [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }];
  return { name, options, hash: unitHash(options), desiredState: "launched" };
}

async function inParallel<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Names among `names` not yet active on the machine they are placed on, per the published states. */
function notLaunched(snap: ClusterSnapshot, names: readonly string[], lost?: string): string[] {
  const active = new Set<string>();
  for (const s of snap.states) if (s.activeState === "active") active.add(`${s.name}\n${s.machineID}`);
  return names.filter((n) => {
    const p = snap.schedule.get(n);
    return p === undefined || p.machineID === lost || !active.has(`${n}\n${p.machineID}`);
  });
}

let lastProgress = 0;

/**
 * Waits until every unit in `names` is active on its placed machine, as `observer`'s view sees it;
 * a placement on `lost` does not count.
 */
async function waitLaunched(
  observer: SimMachine,
  names: readonly string[],
  timeoutMs: number,
  lost?: string,
): Promise<number> {
  const t = performance.now();
  for (;;) {
    const missing = notLaunched(await observer.registry.snapshot(), names, lost);
    if (missing.length === 0) return performance.now() - t;
    if (names.length >= 1000 && performance.now() - lastProgress > 30_000) {
      lastProgress = performance.now();
      console.log(
        `  … ${names.length - missing.length} of ${names.length} launched after ${((lastProgress - t) / 1000).toFixed(0)} s; ${rejoins} lease losses so far`,
      );
    }
    if (performance.now() - t > timeoutMs)
      throw new Error(
        `${missing.length} of ${names.length} units not launched after ${timeoutMs} ms, e.g. ${missing[0]}`,
      );
    await sleep(names.length > 1000 ? 100 : 20);
  }
}

interface EtcdCounters {
  /** Client messages received by etcd, all gRPC methods (a unary call is one). */
  received: number;
  keepAlives: number;
  /** Messages etcd sent on Watch streams (event batches, created/cancel notices). */
  watchSent: number;
  bytesIn: number;
  bytesOut: number;
  byMethod: Map<string, number>;
}

/** etcd's own counters, from its /metrics endpoint (same TLS client certificate). */
function etcdCounters(etcd: Etcd): Promise<EtcdCounters> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${etcd.endpoint}/metrics`, { ...etcd.tls, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => {
        const c: EtcdCounters = {
          received: 0,
          keepAlives: 0,
          watchSent: 0,
          bytesIn: 0,
          bytesOut: 0,
          byMethod: new Map(),
        };
        for (const line of body.split("\n")) {
          const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+]+)$/.exec(line);
          if (!m) continue;
          const [, name, labels = "", raw] = m;
          const v = Number(raw);
          const method = /grpc_method="([^"]+)"/.exec(labels)?.[1] ?? "";
          if (name === "grpc_server_msg_received_total") {
            c.received += v;
            c.byMethod.set(method, (c.byMethod.get(method) ?? 0) + v);
            if (method === "LeaseKeepAlive") c.keepAlives += v;
          } else if (name === "grpc_server_msg_sent_total" && method === "Watch") c.watchSent += v;
          else if (name === "etcd_network_client_grpc_received_bytes_total") c.bytesIn += v;
          else if (name === "etcd_network_client_grpc_sent_bytes_total") c.bytesOut += v;
        }
        if (c.received === 0) reject(new Error("etcd /metrics has no grpc_server_msg_received_total"));
        else resolve(c);
      });
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("etcd /metrics timed out")));
  });
}

function diff(a: EtcdCounters, b: EtcdCounters) {
  const methods = new Map<string, number>();
  for (const [k, v] of b.byMethod) {
    const d = v - (a.byMethod.get(k) ?? 0);
    if (d > 0) methods.set(k, d);
  }
  return {
    received: b.received - a.received,
    keepAlives: b.keepAlives - a.keepAlives,
    watchSent: b.watchSent - a.watchSent,
    bytes: b.bytesIn - a.bytesIn + (b.bytesOut - a.bytesOut),
    bytesIn: b.bytesIn - a.bytesIn,
    bytesOut: b.bytesOut - a.bytesOut,
    methods: [...methods].map(([k, v]) => `${k}=${v}`).join(" "),
  };
}

const heap = () => {
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed };
};

console.log(
  `scale bench: ${MACHINES} machines × ${UNITS} units, TTL ${TTL} s, one etcd (TLS), Node ${process.version}`,
);
if (!(globalThis as { gc?: unknown }).gc)
  console.log("(run node with --expose-gc for steadier memory figures)");
const etcd = await startEtcd();
const machines: SimMachine[] = [];
try {
  const mem0 = heap();
  let t = performance.now();
  await inParallel(
    Array.from({ length: MACHINES }, (_, i) => i),
    START_CONCURRENCY,
    async (i) => {
      machines[i] = await startMachine(etcd, i);
    },
  );
  figure("machines started (joined, view live)", `${((performance.now() - t) / 1000).toFixed(1)} s`);
  const observer = machines[0] as SimMachine;
  const memStarted = heap();

  // Submit through the registry's putUnit, as the API's PUT does, from one machine's registry.
  const names = Array.from({ length: UNITS }, (_, i) => `bench-${i}.service`);
  const passesBefore = { ...enginePasses };
  t = performance.now();
  const lag = monitorEventLoopDelay({ resolution: 20 });
  lag.enable();
  await inParallel(names, SUBMIT_CONCURRENCY, (name) => submit(observer.registry, name));
  const submitMs = performance.now() - t;
  figure(
    "submit rate (registry putUnit, 64 in flight)",
    `${((UNITS / submitMs) * 1000).toFixed(0)} units/s (${(submitMs / 1000).toFixed(1)} s for ${UNITS})`,
  );
  await waitLaunched(observer, names, 600_000);
  const launchMs = performance.now() - t;
  lag.disable();
  figure("all launched (active on placed machine) after first submit", `${(launchMs / 1000).toFixed(1)} s`);
  figure(
    "  this process's event-loop delay during it (CPU saturation)",
    `p50 ${(lag.percentile(50) / 1e6).toFixed(0)} ms, p99 ${(lag.percentile(99) / 1e6).toFixed(0)} ms, max ${(lag.max / 1e6).toFixed(0)} ms; ${submitRetries} submissions retried after a timeout, ${rejoins} machines lost their lease and rejoined`,
  );
  const launchPasses = enginePasses.count - passesBefore.count;
  figure(
    "engine passes on the leader during the launch",
    `${launchPasses} passes, ${((enginePasses.wallMs - passesBefore.wallMs) / Math.max(1, launchPasses)).toFixed(1)} ms wall/pass (max ${enginePasses.maxWallMs.toFixed(0)} ms), ${((enginePasses.cpuMs - passesBefore.cpuMs) / Math.max(1, launchPasses)).toFixed(1)} ms process CPU/pass`,
  );
  const memLoaded = heap();
  figure(
    "memory per simulated machine (started, empty registry)",
    `RSS ${mb((memStarted.rss - mem0.rss) / MACHINES)}, heap ${mb((memStarted.heap - mem0.heap) / MACHINES)}`,
  );
  figure(
    `memory per simulated machine (${UNITS} units launched)`,
    `RSS ${mb((memLoaded.rss - mem0.rss) / MACHINES)}, heap ${mb((memLoaded.heap - mem0.heap) / MACHINES)} (process RSS ${mb(memLoaded.rss)})`,
  );

  // Per unit change: submit one unit at a time and wait until it is launched, so each change is
  // measured alone (no batching with others), then divide etcd's counters by the changes.
  await sleep(2000);
  const before = await etcdCounters(etcd);
  t = performance.now();
  const extra = Array.from({ length: CHANGES }, (_, i) => `change-${i}.service`);
  for (const name of extra) {
    await submit(observer.registry, name);
    await waitLaunched(observer, [name], 60_000);
  }
  await sleep(1000); // the last state publications
  const changeS = (performance.now() - t) / 1000;
  const after = await etcdCounters(etcd);
  const d = diff(before, after);
  const beyondKa = d.received - d.keepAlives;
  figure(
    "etcd requests per unit change (submit → launched, alone)",
    `${(beyondKa / CHANGES).toFixed(1)} requests (+${(d.keepAlives / CHANGES).toFixed(1)} keep-alives in the ${changeS.toFixed(1)} s), ${(d.watchSent / CHANGES).toFixed(0)} watch messages sent`,
  );
  figure(
    "etcd bytes per unit change",
    `${kb(d.bytes / CHANGES)} (in ${kb(d.bytesIn / CHANGES)}, out ${kb(d.bytesOut / CHANGES)}; keep-alives included)`,
  );
  figure("  requests by method over the changes", d.methods);

  // Idle: nothing changes; every machine only keeps its lease alive.
  await sleep(3000);
  const idleBefore = await etcdCounters(etcd);
  const idlePasses = { ...enginePasses };
  await sleep(IDLE_S * 1000);
  const idle = diff(idleBefore, await etcdCounters(etcd));
  figure(
    `idle etcd traffic (${IDLE_S} s, nothing changing)`,
    `${(idle.received / IDLE_S).toFixed(1)} requests/s, ${(idle.bytes / IDLE_S / 1024).toFixed(1)} KB/s`,
  );
  figure(
    "  of which lease keep-alives / beyond keep-alives",
    `${(idle.keepAlives / IDLE_S).toFixed(1)} /s; ${((idle.received - idle.keepAlives) / IDLE_S).toFixed(2)} requests/s beyond (${(((idle.received - idle.keepAlives) / IDLE_S / MACHINES) * 100).toFixed(2)} per 100 machines)`,
  );
  if (idle.methods) figure("  requests by method while idle", idle.methods);
  const idleCount = enginePasses.count - idlePasses.count;
  figure(
    "engine pass on the leader while idle",
    `${idleCount} passes, ${((enginePasses.wallMs - idlePasses.wallMs) / Math.max(1, idleCount)).toFixed(2)} ms wall/pass, ${((enginePasses.cpuMs - idlePasses.cpuMs) / Math.max(1, idleCount)).toFixed(2)} ms process CPU/pass`,
  );

  // Failover: a machine that is not the engine leader, carrying about 1/N of the units, stops dead.
  const snap = await observer.registry.snapshot();
  const victim = machines.find((m) => m !== observer && !m.engine.isLeader) as SimMachine;
  const carried = [...snap.schedule].filter(([, p]) => p.machineID === victim.id).map(([n]) => n);
  t = performance.now();
  await killMachine(victim);
  await waitLaunched(observer, carried, 120_000, victim.id);
  const failS = (performance.now() - t) / 1000;
  figure(
    `failover: ${carried.length} units of a lost machine launched elsewhere`,
    `${failS.toFixed(1)} s (TTL ${TTL} s; target TTL + 3 s = ${TTL + 3} s: ${failS <= TTL + 3 ? "met" : "missed"})`,
  );
} finally {
  await Promise.all(machines.map((m) => m && closeMachine(m).catch(() => undefined)));
  await etcd.close();
}
process.exit(0);
