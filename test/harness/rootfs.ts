import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { ensureHostPackages } from "./host.js";
import { log, since } from "./log.js";
import { agentUnitFile, packagesFile, rootfsCacheDir } from "./paths.js";
import { runOk, sleep, startTime } from "./proc.js";

/**
 * Supplies the read-only base rootfs every machine overlays. The default builds one with mmdebstrap
 * (`ensureRootfs`); the OS image pipeline can substitute its own. Contract: a directory with a bootable
 * systemd userland, dbus, systemd-networkd enabled, podman configured as in containers.conf below,
 * flotilla-agent.service installed and enabled, and directories /usr/lib/flotilla and /etc/flotilla.
 * Everything machine- or harness-specific (machine-id, hostname, address, D-Bus socket for the host,
 * agent.env) is written into each machine's overlay, never into the rootfs.
 */
export type RootfsProvider = () => Promise<string>;

// Bump when the build steps below change in a way the recipe object does not capture.
const RECIPE_VERSION = 1;

const CONTAINERS_CONF = `# Written by the Flotilla test rootfs build.
[containers]
# The machine's pids controller is not delegated; a limit would make podman fail.
pids_limit = 0

[engine]
# crun aborts here (setrlimit RLIMIT_MEMLOCK) because the host's bounding set lacks CAP_SYS_RESOURCE.
runtime = "runc"
cgroup_manager = "systemd"
events_logger = "journald"
`;

/** Everything that determines the rootfs content; its hash is the cache key. */
interface Recipe {
  version: number;
  suite: string;
  mmdebstrapArgs: string[];
  packages: string[];
  files: Record<string, string>;
  dirs: string[];
  enable: string[];
  /** Periodic jobs that would only add noise (and CPU load) to tests and benchmarks. */
  mask: string[];
}

export function parsePackageList(text: string): string[] {
  const names = text
    .split("\n")
    .map((line) => line.replace(/#.*/, "").trim())
    .filter((line) => line !== "");
  return [...new Set(names)].sort();
}

async function recipe(): Promise<Recipe> {
  return {
    version: RECIPE_VERSION,
    suite: "bookworm",
    mmdebstrapArgs: [
      "--mode=root",
      "--variant=minbase",
      '--aptopt=Apt::Install-Recommends "false"',
      // Runs dpkg under eatmydata: no fsync per package, a large share of the build time.
      "--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata",
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/locale/*",
      "--dpkgopt=path-exclude=/usr/share/info/*",
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    ],
    packages: parsePackageList(await readFile(packagesFile, "utf8")),
    files: {
      "/etc/containers/containers.conf": CONTAINERS_CONF,
      "/usr/lib/systemd/system/flotilla-agent.service": await readFile(agentUnitFile, "utf8"),
      // Empty, so each machine gets its own id (the harness writes one per machine).
      "/etc/machine-id": "",
      // mmdebstrap copies the build host's name otherwise.
      "/etc/hostname": "flotilla\n",
    },
    dirs: ["/usr/lib/flotilla", "/etc/flotilla", "/var/log/journal"],
    enable: ["systemd-networkd.service", "flotilla-agent.service"],
    mask: [
      "apt-daily.timer",
      "apt-daily-upgrade.timer",
      "dpkg-db-backup.timer",
      "e2scrub_all.timer",
      "fstrim.timer",
      "podman-auto-update.timer",
    ],
  };
}

export function recipeHash(r: Recipe): string {
  return createHash("sha256").update(JSON.stringify(r)).digest("hex");
}

/** Builds (once per recipe) and returns the cached base rootfs: `.cache/rootfs/<hash>/`. */
export const ensureRootfs: RootfsProvider = async () => {
  const r = await recipe();
  const hash = recipeHash(r);
  const final = path.join(rootfsCacheDir, hash);
  if (existsSync(final)) return final;

  await mkdir(rootfsCacheDir, { recursive: true });
  await withBuildLock(path.join(rootfsCacheDir, `${hash}.lock`), async () => {
    if (existsSync(final)) return; // another process built it while we waited
    await removeStaleBuilds();
    await ensureHostPackages();
    // The temp name carries our PID so a later run can tell an abandoned build from a live one.
    const tmp = path.join(rootfsCacheDir, `.tmp-${process.pid}-${hash.slice(0, 12)}`);
    await rm(tmp, { recursive: true, force: true });
    const start = performance.now();
    log(`building rootfs (mmdebstrap, ${r.packages.length} packages) in ${tmp}…`);
    try {
      await mmdebstrap([...r.mmdebstrapArgs, `--include=${r.packages.join(",")}`, r.suite, tmp]);
      await customize(tmp, r);
      await rename(tmp, final);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    log(`rootfs built in ${since(start)}: ${final}`);
  });
  return final;
};

async function customize(root: string, r: Recipe): Promise<void> {
  for (const dir of r.dirs) await mkdir(path.join(root, dir), { recursive: true });
  for (const [file, content] of Object.entries(r.files)) {
    await mkdir(path.dirname(path.join(root, file)), { recursive: true });
    await writeFile(path.join(root, file), content);
  }
  await runOk("chroot", [root, "systemctl", "enable", ...r.enable]);
  for (const unit of r.mask) {
    await rm(path.join(root, "etc/systemd/system", unit), { force: true });
    await symlink("/dev/null", path.join(root, "etc/systemd/system", unit));
  }
}

function mmdebstrap(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // Its "I: …" lines are the build's progress: pass them through to our stderr.
    const child = spawn("mmdebstrap", args, { stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`mmdebstrap failed (${signal ?? `exit ${code}`})`)),
    );
  });
}

/** Leftovers of builds (and lock attempts) whose process died: never renamed into place, so just delete them. */
async function removeStaleBuilds(): Promise<void> {
  for (const name of await readdir(rootfsCacheDir)) {
    const match = /^\.tmp-(\d+)-|\.lock\.(\d+)$/.exec(name);
    const pid = match?.[1] ?? match?.[2];
    if (pid !== undefined && startTime(Number(pid)) === undefined) {
      log(`removing interrupted rootfs build ${name}`);
      await rm(path.join(rootfsCacheDir, name), { recursive: true, force: true });
    }
  }
}

/** A lock directory holding the owner's PID, so concurrent runs build a recipe once. */
async function withBuildLock(lock: string, fn: () => Promise<void>): Promise<void> {
  // Created complete under a private name and renamed into place: the lock never exists without its PID.
  const mine = `${lock}.${process.pid}`;
  await rm(mine, { recursive: true, force: true });
  await mkdir(mine);
  await writeFile(path.join(mine, "pid"), String(process.pid));
  let waiting = false;
  for (;;) {
    try {
      await rename(mine, lock);
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      const owner = await readFile(path.join(lock, "pid"), "utf8").catch(() => undefined);
      if (owner !== undefined && startTime(Number(owner)) === undefined) {
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (!waiting) log(`waiting for the rootfs build of process ${owner ?? "?"}`);
      waiting = true;
      await sleep(1000);
    }
  }
  try {
    await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}
