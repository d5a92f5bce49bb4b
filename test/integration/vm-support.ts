// What the QEMU tests share: a work dir with an SSH key, an etcd on the host that guests reach at
// 10.0.2.2 (QEMU user networking), Ignition configs for the agent, private disk copies, and
// teardown that keeps each VM's serial log for diagnosing a failed boot.

import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { IMAGE_DIR, REPO } from "../../scripts/lib/image-build.js";
import { Vm } from "../../scripts/lib/image-vm.js";
import { type Etcd, harnessPki, startEtcd, type TlsFiles } from "../harness/index.js";

/** Generous: TCG on two cores shared with other builds can take minutes to reach a login prompt. */
export const BOOT_MS = 420_000;
/** How often QEMU tests poll (support.ts's waitFor): each probe is an ssh or etcdctl run. */
export const VM_POLL_MS = 2000;

const dataUrl = (s: string) => `data:;base64,${Buffer.from(s).toString("base64")}`;

export class VmBed {
  readonly vms: Vm[] = [];
  readonly key: string;

  private constructor(
    readonly work: string,
    readonly etcd: Etcd,
  ) {
    this.key = join(work, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", this.key]);
  }

  static async start(name: string): Promise<VmBed> {
    const work = mkdtempSync(join(tmpdir(), `flotilla-${name}-`));
    return new VmBed(work, await startEtcd());
  }

  /** The etcd endpoint as a guest sees it. */
  get guestEtcd(): string {
    return this.etcd.endpoint.replace("127.0.0.1", "10.0.2.2");
  }

  /**
   * The machine certificate of VM `hostname`: it names 127.0.0.1 too, the address its forwarded
   * API port has on the host.
   */
  machineTls(hostname: string): TlsFiles {
    return harnessPki().machine(hostname, ["10.0.2.15", "127.0.0.1"], join(this.work, "tls"));
  }

  /**
   * An Ignition config: user core with our key, the hostname, the cluster PKI under
   * /etc/flotilla/tls (the agent's defaults) and the agent's config file.
   */
  ignition(
    hostname: string,
    agent: Record<string, unknown> = {},
    extra: Record<string, unknown> = {},
  ): string {
    const agentConfig = { "etcd-endpoints": this.guestEtcd, "api-listen": "0.0.0.0:7480", ...agent };
    const tls = this.machineTls(hostname);
    const tlsFile = (path: string, file: string, mode: number) => ({
      path,
      mode,
      contents: { source: dataUrl(readFileSync(file, "utf8")) },
    });
    const config = {
      ignition: { version: "3.4.0" },
      passwd: {
        users: [
          {
            name: "core",
            sshAuthorizedKeys: [readFileSync(`${this.key}.pub`, "utf8").trim()],
            groups: ["systemd-journal"],
          },
        ],
      },
      storage: {
        files: [
          { path: "/etc/hostname", mode: 0o644, contents: { source: `data:,${hostname}%0A` } },
          {
            path: "/etc/flotilla/agent.json",
            mode: 0o644,
            contents: { source: dataUrl(JSON.stringify(agentConfig)) },
          },
          tlsFile("/etc/flotilla/tls/ca.pem", tls.ca, 0o644),
          tlsFile("/etc/flotilla/tls/machine.pem", tls.cert, 0o644),
          tlsFile("/etc/flotilla/tls/machine-key.pem", tls.key, 0o600),
        ],
      },
      ...extra,
    };
    const file = join(this.work, `${hostname}.ign`);
    writeFileSync(file, JSON.stringify(config));
    return file;
  }

  /** A private copy of a built disk (default: the main build) for one machine. */
  diskCopy(name: string, from = join(IMAGE_DIR, "disk.raw")): string {
    const disk = join(this.work, `${name}.raw`);
    execFileSync("cp", ["--sparse=always", from, disk]);
    return disk;
  }

  /**
   * Boots a VM with one vCPU unless told otherwise: the tests run VMs side by side on two cores,
   * where two-vCPU guests preempt each other mid-spinlock (soft lockups) and finish later.
   */
  async boot(name: string, disk: string, ignitionFile?: string, cpus = 1): Promise<Vm> {
    const vm = new Vm({
      disk,
      stateDir: join(this.work, name),
      cpus,
      ...(ignitionFile ? { ignition: ignitionFile } : {}),
    });
    this.vms.push(vm);
    await vm.start();
    return vm;
  }

  etcdKeys(prefix: string): string[] {
    return this.etcdctl(["get", "--prefix", "--keys-only", prefix]).split("\n").filter(Boolean);
  }

  /** The value at `key`, or undefined. */
  etcdGet(key: string): string | undefined {
    const out = this.etcdctl(["get", "--print-value-only", key]);
    return out === "" ? undefined : out.replace(/\n$/, "");
  }

  private etcdctl(args: string[]): string {
    const { ca, cert, key } = this.etcd.tlsFiles;
    const tls = [`--cacert=${ca}`, `--cert=${cert}`, `--key=${key}`];
    return execFileSync("etcdctl", [`--endpoints=${this.etcd.endpoint}`, ...tls, ...args], {
      encoding: "utf8",
      env: { ...process.env, ETCDCTL_API: "3" },
    });
  }

  async teardown(): Promise<void> {
    const logs = join(REPO, ".cache/image/test-logs");
    mkdirSync(logs, { recursive: true });
    for (const vm of this.vms) {
      await vm.kill();
      if (existsSync(vm.serialLog))
        copyFileSync(vm.serialLog, join(logs, `${basename(vm.opts.stateDir)}.log`));
    }
    await this.etcd.close();
    rmSync(this.work, { recursive: true, force: true });
  }
}
