// flotilla-ignition: runs once at first boot (flotilla-ignition.service) under the image's Node.
//   ignition.mjs apply                          find the config (QEMU fw_cfg, then OEM:/config.ign),
//                                               check everything, apply all of it or nothing
//   ignition.mjs apply --root DIR --config FILE the same on a root directory that is not booted
//                                               (an image tree; units are enabled offline)
//   ignition.mjs check FILE                     validate only (usable on any machine with Node)
// Limits: --max-config-bytes / --max-content-bytes, or FLOTILLA_IGNITION_MAX_CONFIG_BYTES /
// FLOTILLA_IGNITION_MAX_CONTENT_BYTES (docs/ignition.md). A config with any problem is not
// applied at all, and the unit fails so flotilla-agent.service (which Requires= it) does not start.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { applyKernelArguments } from "../../agent/update/kargs.js";
import { ApplyError, applyPlan } from "./apply.js";
import { DEFAULT_LIMITS, formatProblems, type Limits, parseConfig } from "./config.js";
import { MARKER } from "./writes.js";

const FW_CFG = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.flotilla/config.ign/raw";
const OEM_DEVICE = "/dev/disk/by-partlabel/OEM";
const OEM_MOUNT = "/run/flotilla/oem";
const ESP = "/efi";

const say = (msg: string) => process.stdout.write(`${msg}\n`);

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

class TooLarge extends Error {}

/** Reads at most `max` bytes: a larger config is refused without reading it all. */
async function readBounded(file: string, max: number): Promise<string> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > max)
      throw new TooLarge(`the config is over the limit of ${max} bytes (see docs/ignition.md, Limits)`);
    return buf.subarray(0, n).toString("utf8");
  } finally {
    await fh.close();
  }
}

/** The config's location; fw_cfg wins over OEM. */
async function findConfig(max: number): Promise<{ source: string; text: string } | undefined> {
  if (existsSync(FW_CFG))
    return { source: "QEMU fw_cfg opt/org.flotilla/config.ign", text: await readBounded(FW_CFG, max) };
  // udev may still be creating the by-partlabel links this early in boot.
  for (let i = 0; i < 20 && !existsSync(OEM_DEVICE); i++) sleep(500);
  if (!existsSync(OEM_DEVICE)) return undefined;
  mkdirSync(OEM_MOUNT, { recursive: true });
  sh("mount", ["-o", "ro", OEM_DEVICE, OEM_MOUNT]);
  try {
    const file = join(OEM_MOUNT, "config.ign");
    return existsSync(file)
      ? { source: "the OEM partition (config.ign)", text: await readBounded(file, max) }
      : undefined;
  } finally {
    sh("umount", [OEM_MOUNT]);
    rmSync(OEM_MOUNT, { recursive: true, force: true });
  }
}

function limitsFrom(flags: Record<string, string | undefined>): Limits {
  const pick = (flag: string, env: string, fallback: number): number => {
    const raw = flags[flag] ?? process.env[env];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new Error(`--${flag} / ${env} must be a positive number of bytes, got ${JSON.stringify(raw)}`);
    return n;
  };
  return {
    maxConfigBytes: pick(
      "max-config-bytes",
      "FLOTILLA_IGNITION_MAX_CONFIG_BYTES",
      DEFAULT_LIMITS.maxConfigBytes,
    ),
    maxContentBytes: pick(
      "max-content-bytes",
      "FLOTILLA_IGNITION_MAX_CONTENT_BYTES",
      DEFAULT_LIMITS.maxContentBytes,
    ),
  };
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      root: { type: "string" },
      config: { type: "string" },
      esp: { type: "string" },
      "max-config-bytes": { type: "string" },
      "max-content-bytes": { type: "string" },
    },
  });
  const [cmd, file] = positionals;
  const limits = limitsFrom(values);
  if (cmd === "check" && file) {
    const { problems } = parseConfig(await readBounded(file, limits.maxConfigBytes), limits);
    if (problems.length > 0) {
      process.stderr.write(`${formatProblems(file, problems)}\n`);
      return 1;
    }
    say(`${file}: valid`);
    return 0;
  }
  if (cmd !== "apply" || (values.root === undefined) !== (values.config === undefined)) {
    process.stderr.write(
      "usage: ignition.mjs apply [--root DIR --config FILE [--esp DIR]] | ignition.mjs check FILE\n",
    );
    return 2;
  }
  const live = values.root === undefined;
  const root = values.root ?? "/";
  let found: { source: string; text: string } | undefined;
  try {
    found = live
      ? await findConfig(limits.maxConfigBytes)
      : {
          source: values.config as string,
          text: await readBounded(values.config as string, limits.maxConfigBytes),
        };
  } catch (err) {
    if (!(err instanceof TooLarge)) throw err;
    say(
      formatProblems(live ? "this machine" : (values.config as string), [
        { path: "$", message: err.message },
      ]),
    );
    return 1;
  }
  const marker = (source: string, sha256: string) =>
    `${JSON.stringify({ source, sha256, appliedAt: new Date().toISOString() })}\n`;
  if (!found) {
    say("flotilla-ignition: no config (checked fw_cfg and OEM:/config.ign); nothing to provision");
    mkdirSync(join(root, "var/lib/flotilla"), { recursive: true });
    writeFileSync(join(root, MARKER), marker("none", ""));
    return 0;
  }
  const { plan, problems } = parseConfig(found.text, limits);
  if (!plan) {
    say(formatProblems(found.source, problems));
    return 1;
  }
  let applied: Awaited<ReturnType<typeof applyPlan>>;
  try {
    applied = await applyPlan(plan, {
      root,
      espDir: values.esp ?? join(root, ESP),
      live,
      marker: marker(found.source, createHash("sha256").update(found.text).digest("hex")),
    });
  } catch (err) {
    if (!(err instanceof ApplyError)) throw err;
    say(formatProblems(found.source, err.problems, err.applied));
    return 1;
  }
  say(
    `flotilla-ignition: applied the config from ${found.source}: ${plan.users.length} user(s), ` +
      `${plan.groups.length} group(s), ${plan.files.length} file(s), ${plan.directories.length} directories, ` +
      `${plan.links.length} link(s), ${plan.units.length} unit(s)` +
      (applied.entriesChanged.length > 0 ? `, kernel arguments in ${applied.entriesChanged.join(", ")}` : ""),
  );
  if (!live) return 0;

  // As upstream Ignition: new kernel arguments take effect through one reboot, right away, before
  // anything else of this boot runs with the old command line. The marker is written, so the
  // next boot does not provision again.
  const cmdline = readFileSync("/proc/cmdline", "utf8").trim();
  if (applyKernelArguments(cmdline, plan.kernelArguments) !== cmdline.split(/\s+/).join(" ")) {
    say("flotilla-ignition: rebooting once so the kernel arguments take effect");
    sh("systemctl", ["reboot", "--no-block"]);
    return 0;
  }
  const hostname = plan.files.find((f) => f.path === "/etc/hostname");
  if (hostname) writeFileSync("/proc/sys/kernel/hostname", hostname.contents.toString().trim());
  if (plan.units.length > 0) {
    sh("systemctl", ["daemon-reload"]);
    // This boot's transaction was computed before these units existed: queue them now.
    const start = plan.units.filter((u) => u.enabled === true).map((u) => u.name);
    if (start.length > 0) sh("systemctl", ["start", "--no-block", ...start]);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    say(`flotilla-ignition: provisioning FAILED: ${(err as Error).message}`);
    process.exit(1);
  },
);
