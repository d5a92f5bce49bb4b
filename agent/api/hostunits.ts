// Names the machine's OS already uses. A cluster unit is linked into /run/systemd/system, which
// systemd searches before /etc's vendor copies and /usr/lib, so a cluster unit named like an OS
// unit (ssh.service) would replace the OS's definition, and destroying it would stop the OS's
// service. The API refuses such names; the machine refuses to place them too (agent/reconcile).

import { lstat, readlink, realpath } from "node:fs/promises";
import { join } from "node:path";
import { templateOf } from "../unit/index.js";

/** systemd's unit search path for the system manager, most important first. */
export const SYSTEM_UNIT_DIRS = [
  "/etc/systemd/system.control",
  "/run/systemd/system.control",
  "/run/systemd/transient",
  "/run/systemd/generator.early",
  "/etc/systemd/system",
  "/etc/systemd/system.attached",
  "/run/systemd/system",
  "/run/systemd/system.attached",
  "/run/systemd/generator",
  "/usr/local/lib/systemd/system",
  "/usr/lib/systemd/system",
  "/lib/systemd/system",
  "/run/systemd/generator.late",
];

/**
 * A check that answers, for a unit name, the file of the OS's own unit it would shadow, or
 * undefined. An instance also shadows its template's file (getty@tty9.service, getty@.service).
 * Files in `agentUnitDir`, and links to them (the cluster's units, linked at runtime), are not the
 * OS's.
 */
export function hostUnitCheck(
  agentUnitDir: string,
  dirs: readonly string[] = SYSTEM_UNIT_DIRS,
): (name: string) => Promise<string | undefined> {
  let ownDir: Promise<string> | undefined;
  return async (name) => {
    ownDir ??= realpath(agentUnitDir).catch(() => agentUnitDir);
    const own = await ownDir;
    const template = templateOf(name);
    const paths = dirs.flatMap((dir) =>
      (template === undefined ? [name] : [name, template]).map((candidate) => join(dir, candidate)),
    );
    // All looked up at once (one wait instead of one per path: this is on every unit PUT), then
    // taken in the search path's order.
    const exists = await Promise.all(
      paths.map((path) =>
        lstat(path).then(
          () => true,
          () => false,
        ),
      ),
    );
    for (const [i, path] of paths.entries()) {
      if (!exists[i]) continue;
      // A link left dangling by a removed cluster unit still points into the agent's directory.
      const target = await realpath(path).catch(() => readlink(path).catch(() => path));
      if (![own, agentUnitDir].some((dir) => target.startsWith(`${dir}/`))) return path;
    }
    return undefined;
  };
}
