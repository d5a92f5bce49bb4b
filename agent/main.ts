// flotilla-agent: one process per machine. It joins the cluster, runs the engine when elected,
// reconciles this machine's units with systemd, and serves the fleet v1 API.

import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { networkInterfaces } from "node:os";
import { dirname } from "node:path";
import { hostUnitCheck } from "./api/hostunits.js";
import { createApiServer } from "./api/server.js";
import { Fencing } from "./cluster/fence-guard.js";
import { LeaderElection } from "./cluster/leader.js";
import { DuplicateMachineError, Membership } from "./cluster/membership.js";
import {
  type AgentConfig,
  ConfigError,
  etcdSecurity,
  readConfigFile,
  readTlsFiles,
  resolveConfig,
  type TlsFiles,
  tlsNeededBy,
} from "./config.js";
import {
  INSECURE_REGISTRIES_FILE,
  insecureRegistriesConf,
  type RenderContext,
  upstreamNameservers,
} from "./containers/index.js";
import { feedServiceCache, ServiceCache } from "./discovery/cache.js";
import { type DnsServer, startDnsServer } from "./discovery/server.js";
import { Engine } from "./engine/engine.js";
import { applyContainerFence } from "./fence/apply.js";
import { createLogger, type Logger } from "./log.js";
import { type Loops, startLoops } from "./loops.js";
import { agentMetrics } from "./metrics.js";
import type { Machine } from "./model.js";
import { Reconciler } from "./reconcile/reconciler.js";
import { createEtcdClient } from "./registry/client.js";
import { Keys } from "./registry/keys.js";
import { openRegistry } from "./registry/open.js";
import { Quarantine } from "./registry/quarantine.js";
import { route } from "./routing.js";
import { SystemdManager } from "./systemd/manager.js";
import { runHealthGate } from "./update/health.js";
import { RebootLock } from "./update/lock.js";
import { UpdateStore } from "./update/store.js";
import { systemctlReboot, Updater } from "./update/updater.js";
import { AGENT_VERSION } from "./version.js";

const DEFAULT_CONFIG_FILE = "/etc/flotilla/agent.json";
const RUN_ID_FILE = "/run/flotilla/run-id";
/** Exit code when another live machine holds this machine's ID. */
const EXIT_DUPLICATE_MACHINE = 3;

