import path from "node:path";
import type { Firmware } from "./boot-loader.js";
import { type Etcd, launchEtcd } from "./etcd.js";
import { ensureHostPackages, ensureInotifyInstances } from "./host.js";
import { log, since } from "./log.js";
import { Machine } from "./machine.js";
import { harnessPki } from "./pki.js";
import { runOk } from "./proc.js";
import { imageRootfs, type RootfsProvider } from "./rootfs.js";
import { Run } from "./run.js";

export interface ClusterOptions {
  machines: number;
  /** Per machine (by index): FLOTILLA_METADATA of its agent. */
  metadata?: Record<string, string>[];
  /** Start flotilla-agent.service in the machines (needs dist/agent.js). Default true. */
  agent?: boolean;
  /** Extra (or overriding) variables for /etc/flotilla/agent.env. */
  agentEnv?: Record<string, string>;
  /** Where the base rootfs comes from. Default: `imageRootfs`, the OS image's own userland. */
  rootfs?: RootfsProvider;
  /** Directory bound at /usr/lib/flotilla/dist. Default: the repo's dist/. */
  distDir?: string;
  /** Per machine boot. Default 60 s. */
  bootTimeoutMs?: number;
  /** Firmware + boot loader for every machine (boot-loader.ts): machines with A/B slots. */
  firmware?: Firmware;
}

export interface Bridge {
  name: string;
  /** The host's address on the bridge: etcd listens here. */
  ip: string;
  prefixLength: number;
}

export const AGENT_API_PORT = 7480;

/** etcd plus N systemd-nspawn machines on a private bridge, all belonging to one harness run. */
export class Cluster {
  readonly machines: readonly Machine[];
  readonly etcd: Etcd;
  readonly bridge: Bridge;
  /** Directory of this run: logs (etcd.log, <machine>/console.log), overlays, state. */
  readonly runDir: string;
  private readonly run: Run;

  private constructor(r: Run, bridge: Bridge, etcd: Etcd, machines: Machine[]) {
    this.run = r;
    this.runDir = r.dir;
    this.bridge = bridge;
    this.etcd = etcd;
    this.machines = machines;
  }

  /** etcd URL, reachable from the host and from the machines. */
  get endpoint(): string {
    return this.etcd.endpoint;
  }

  machine(name: string): Machine {
    const m = this.machines.find((x) => x.name === name);
    if (m === undefined) throw new Error(`no machine ${name}`);
    return m;
  }

  static async start(opts: ClusterOptions): Promise<Cluster> {
    if (!Number.isInteger(opts.machines) || opts.machines < 0 || opts.machines > 250) {
      throw new Error(`machines must be an integer in 0..250, got ${opts.machines}`);
    }
    const t = performance.now();
    await ensureHostPackages();
    ensureInotifyInstances(opts.machines);
    const rootfs = await (opts.rootfs ?? imageRootfs)();
    const r = Run.create();
    try {
      const bridge = await createBridge(r);
      const etcd = await launchEtcd(r, { host: bridge.ip }, false);
      const machines = Array.from({ length: opts.machines }, (_, i) => {
        const ip = bridge.ip.replace(/\.1$/, `.${i + 2}`);
        const name = `${r.id}-${i + 1}`;
        return new Machine(r, {
          name,
          tls: harnessPki().machine(name, [ip], path.join(r.dir, `${name}-tls`)),
          ip,
          prefixLength: bridge.prefixLength,
          bridge: bridge.name,
          rootfs,
          agent: opts.agent ?? true,
          distDir: opts.distDir,
          bootTimeoutMs: opts.bootTimeoutMs,
          firmware: opts.firmware,
          agentEnv: {
            FLOTILLA_ETCD_ENDPOINTS: etcd.endpoint,
            FLOTILLA_PUBLIC_IP: ip,
            FLOTILLA_METADATA: metadataString(opts.metadata?.[i] ?? {}),
            FLOTILLA_API_LISTEN: `0.0.0.0:${AGENT_API_PORT}`,
            ...opts.agentEnv,
          },
        });
      });
      const tb = performance.now();
      log(`booting ${machines.length} machine(s) on ${bridge.name} (${bridge.ip}/${bridge.prefixLength})…`);
      await Promise.all(machines.map((m) => m.start()));
      log(`${machines.length} machine(s) booted in ${since(tb)}; cluster ready in ${since(t)}`);
      return new Cluster(r, bridge, etcd, machines);
    } catch (err) {
      await r.destroy().catch((e: unknown) => log(String(e)));
      throw err;
    }
  }

  /** Kills machines and etcd, unmounts, removes cgroups, bridge and files. Idempotent. */
  teardown(): Promise<void> {
    return this.run.destroy();
  }
}

function metadataString(md: Record<string, string>): string {
  return Object.entries(md)
    .map(([k, v]) => {
      if (/[,=\s]/.test(k) || /[,\s]/.test(v))
        throw new Error(`metadata ${k}=${v}: no commas, spaces or '=' in keys`);
      return `${k}=${v}`;
    })
    .join(",");
}

/** A bridge private to this run, in a 10.231.X.0/24 that no interface on the box uses yet. */
export async function createBridge(r: Run): Promise<Bridge> {
  const used = await runOk("ip", ["-4", "-o", "addr", "show"]);
  const free = Array.from({ length: 254 }, (_, i) => i + 1).filter((x) => !used.includes(` 10.231.${x}.`));
  const x = free[Math.floor(Math.random() * free.length)];
  if (x === undefined) throw new Error("no free 10.231.X.0/24 subnet for a bridge");
  const bridge: Bridge = { name: r.id, ip: `10.231.${x}.1`, prefixLength: 24 };
  r.trackBridge(bridge.name);
  await runOk("ip", ["link", "add", "name", bridge.name, "type", "bridge"]);
  await runOk("ip", ["addr", "add", `${bridge.ip}/${bridge.prefixLength}`, "dev", bridge.name]);
  await runOk("ip", ["link", "set", bridge.name, "up"]);
  return bridge;
}
