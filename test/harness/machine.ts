import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { BootPlan, Firmware } from "./boot-loader.js";
import { MachineBus } from "./dbus.js";
import { tail } from "./etcd.js";
import { log, since } from "./log.js";
import { defaultDistDir, nodeBinary } from "./paths.js";
import type { TlsFiles } from "./pki.js";
import { deadOrZombie, type ExecResult, run, runOk, waitFor } from "./proc.js";
import type { Cgroup, Run, Spawned } from "./run.js";

export interface MachineSpec {
  name: string;
  ip: string;
  prefixLength: number;
  bridge: string;
  rootfs: string;
  /** Written to /etc/flotilla/agent.env. */
  agentEnv: Record<string, string>;
  /** false: flotilla-agent.service is masked in this machine. */
  agent: boolean;
  distDir?: string;
  bootTimeoutMs?: number;
  /** Plays firmware and boot loader before each boot (see boot-loader.ts); none by default. */
  firmware?: Firmware;
  /** The cluster CA and this machine's certificate (host paths), installed in /etc/flotilla/tls. */
  tls?: TlsFiles;
}

/** Where a machine's agent finds the cluster PKI (agent/config.ts defaults). */
export const MACHINE_TLS_FILES = {
  ca: "etc/flotilla/tls/ca.pem",
  cert: "etc/flotilla/tls/machine.pem",
  key: "etc/flotilla/tls/machine-key.pem",
} as const;

/** systemd-nspawn's exit status when the machine asked for a reboot. */
const NSPAWN_REBOOT = 133;

// Inside the machine, on the host-bound /run/hostbus; kept short because the host-side path of a unix
// socket is limited to 107 bytes.
const HOSTBUS_SOCKET = "bus";
const MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Deterministic per name, so a machine keeps its id across restarts and runs are reproducible. */
export function machineIdFor(name: string): string {
  return createHash("sha256").update(`flotilla-harness-machine:${name}`).digest("hex").slice(0, 32);
}

/**
 * A systemd-nspawn machine booted from an overlay of the shared rootfs. Its directory holds the
 * overlay (upper, work, merged), podman storage, the host side of its D-Bus socket and its console log.
 */
export class Machine {
  readonly name: string;
  /** /etc/machine-id. */
  readonly id: string;
  readonly ip: string;
  readonly apiURL: string;
  /** The machine's system bus, reachable from the host (`busctl --address=…` works too). */
  readonly dbusAddress: string;
  private readonly spec: MachineSpec;
  private readonly run: Run;
  private readonly dir: string;
  private readonly cg: Cgroup;
  private proc: Spawned | undefined;
  private leader: number | undefined;
  private prepared = false;
  /** Boots so far, reboots included. */
  boots = 0;
  /** The machine's next reboot leaves it powered off (a machine that dies while rebooting). */
  rebootPowersOff = false;

