import { accessSync, constants } from "node:fs";
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
