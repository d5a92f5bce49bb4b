// flotilla-ignition: runs once at first boot (flotilla-ignition.service) under the image's Node.
//   ignition.mjs apply          find the config (QEMU fw_cfg, then OEM:/config.ign), validate, apply
//   ignition.mjs check FILE     validate only (usable on any machine with Node)
// A config with any problem is not applied at all, and the unit fails so flotilla-agent.service
// (which Requires= it) does not start.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { chmod, chown, mkdir, rename, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { formatProblems, type Plan, parseConfig } from "./config.js";

const FW_CFG = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.flotilla/config.ign/raw";
const OEM_DEVICE = "/dev/disk/by-partlabel/OEM";
const OEM_MOUNT = "/run/flotilla/oem";
const MARKER = "/var/lib/flotilla/provisioned";

const say = (msg: string) => process.stdout.write(`${msg}\n`);

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The config and where it came from; fw_cfg wins over OEM. */
function findConfig(): { source: string; text: string } | undefined {
  if (existsSync(FW_CFG))
    return { source: "QEMU fw_cfg opt/org.flotilla/config.ign", text: readFileSync(FW_CFG, "utf8") };
  // udev may still be creating the by-partlabel links this early in boot.
  for (let i = 0; i < 20 && !existsSync(OEM_DEVICE); i++) sleep(500);
  if (!existsSync(OEM_DEVICE)) return undefined;
  mkdirSync(OEM_MOUNT, { recursive: true });
  sh("mount", ["-o", "ro", OEM_DEVICE, OEM_MOUNT]);
  try {
    const file = join(OEM_MOUNT, "config.ign");
    return existsSync(file)
      ? { source: "the OEM partition (config.ign)", text: readFileSync(file, "utf8") }
      : undefined;
  } finally {
    sh("umount", [OEM_MOUNT]);
  }
}

async function writeAtomic(path: string, data: Buffer | string, mode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.ignition-tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

function homeOf(user: string): { home: string; uid: number; gid: number } | undefined {
  try {
    const [, , uid, gid, , home] = sh("getent", ["passwd", user]).trim().split(":");
    return { home: home as string, uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

/** Applies a validated plan. Files that exist and are not marked overwrite abort before any write. */
async function apply(plan: Plan): Promise<void> {
  const clashes = plan.files.filter((f) => !f.overwrite && existsSync(f.path)).map((f) => f.path);
  if (clashes.length > 0)
    throw new Error(`these files already exist and overwrite is not true: ${clashes.join(", ")}`);

  for (const u of plan.users) {
    if (!homeOf(u.name)) {
      sh("useradd", ["--create-home", "--user-group", "--shell", "/bin/bash", u.name]);
      say(`flotilla-ignition: created user ${u.name}`);
    }
    if (u.groups.length > 0) sh("usermod", ["--append", "--groups", u.groups.join(","), u.name]);
    const pw = homeOf(u.name);
    if (!pw) throw new Error(`user ${u.name} has no passwd entry`);
    if (u.sshAuthorizedKeys.length > 0) {
      const ssh = join(pw.home, ".ssh");
      await mkdir(ssh, { recursive: true, mode: 0o700 });
      await writeAtomic(join(ssh, "authorized_keys"), `${u.sshAuthorizedKeys.join("\n")}\n`, 0o600);
      await chown(ssh, pw.uid, pw.gid);
      await chown(join(ssh, "authorized_keys"), pw.uid, pw.gid);
    }
  }
  for (const d of plan.directories) {
    await mkdir(d.path, { recursive: true });
    await chmod(d.path, d.mode);
  }
  for (const f of plan.files) await writeAtomic(f.path, f.contents, f.mode);
  const hostname = plan.files.find((f) => f.path === "/etc/hostname");
  if (hostname) writeFileSync("/proc/sys/kernel/hostname", hostname.contents.toString().trim());

  for (const u of plan.units) {
    const path = join("/etc/systemd/system", u.name);
    if (u.contents !== undefined) await writeAtomic(path, u.contents, 0o644);
    for (const d of u.dropins) await writeAtomic(join(`${path}.d`, d.name), d.contents, 0o644);
  }
  if (plan.units.length > 0) {
    sh("systemctl", ["daemon-reload"]);
    for (const u of plan.units) {
      if (u.mask) sh("systemctl", ["mask", u.name]);
      if (u.enabled === true) sh("systemctl", ["enable", u.name]);
      if (u.enabled === false) sh("systemctl", ["disable", u.name]);
    }
    // This boot's transaction was computed before these units existed: queue them now.
    const start = plan.units.filter((u) => u.enabled === true).map((u) => u.name);
    if (start.length > 0) sh("systemctl", ["start", "--no-block", ...start]);
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, file] = argv;
  if (cmd === "check" && file) {
    const { problems } = parseConfig(readFileSync(file, "utf8"));
    if (problems.length > 0) {
      process.stderr.write(`${formatProblems(file, problems)}\n`);
      return 1;
    }
    say(`${file}: valid`);
    return 0;
  }
  if (cmd !== "apply") {
    process.stderr.write("usage: ignition.mjs apply | ignition.mjs check FILE\n");
    return 2;
  }
  const found = findConfig();
  const marker = (source: string, sha256: string) =>
    writeAtomic(
      MARKER,
      `${JSON.stringify({ source, sha256, appliedAt: new Date().toISOString() })}\n`,
      0o644,
    );
  if (!found) {
    say("flotilla-ignition: no config (checked fw_cfg and OEM:/config.ign); nothing to provision");
    await marker("none", "");
    return 0;
  }
  const { plan, problems } = parseConfig(found.text);
  if (!plan) {
    say(formatProblems(found.source, problems));
    return 1;
  }
  try {
    await apply(plan);
  } catch (err) {
    say(formatProblems(found.source, [{ path: "$", message: `applying failed: ${(err as Error).message}` }]));
    return 1;
  }
  rmSync(OEM_MOUNT, { recursive: true, force: true });
  await marker(found.source, createHash("sha256").update(found.text).digest("hex"));
  say(
    `flotilla-ignition: applied the config from ${found.source}: ${plan.users.length} user(s), ` +
      `${plan.files.length} file(s), ${plan.directories.length} directories, ${plan.units.length} unit(s)`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    say(`flotilla-ignition: provisioning FAILED: ${(err as Error).message}`);
    process.exit(1);
  },
);