  constructor(r: Run, spec: MachineSpec) {
    this.run = r;
    this.spec = spec;
    this.name = spec.name;
    this.id = machineIdFor(spec.name);
    this.ip = spec.ip;
    this.apiURL = `${spec.tls ? "https" : "http"}://${spec.ip}:7480`;
    this.dir = path.join(r.dir, spec.name);
    const socket = path.join(this.dir, "hostbus", HOSTBUS_SOCKET);
    if (socket.length > 107) throw new Error(`D-Bus socket path too long for a unix socket: ${socket}`);
    this.dbusAddress = `unix:path=${socket}`;
    this.cg = r.cgroup(spec.name);
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  /** PID (on the host) of the machine's init; throws when the machine is not running. */
  get leaderPid(): number {
    if (!this.running || this.leader === undefined) throw new Error(`machine ${this.name} is not running`);
    return this.leader;
  }

  private get merged(): string {
    return path.join(this.dir, "merged");
  }

  /** Boots the machine (again: a restart keeps its overlay) and waits until systemd is up and host0 has its address. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`machine ${this.name} is already running`);
    const t = performance.now();
    if (!this.prepared) await this.prepare();
    // A socket left by the previous boot would answer nothing; wait for the new one.
    await rm(path.join(this.dir, "hostbus", HOSTBUS_SOCKET), { force: true });
    const plan = this.spec.firmware?.boot(this.dir);
    const proc = this.run.spawnIn(this.cg, this.nspawnArgv(plan), path.join(this.dir, "console.log"), {
      SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: "1",
    });
    this.proc = proc;
    this.leader = undefined;
    this.boots++;
    // A reboot from inside boots the machine again, as systemd-nspawn@.service does.
    void proc.exited.then((code) => {
      if (code !== NSPAWN_REBOOT || this.proc !== proc) return;
      if (this.rebootPowersOff) {
        this.rebootPowersOff = false;
        log(`${this.name} rebooted and stays powered off`);
        return;
      }
      log(`${this.name} rebooting`);
      this.start().catch((err: unknown) => log(`${this.name} failed to boot again: ${String(err)}`));
    });
    const timeout = this.spec.bootTimeoutMs ?? 60_000;
    const failed = (what: string) =>
      new Error(`machine ${this.name} ${what}; console:\n${tail(path.join(this.dir, "console.log"))}`);
    this.leader = await waitFor(
      `${this.name}'s init`,
      () => {
        if (!proc.running) throw failed("exited while booting");
        return findInit(proc.pid);
      },
      timeout,
    );
    let bus: MachineBus | undefined;
    try {
      const state = await waitFor(
        `${this.name} to finish booting`,
        async () => {
          if (!proc.running) throw failed("exited while booting");
          try {
            bus ??= await MachineBus.connect(this.dbusAddress, 1000);
            const s = await bus.systemState();
            return s === "initializing" || s === "starting" ? undefined : s;
          } catch {
            bus?.close();
            bus = undefined;
            return undefined;
          }
        },
        timeout,
      );
      if (state !== "running" && state !== "degraded") throw failed(`reached system state ${state}`);
      if (state === "degraded")
        log(
          `${this.name} is degraded: ${(await this.exec(["systemctl", "--failed", "--no-legend"])).stdout.trim()}`,
        );
    } finally {
      bus?.close();
    }
    await waitFor(
      `${this.name}'s address ${this.ip}`,
      async () => {
        const r = await this.exec(["ip", "-4", "-o", "addr", "show", "dev", "host0"]);
        return r.stdout.includes(` ${this.ip}/`) ? true : undefined;
      },
      timeout,
    );
    log(`${this.name} up (${this.ip}) in ${since(t)}`);
  }

  /** Clean shutdown through systemd (Manager.PowerOff), then waits for nspawn to exit; kills after 30 s. */
  async powerOff(): Promise<void> {
    const proc = this.proc;
    if (proc === undefined || !proc.running) return;
    const bus = await MachineBus.connect(this.dbusAddress);
    try {
      await bus.powerOff();
    } finally {
      bus.close();
    }
    const exited = await Promise.race([
      proc.exited.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 30_000)),
    ]);
    if (!exited) {
      log(`${this.name} did not power off within 30 s; killing it`);
      await this.kill();
    }
  }

  /** Abrupt machine loss: SIGKILLs nspawn and everything in the machine at once. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (proc === undefined || !proc.running) return;
    const leader = this.leader;
    await this.cg.kill();
    await proc.exited;
    await this.cg.waitEmpty(10_000);
    // A task leaves its cgroup a moment before it is fully dead; the machine's init is not our child
    // (it is reparented to PID 1 when nspawn dies), so wait for it to be at least a zombie.
    if (leader !== undefined)
      await waitFor(`${this.name}'s init to die`, () => deadOrZombie(leader) || undefined, 10_000, 20);
  }

  /** Runs argv inside the machine (all its namespaces, a clean environment). */
  exec(argv: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    return run(
      "nsenter",
      [
        "--target",
        String(this.leaderPid),
        "--all",
        "--",
        "env",
        "-i",
        `PATH=${MACHINE_PATH}`,
        "HOME=/root",
        ...argv,
      ],
      opts,
    );
  }

  /** The machine's journal (persistent, in its overlay), read from the host: works after a crash or power-off too. */
  async journal(unit?: string, lines = 200): Promise<string> {
    const args = [
      "--directory",
      path.join(this.merged, "var/log/journal"),
      "--no-pager",
      "-o",
      "short-precise",
    ];
    if (unit !== undefined) args.push("--unit", unit);
    return runOk("journalctl", [...args, "--lines", String(lines)]);
  }

  private nspawnArgv(plan: BootPlan | undefined): string[] {
    const binds = [
      // First: a /usr from the firmware must be under the agent bound into /usr/lib/flotilla.
      ...(plan?.nspawnArgs ?? []),
      "--bind=/dev/fuse",
      // Podman storage must not be on the overlay root: overlay on overlay fails.
      `--bind=${path.join(this.dir, "containers")}:/var/lib/containers`,
      `--bind=${path.join(this.dir, "hostbus")}:/run/hostbus`,
    ];
    const dist = this.spec.distDir ?? defaultDistDir;
    // Bound rather than copied in, so an agent change needs no rootfs rebuild, only a restart.
    if (existsSync(dist)) binds.push(`--bind-ro=${dist}:/usr/lib/flotilla/dist`);
    if (existsSync(nodeBinary)) binds.push(`--bind-ro=${nodeBinary}:/usr/lib/flotilla/node`);
    return [
      "systemd-nspawn",
      "--quiet",
      "--boot",
      `--directory=${this.merged}`,
      `--machine=${this.name}`,
      // No systemd/machined on the host to register with or to create a scope for us.
      "--register=no",
      "--keep-unit",
      "--link-journal=no",
      "--resolv-conf=off",
      "--timezone=off",
      `--network-bridge=${this.spec.bridge}`,
      "--capability=all",
      // Podman needs keyring and bpf syscalls that nspawn's default filter blocks.
      "--system-call-filter=@keyring bpf",
      "--console=read-only",
      ...binds,
      // With --boot, the rest goes to the machine's init: its kernel command line, to systemd.
      ...(plan?.initArgs ?? []),
    ];
  }

  /** Mounts the overlay root and writes this machine's identity and configuration into it. */
  private async prepare(): Promise<void> {
    if (this.spec.agent) {
      const dist = this.spec.distDir ?? defaultDistDir;
      if (!existsSync(path.join(dist, "agent.js")))
        throw new Error(`${dist}/agent.js missing: build the agent first`);
      if (!existsSync(nodeBinary)) throw new Error(`${nodeBinary} missing: run npm ci`);
    }
    for (const sub of ["upper", "work", "merged", "containers", "hostbus"]) {
      await mkdir(path.join(this.dir, sub), { recursive: true });
    }
    this.run.trackMount(this.merged);
    await runOk("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${this.spec.rootfs},upperdir=${path.join(this.dir, "upper")},workdir=${path.join(this.dir, "work")}`,
      this.merged,
    ]);
    // Written through the mounted overlay: changing an upper dir under a live overlay is undefined.
    const files: Record<string, string> = {
      "etc/machine-id": `${this.id}\n`,
      "etc/hostname": `${this.name}\n`,
      "etc/systemd/network/80-container-host0.network": [
        "[Match]",
        "Virtualization=container",
        "Name=host0",
        "",
        "[Network]",
        `Address=${this.ip}/${this.spec.prefixLength}`,
        "LinkLocalAddressing=no",
        "IPv6AcceptRA=no",
        "",
      ].join("\n"),
      // A second listener for the system bus, on the directory bound from the host.
      "etc/systemd/system/dbus.socket.d/flotilla-hostbus.conf": `[Socket]\nListenStream=/run/hostbus/${HOSTBUS_SOCKET}\n`,
      "etc/flotilla/agent.env": envFile(this.spec.agentEnv),
      ...(this.spec.tls
        ? Object.fromEntries(
            (["ca", "cert", "key"] as const).map((k) => [
              MACHINE_TLS_FILES[k],
              readFileSync((this.spec.tls as TlsFiles)[k], "utf8"),
            ]),
          )
        : {}),
      ...this.spec.firmware?.files(),
    };
    this.spec.firmware?.install(this.dir);
    for (const [file, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(this.merged, file)), { recursive: true });
      // The machine's private key is root's alone, as provisioning installs it.
      await writeFile(path.join(this.merged, file), content, {
        mode: file === MACHINE_TLS_FILES.key ? 0o600 : 0o644,
      });
    }
    if (!this.spec.agent) {
      // Replaces the unit if a rootfs ships it in /etc: a /dev/null link there masks it either way.
      const unit = path.join(this.merged, "etc/systemd/system/flotilla-agent.service");
      await rm(unit, { force: true });
      await symlink("/dev/null", unit);
    }
    this.prepared = true;
  }
}

/** systemd EnvironmentFile syntax; values are double-quoted so spaces and quotes survive. */
function envFile(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `${k}="${v.replace(/[\\"$`]/g, (c) => `\\${c}`)}"\n`)
    .join("");
}

/** The descendant of nspawn that is PID 1 in the machine's PID namespace. */
function findInit(nspawnPid: number): number | undefined {
  const queue = [nspawnPid];
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    try {
      const nspid = /^NSpid:\t(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]?.split("\t");
      if (nspid !== undefined && nspid.length > 1 && nspid[nspid.length - 1] === "1") return pid;
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        const children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
        if (children !== "") queue.push(...children.split(" ").map(Number));
      }
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}
