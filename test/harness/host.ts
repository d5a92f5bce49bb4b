import {
  accessSync,
  constants,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { log } from "./log.js";
import { runOk } from "./proc.js";

/** A file (absolute path) or command (looked up on PATH) and the Debian package that provides it. */
export interface HostRequirement {
  need: string;
  pkg: string;
}

export const HOST_REQUIREMENTS: readonly HostRequirement[] = [
  { need: "systemd-nspawn", pkg: "systemd-container" },
  { need: "journalctl", pkg: "systemd" },
  { need: "etcd", pkg: "etcd-server" },
  { need: "openssl", pkg: "openssl" },
  { need: "ip", pkg: "iproute2" },
  { need: "nsenter", pkg: "util-linux" },
  { need: "mount", pkg: "mount" },
];

function present(need: string): boolean {
  const candidates = path.isAbsolute(need)
    ? [need]
    : (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").map((dir) => path.join(dir, need));
  return candidates.some((file) => {
    try {
      accessSync(file, path.isAbsolute(need) ? constants.R_OK : constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

// apt-get takes a lock: installs from concurrent callers run one after another.
let queue: Promise<void> = Promise.resolve();

/** Installs the Debian packages the harness needs when a fresh box lacks them (we run as root). */
export function ensureHostPackages(
  requirements: readonly HostRequirement[] = HOST_REQUIREMENTS,
): Promise<void> {
  const run = queue.then(async () => {
    const missing = [...new Set(requirements.filter((r) => !present(r.need)).map((r) => r.pkg))];
    if (missing.length === 0) return;
    log(`installing host packages: ${missing.join(" ")}`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    await runOk("apt-get", ["update", "-q"], { env });
    await runOk("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { env });
  });
  queue = run.catch(() => undefined);
  return run;
}

const INOTIFY_INSTANCES = "/proc/sys/fs/inotify/max_user_instances";
/** inotify instances a booted machine holds (PID 1, journald, logind, networkd, dbus…), with room to spare. */
const INOTIFY_PER_MACHINE = 8;
/** Room for the rest of the box (the test runner, etcd, other tools) beyond what is in use now. */
const INOTIFY_HEADROOM = 64;
/** What the limit is raised to at least: 30 machines and a test suite fit beside each other. */
const INOTIFY_RAISED = 1024;

/**
 * Every machine's inotify instances count against root on the host, and Debian's default limit of
 * 128 lets only ~18 machines boot: past it a machine's PID 1 dies with "Too many open files". So
 * before booting `machines` more, the limit is raised when what root holds now plus what they
 * need would pass it; if it cannot be raised, this fails at once, naming the fix.
 */
export function ensureInotifyInstances(machines: number): void {
  const limit = Number(readFileSync(INOTIFY_INSTANCES, "utf8").trim());
  const inUse = rootInotifyInstances();
  const needed = inUse + machines * INOTIFY_PER_MACHINE + INOTIFY_HEADROOM;
  if (needed <= limit) return;
  const raised = Math.max(INOTIFY_RAISED, needed);
  try {
    writeFileSync(INOTIFY_INSTANCES, `${raised}\n`);
  } catch (err) {
    throw new Error(
      `${machines} machine(s) need about ${needed} inotify instances for root (${inUse} in use), but ` +
        `fs.inotify.max_user_instances is ${limit} and cannot be raised here (${String(err)}): ` +
        `run \`sysctl -w fs.inotify.max_user_instances=${raised}\` as root`,
    );
  }
  log(
    `raised fs.inotify.max_user_instances from ${limit} to ${raised}: ${machines} machine(s) need ~${needed} (${inUse} in use)`,
  );
}

/** inotify instances held by root's processes: their descriptors that are inotify instances. */
function rootInotifyInstances(): number {
  let count = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (statSync(`/proc/${pid}`).uid !== 0) continue;
      for (const fd of readdirSync(`/proc/${pid}/fd`))
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === "anon_inode:inotify") count++;
    } catch {
      // the process exited meanwhile
    }
  }
  return count;
}
