import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { ensureHostPackages } from "./host.js";
import { log, since } from "./log.js";
import { waitFor } from "./proc.js";
import { type Cgroup, Run, type Spawned } from "./run.js";

export interface EtcdOptions {
  /** Address to listen on and advertise. Default 127.0.0.1. */
  host?: string;
  /** Default 2379 when `host` is given, else a free port (so parallel runs on one box do not collide). */
  clientPort?: number;
  /** Default 2380 when `host` is given, else a free port. */
  peerPort?: number;
}

export interface Etcd {
  /** Client URL on `host`. */
  readonly endpoint: string;
  /** All client URLs: `endpoint`, plus a loopback one when `host` is not loopback. */
  readonly endpoints: readonly string[];
  readonly dataDir: string;
  /** PID of the running etcd; undefined while stopped. */
  readonly pid: number | undefined;
  /** Starts etcd again on the same data dir and waits until it is healthy. */
  start(): Promise<void>;
  /** SIGTERM and wait for it to exit (SIGKILL after 10 s). */
  stop(): Promise<void>;
  /** SIGKILL and wait for it to be reaped. */
  kill(): Promise<void>;
  /** Stops etcd and removes its data; for an etcd from `startEtcd` (a cluster's goes with its teardown). */
  close(): Promise<void>;
}

/** Starts Debian's etcd with a fresh data dir and waits until it reports healthy. */
export async function startEtcd(opts: EtcdOptions = {}): Promise<Etcd> {
  await ensureHostPackages();
  const r = Run.create();
  try {
    return await launchEtcd(r, opts, true);
  } catch (err) {
    await r.destroy();
    throw err;
  }
}

/** etcd as part of `run`: data dir, log and cgroup inside the run, so its teardown covers etcd. */
export async function launchEtcd(r: Run, opts: EtcdOptions, ownsRun: boolean): Promise<Etcd> {
  const host = opts.host ?? "127.0.0.1";
  const clientPort = opts.clientPort ?? (opts.host !== undefined ? 2379 : await freePort());
  const peerPort = opts.peerPort ?? (opts.host !== undefined ? 2380 : await freePort());
  const endpoint = `http://${host}:${clientPort}`;
  const endpoints = host === "127.0.0.1" ? [endpoint] : [endpoint, `http://127.0.0.1:${await freePort()}`];
  const peer = `http://${host}:${peerPort}`;
  const dataDir = path.join(r.dir, "etcd");
  const logFile = path.join(r.dir, "etcd.log");
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const cg: Cgroup = r.cgroup("etcd");
  const argv = [
    "etcd",
    "--name=harness",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${endpoints.join(",")}`,
    `--advertise-client-urls=${endpoint}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=harness=${peer}`,
    // As the image's etcd-member.service (docs/etcd-keys.md, "Compaction").
    "--auto-compaction-mode=periodic",
    "--auto-compaction-retention=1h",
  ];
  let proc: Spawned | undefined;

  const start = async () => {
    if (proc?.running) throw new Error("etcd is already running");
    const t = performance.now();
    const p = r.spawnIn(cg, argv, logFile);
    proc = p;
    await waitFor(
      `etcd at ${endpoint} to be healthy`,
      async () => {
        if (!p.running) throw new Error(`etcd exited; last log lines:\n${tail(logFile)}`);
        return (await healthy(endpoint)) ? true : undefined;
      },
      30_000,
    );
    log(`etcd healthy at ${endpoint} in ${since(t)}`);
  };
  const signal = async (sig: NodeJS.Signals, graceMs: number) => {
    const p = proc;
    if (p === undefined || !p.running) return;
    process.kill(p.pid, sig);
    const reaped = await Promise.race([p.exited.then(() => true), sleepResolve(graceMs, false)]);
    if (!reaped) {
      await cg.kill();
      await p.exited;
    }
  };

  await start();
  return {
    endpoint,
    endpoints,
    dataDir,
    get pid() {
      return proc?.running ? proc.pid : undefined;
    },
    start,
    stop: () => signal("SIGTERM", 10_000),
    kill: () => signal("SIGKILL", 5_000),
    close: async () => {
      if (ownsRun) await r.destroy();
      else await signal("SIGKILL", 5_000);
    },
  };
}

async function healthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    return ((await res.json()) as { health?: string }).health === "true";
  } catch {
    return false;
  }
}

function sleepResolve<T>(ms: number, value: T): Promise<T> {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
