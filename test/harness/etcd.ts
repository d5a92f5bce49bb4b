import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import https from "node:https";
import net from "node:net";
import path from "node:path";
import { ensureHostPackages } from "./host.js";
import { log, since } from "./log.js";
import { harnessPki, type TlsFiles, type TlsMaterial } from "./pki.js";
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

/**
 * etcd serves clients and peers over TLS only and requires a client certificate from the harness
 * CA (`--client-cert-auth`), as a Flotilla cluster's etcd does (docs/security.md).
 */
export interface Etcd {
  /** A client certificate for tests (the harness's admin), its files and their contents. */
  readonly tls: TlsMaterial;
  readonly tlsFiles: TlsFiles;
  /** Client URL on `host` (https). */
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
  const endpoint = `https://${host}:${clientPort}`;
  const endpoints = host === "127.0.0.1" ? [endpoint] : [endpoint, `https://127.0.0.1:${await freePort()}`];
  const peer = `https://${host}:${peerPort}`;
  const dataDir = path.join(r.dir, "etcd");
  const pki = harnessPki();
  // 10.0.2.2: QEMU guests reach the host's etcd there (user networking).
  const server = pki.machine(
    "etcd",
    [...new Set([host, "127.0.0.1", "10.0.2.2"])],
    path.join(r.dir, "etcd-tls"),
  );
  const clientFiles = pki.admin;
  const clientTls = pki.material(clientFiles);
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
    "--client-cert-auth",
    `--trusted-ca-file=${server.ca}`,
    `--cert-file=${server.cert}`,
    `--key-file=${server.key}`,
    "--peer-client-cert-auth",
    `--peer-trusted-ca-file=${server.ca}`,
    `--peer-cert-file=${server.cert}`,
    `--peer-key-file=${server.key}`,
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
        return (await healthy(endpoint, clientTls)) ? true : undefined;
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
    tls: clientTls,
    tlsFiles: clientFiles,
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

function healthy(endpoint: string, tls: TlsMaterial): Promise<boolean> {
  return new Promise((resolve) => {
    const req = https.get(`${endpoint}/health`, { ...tls, timeout: 1000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve(body.includes('"health":"true"')));
      res.on("error", () => resolve(false));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
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
