// Boots a Flotilla disk image in QEMU the way the notes found to work here: OVMF + systemd-boot,
// TCG (KVM does not work on these machines), serial console to a file, user networking with
// port forwards, QMP for a clean power-off. Used by scripts/vm, the image tests and the bench.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";

const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd";
export const FW_CFG_NAME = "opt/org.flotilla/config.ign";

export interface VmOptions {
  /** Disk image the VM boots and writes to (raw or qcow2, by extension). */
  disk: string;
  /** Directory for the serial log, QMP socket and OVMF variables. */
  stateDir: string;
  /** Ignition config handed over through QEMU fw_cfg. */
  ignition?: string;
  /** Host ports forwarded to the guest's sshd and agent API (0 or absent: pick free ones). */
  sshPort?: number;
  apiPort?: number;
  memoryMiB?: number;
  cpus?: number;
  /**
   * A tap device (made by the caller, on a host bridge) instead of user networking: the VM is then
   * reached at `address` (ssh on port 22, the API on 7480) and no ports are forwarded. `mac` must
   * differ between VMs on one bridge (QEMU's default MAC is the same for all).
   */
  tap?: { name: string; mac: string; address: string };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

/** Byte offset of the partition with this GPT name (PARTLABEL), read back from the table. */
export function partitionOffset(disk: string, label: string): number {
  const table = execFileSync("sgdisk", ["--print", disk], { encoding: "utf8" });
  for (const line of table.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+.*\s(\S+)\s*$/.exec(line);
    if (m && m[4] === label) return Number(m[2]) * 512;
  }
  throw new Error(`${disk} has no partition named ${label}`);
}

/** Puts an Ignition config on a raw disk's OEM partition (vfat) as config.ign; no loop device. */
export function writeOemIgnition(rawDisk: string, config: string): void {
  const offset = partitionOffset(rawDisk, "OEM");
  execFileSync("mcopy", ["-o", "-i", `${rawDisk}@@${offset}`, config, "::config.ign"], {
    env: { ...process.env, MTOOLS_SKIP_CHECK: "1" },
  });
}

export class Vm {
  readonly serialLog: string;
  readonly qmpSocket: string;
  sshPort = 0;
  apiPort = 0;
  /** Where the host reaches the guest's sshd (and API): 127.0.0.1 with forwarded ports, or the tap's address. */
  host = "127.0.0.1";
  private proc: ChildProcess | undefined;
  private exited: Promise<number | null> | undefined;

  constructor(readonly opts: VmOptions) {
    this.serialLog = join(opts.stateDir, "serial.log");
    this.qmpSocket = join(opts.stateDir, "qmp.sock");
  }

  async start(): Promise<void> {
    const { disk, stateDir } = this.opts;
    mkdirSync(stateDir, { recursive: true });
    const { tap } = this.opts;
    if (tap) {
      this.host = tap.address;
      this.sshPort = 22;
      this.apiPort = 7480;
    } else {
      this.sshPort = this.opts.sshPort || (await freePort());
      this.apiPort = this.opts.apiPort || (await freePort());
    }
    // Boot counters live on the ESP, not in NVRAM, so fresh variables per boot are fine.
    const vars = join(stateDir, "OVMF_VARS.fd");
    copyFileSync(OVMF_VARS, vars);
    const args = [
      "-accel",
      "tcg",
      "-machine",
      "q35",
      "-cpu",
      "max",
      "-smp",
      String(this.opts.cpus ?? 2),
      "-m",
      String(this.opts.memoryMiB ?? 1536),
      "-display",
      "none",
      "-monitor",
      "none",
      "-serial",
      `file:${this.serialLog}`,
      "-qmp",
      `unix:${this.qmpSocket},server=on,wait=off`,
      "-drive",
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      "-drive",
      `if=pflash,format=raw,unit=1,file=${vars}`,
      "-drive",
      `if=virtio,format=${disk.endsWith(".qcow2") ? "qcow2" : "raw"},file=${disk},cache=unsafe`,
      ...(tap
        ? [
            "-netdev",
            `tap,id=net0,ifname=${tap.name},script=no,downscript=no`,
            "-device",
            `virtio-net-pci,netdev=net0,mac=${tap.mac}`,
          ]
        : [
            "-nic",
            `user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:${this.sshPort}-:22,hostfwd=tcp:127.0.0.1:${this.apiPort}-:7480`,
          ]),
    ];
    if (this.opts.ignition) args.push("-fw_cfg", `name=${FW_CFG_NAME},file=${this.opts.ignition}`);
    // Under TCG a VM takes every core it can get; at the lowest priority it leaves them to etcd and
    // the machines under test when scripts/test runs the VM tests beside the others.
    const proc = spawn("nice", ["-n", "19", "qemu-system-x86_64", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    proc.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.on("exit", (code) => resolve(code)));
    // QEMU fails fast on bad arguments; give it a moment to do so.
    const early = await Promise.race([this.exited, new Promise((r) => setTimeout(() => r("running"), 1000))]);
    if (early !== "running") throw new Error(`qemu exited with ${String(early)}: ${stderr.trim()}`);
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  serial(): string {
    return existsSync(this.serialLog) ? readFileSync(this.serialLog, "utf8") : "";
  }

  /** Waits until the serial console, from `from` on, matches; returns the match. */
  async waitForSerial(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = pattern.exec(this.serial().slice(from));
      if (m) return m;
      if (this.proc?.exitCode !== null && this.proc?.exitCode !== undefined)
        throw new Error(`the VM exited while waiting for ${pattern}`);
      if (Date.now() > deadline)
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} on the serial console`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Runs a command in the guest over the forwarded ssh port. */
  ssh(key: string, user: string, command: string, timeoutMs = 30_000): string {
    return execFileSync(
      "ssh",
      [
        "-i",
        key,
        "-p",
        String(this.sshPort),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        `${user}@${this.host}`,
        command,
      ],
      { encoding: "utf8", timeout: timeoutMs, stdio: ["ignore", "pipe", "pipe"] },
    );
  }

  /** Retries ssh until the guest's sshd accepts the key. */
  async waitForSsh(key: string, user: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        this.ssh(key, user, "true", 20_000);
        return;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`ssh ${user}@${this.host}:${this.sshPort} never worked: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  private qmp(command: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const sock = createConnection(this.qmpSocket);
      let buf = "";
      let sent = false;
      sock.on("data", (d) => {
        buf += d.toString();
        if (!sent && buf.includes('"QMP"')) {
          sent = true;
          sock.write('{"execute":"qmp_capabilities"}\n');
          sock.write(`{"execute":"${command}"}\n`);
        }
        if ((buf.match(/"return"/g) ?? []).length >= 2) {
          sock.end();
          resolve();
        }
      });
      sock.on("error", reject);
      sock.on("close", () => resolve());
    });
  }

  /** ACPI power button, then waits for the guest to power off; QMP quit if it does not in time. */
  async powerOff(timeoutMs = 90_000): Promise<{ clean: boolean; seconds: number }> {
    if (!this.proc || !this.exited || this.proc.exitCode !== null) return { clean: true, seconds: 0 };
    const t0 = Date.now();
    await this.qmp("system_powerdown").catch(() => undefined);
    const done = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs)),
    ]);
    if (!done) {
      await this.qmp("quit").catch(() => this.proc?.kill("SIGKILL"));
      await this.exited;
    }
    return { clean: done, seconds: (Date.now() - t0) / 1000 };
  }

  /** Stops QEMU at once (test cleanup). */
  async kill(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
  }
}