async function main(args: string[]): Promise<void> {
  // `agent.js health-gate`: the update health gate, run by flotilla-update-gate.service with the
  // agent's own configuration.
  const healthGate = args[0] === "health-gate";
  const argv = healthGate ? args.slice(1) : args;
  const configFlag = argv.find((a) => a.startsWith("--config="));
  const configFile = configFlag ? configFlag.slice("--config=".length) : DEFAULT_CONFIG_FILE;
  let cfg: AgentConfig;
  let tls: TlsFiles | undefined;
  try {
    const flags = argv.filter((a) => a !== configFlag);
    cfg = resolveConfig(readConfigFile(configFile), process.env, flags, configFile);
    const neededBy = tlsNeededBy(cfg);
    tls = neededBy ? readTlsFiles(cfg, neededBy) : undefined;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`flotilla-agent: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }

  const machineID = cfg.machineID ?? readFileSync("/etc/machine-id", "utf8").trim();
  const log = createLogger(cfg.logLevel, { machine: machineID.slice(0, 8) });
  if (healthGate)
    process.exit(await runHealthGate({ cfg, tls, machineID, log: log.child({ part: "health-gate" }) }));
  const apiPort = cfg.apiListen ? Number(cfg.apiListen.split(":").pop()) : undefined;
  const publicIP = cfg.publicIP ?? detectPublicIP();
  const machine: Machine = {
    id: machineID,
    publicIP,
    metadata: cfg.metadata,
    version: AGENT_VERSION,
    ...(apiPort ? { apiURL: `https://${publicIP}:${apiPort}` } : {}),
    runID: await runID(),
  };
  log.info({ version: AGENT_VERSION, etcd: cfg.etcdEndpoints, publicIP, metadata: cfg.metadata }, "starting");

  // Before the API listens: bridged containers never reach it or etcd (docs/security.md).
  await applyContainerFence(cfg, log.child({ part: "fence" }));

  const client = createEtcdClient(cfg.etcdEndpoints, etcdSecurity(cfg, tls));
  const keys = new Keys(cfg.etcdPrefix);
  // One quarantine for every reader of the registry: the view, services, the leader key, updates.
  const quarantine = new Quarantine(log.child({ part: "quarantine" }));
  // The view's changes go to the loops once they exist; a change before that is covered by the
  // startup passes, which read the view after it is listed.
  let loops: Loops | undefined;
  const { registry, feed } = openRegistry(client, keys, log.child({ part: "registry" }), {
    onEvents: (events, view) =>
      loops?.wake(
        route(
          {
            keys,
            machineID,
            updateGroup: cfg.updateGroup,
            placedBefore: (unit) => view.placement(unit)?.machineID,
          },
          events,
        ),
      ),
    onResync: () => loops?.resync(),
    quarantine,
  });
  const membership = new Membership(client, keys, machine, cfg.ttlSeconds, log.child({ part: "membership" }));
  const systemd = await SystemdManager.connect(cfg.unitDir, log.child({ part: "systemd" }));
  const fencing = new Fencing(
    { ttlMs: cfg.ttlSeconds * 1000, marginMs: cfg.fenceMarginMs },
    systemd,
    log.child({ part: "fence" }),
  );
  membership.on("renewed", (sentAt, revision) => {
    // The fenced units start again at once if they are still placed here.
    if (fencing.renewed(sentAt, revision))
      void reconciler.trigger("lease confirmed again after the fence deadline");
  });
  membership.on("leaseLost", () => fencing.lost());
  await writeInsecureRegistries(cfg.insecureRegistries, log);
  const dnsAddresses = cfg.dnsListen.map((a) => a.replace(/^public:/, `${publicIP}:`));
  // Bridge-networked containers reach the agent's DNS on the machine's public address.
  const servesContainers = dnsAddresses.some((a) => a === `${publicIP}:53`);
  const reconciler = new Reconciler(
    registry,
    keys,
    membership,
    systemd,
    () => renderContext(cfg.registryAuthFile, servesContainers ? publicIP : undefined),
    log.child({ part: "agent" }),
    fencing,
  );
  await reconciler.recover();

  const services = new ServiceCache(keys, quarantine);
  const serviceFeed = feedServiceCache(client, keys, services, log.child({ part: "discovery" }));
  const updates = {
    lock: new RebootLock(client, keys, { leaseSeconds: cfg.rebootLeaseSeconds }),
    store: new UpdateStore(client, keys, quarantine),
  };

  let ready = false;
  const api = createApiServer({
    registry,
    version: AGENT_VERSION,
    log: log.child({ part: "api" }),
    isReady: () => ready,
    machineID,
    pageSize: cfg.tokenLimit,
    registryHealth: () => feed.health(),
    quarantine: () => quarantine.list(),
    services,
    updates,
    isHostUnit: hostUnitCheck(cfg.unitDir),
    limits: cfg.limits.api,
    tls,
    metrics: agentMetrics({
      registry,
      machineID,
      currentLeader: async () => (await client.get(keys.engineLeader()).string()) ?? undefined,
      updates: updates.store,
      watch: feed,
      quarantine: () => quarantine.list(),
    }),
  });
  await api.listen({ socketPath: cfg.apiSocket || undefined, tcp: cfg.apiListen || undefined, tls });
  const dnsServers: DnsServer[] = [];
  for (const addr of dnsAddresses) {
    const colon = addr.lastIndexOf(":");
    try {
      dnsServers.push(
        await startDnsServer({
          address: addr.slice(0, colon),
          port: Number(addr.slice(colon + 1)),
          zone: services,
          log: log.child({ part: "dns" }),
          tcpMaxConnections: cfg.limits.dnsTcpMaxConnections,
          tcpIdleTimeoutMs: cfg.limits.dnsTcpIdleTimeoutMs,
        }),
      );
    } catch (err) {
      // Discovery is an add-on: a taken port must not keep the machine out of the cluster.
      log.error({ address: addr, err: String(err) }, "service-discovery DNS not started on this address");
    }
  }

  const refuseDuplicate = (err: DuplicateMachineError) => {
    log.fatal({ machine: machineID }, err.message);
    process.stderr.write(`flotilla-agent: ${err.message}\n`);
    // flotilla-agent.service does not restart on this code: a duplicate ID needs an operator.
    process.exit(EXIT_DUPLICATE_MACHINE);
  };
  membership.on("duplicate", refuseDuplicate);
  await membership.join().catch((err: unknown) => {
    if (err instanceof DuplicateMachineError) refuseDuplicate(err);
    throw err;
  });
  // Passes read the view: none runs before it holds the whole registry.
  await feed.ready();
  const election = new LeaderElection(client, keys, membership, log.child({ part: "election" }), quarantine);
  if (!cfg.disableEngine) election.start();
  const engine = cfg.disableEngine
    ? undefined
    : new Engine(
        registry,
        election,
        {
          machineID,
          ttlSeconds: cfg.ttlSeconds,
          maxMoves: cfg.maxFailureMoves,
          backoffBaseMs: cfg.failureBackoffMs,
          singleInstanceGraceMs: cfg.singleInstanceGraceMs,
        },
        log.child({ part: "engine" }),
      );

  let draining: Promise<void> | undefined;
  // The graceful stop's first half, shared by SIGTERM and the updater before a reboot: the units
  // stop here and the engine places them elsewhere at once instead of after a lease timeout.
  const drain = () => {
    draining ??= (async () => {
      loops?.stop();
      await election.stop();
      await election.resign().catch(() => undefined);
      await reconciler.unloadAll();
      fencing.disarm();
      await membership.leave();
    })();
    return draining;
  };
  const updater = cfg.updateChannelURL
    ? new Updater({
        cfg,
        machineID,
        log: log.child({ part: "update" }),
        records: updates.store,
        lock: updates.lock,
        drain,
        reboot: async () => {
          try {
            await systemctlReboot();
          } catch (err) {
            // Drained and out of the cluster with no reboot coming: a restart rejoins cleanly.
            log.fatal({ err: String(err) }, "reboot failed; exiting so systemd restarts the agent");
            process.exit(1);
          }
        },
      })
    : undefined;
  loops = startLoops(cfg, engine, reconciler, systemd, {
    checkRequested: () => updater?.trigger("check requested"),
    rebootGroupChanged: () => updater?.rebootGroupChanged(),
  });
  membership.on("rejoined", () => {
    void reconciler.republish().then(() => reconciler.trigger("rejoined the cluster"));
  });
  await reconciler.trigger("startup");
  ready = true;
  notifyReady(log);
  log.info("ready");
  updater?.start();

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping: unloading units and leaving the cluster");
    await updater?.stop();
    await drain();
    await api.close();
    for (const d of dnsServers) await d.close();
    await serviceFeed.stop();
    await feed.stop();
    systemd.close();
    client.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  systemd.on("disconnected", (err) => {
    log.fatal({ err: String(err) }, "lost the D-Bus connection to systemd; exiting so systemd restarts us");
    process.exit(1);
  });
}

/**
 * What a container unit is rendered with, read at each load: podman refuses an --authfile that
 * does not exist, and the machine's resolvers may change.
 */
function renderContext(authFile: string, dnsServer: string | undefined): RenderContext {
  const ctx: RenderContext = existsSync(authFile) ? { registryAuthFile: authFile } : {};
  if (dnsServer === undefined) return ctx;
  let resolvConf = "";
  try {
    resolvConf = readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    // No resolvers of its own: containers get the agent's alone.
  }
  return { ...ctx, dnsServer, upstreamDnsServers: upstreamNameservers(resolvConf, [dnsServer]) };
}

/**
 * Keeps podman's list of insecure registries equal to the agent's setting: the agent's own
 * registries.conf.d drop-in is written, or removed when the setting is empty. A failure is logged,
 * not fatal: pulls from those registries then fail with podman's reason in the unit's status.
 */
async function writeInsecureRegistries(locations: string[], log: Logger): Promise<void> {
  const content = insecureRegistriesConf(locations);
  try {
    if (content === undefined) {
      await rm(INSECURE_REGISTRIES_FILE, { force: true });
      return;
    }
    await mkdir(dirname(INSECURE_REGISTRIES_FILE), { recursive: true });
    await writeFile(INSECURE_REGISTRIES_FILE, content);
    log.info({ registries: locations, file: INSECURE_REGISTRIES_FILE }, "insecure registries configured");
  } catch (err) {
    log.error(
      { err: String(err), file: INSECURE_REGISTRIES_FILE },
      "cannot write podman's registry settings",
    );
  }
}

/**
 * This machine's run ID: random, kept in /run (a tmpfs), so it is the same for every run of the
 * agent during one boot of this machine and differs between machines and boots (identity.ts).
 */
async function runID(): Promise<string> {
  try {
    const existing = (await readFile(RUN_ID_FILE, "utf8")).trim();
    if (/^[0-9a-f-]{36}$/.test(existing)) return existing;
  } catch {
    // First run of this boot.
  }
  const id = randomUUID();
  await mkdir(dirname(RUN_ID_FILE), { recursive: true });
  await writeFile(RUN_ID_FILE, `${id}\n`);
  return id;
}

function detectPublicIP(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "";
}

/** Tells systemd (Type=notify) that we are registered and serving. */
function notifyReady(log: Logger): void {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile("systemd-notify", ["--ready", `--pid=${process.pid}`], (err) => {
    if (err) log.warn({ err: String(err) }, "systemd-notify failed");
  });
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(
    `flotilla-agent: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
