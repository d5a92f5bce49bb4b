// Everything a plan will write, as one list, and the checks of that list against what the target
// system holds (gathered by the adapter in apply.ts). Pure: every problem is found before any write.

import { KERNEL_ARGUMENTS_RECORD } from "../../agent/update/kargs.js";
import type { UserOutcome } from "./accounts.js";
import type { Plan, Problem } from "./config.js";

/** One change on the target root. `where` names the config field it comes from, for messages. */
export type Write =
  | {
      kind: "file";
      path: string;
      where: string;
      data: Buffer | string;
      /** Absent: keep the mode and owner of the file it replaces (0644 root for a new one). */
      mode?: number;
      owner?: { uid: number; gid: number };
      overwrite: boolean;
    }
  | { kind: "dir"; path: string; where: string; mode: number; owner?: { uid: number; gid: number } }
  /** A new user's home with /etc/skel's files. */
  | { kind: "home"; path: string; where: string; owner: { uid: number; gid: number } }
  | { kind: "symlink"; path: string; where: string; target: string; overwrite: boolean }
  | { kind: "hardlink"; path: string; where: string; target: string; overwrite: boolean };

/** What is at a write's path on the target root, its parents' links resolved. */
export interface PathFact {
  /** The path with every parent link resolved (the last component is not followed). */
  resolved: string;
  /** The first link met on the way, when there was one. */
  via?: string;
  kind: "missing" | "file" | "dir" | "symlink" | "other";
  /** A parent that exists but is not a directory (or a link loop). */
  blocked?: string;
}

export const UNIT_DIR = "/etc/systemd/system";
export const MARKER = "/var/lib/flotilla/provisioned";

const OWNER_ONLY_DIR = 0o700;

/** The writes of a plan, in commit order; account files and ESP entries come from the caller. */
export function planWrites(plan: Plan, users: UserOutcome[]): Write[] {
  const writes: Write[] = [];
  plan.users.forEach((u, i) => {
    const o = users[i] as UserOutcome;
    const owner = { uid: o.uid, gid: o.gid };
    if (o.createHome) writes.push({ kind: "home", path: o.home, where: `passwd.users[${i}]`, owner });
    if (u.sshAuthorizedKeys.length > 0) {
      const where = `passwd.users[${i}].sshAuthorizedKeys`;
      writes.push({ kind: "dir", path: `${o.home}/.ssh`, where, mode: OWNER_ONLY_DIR, owner });
      writes.push({
        kind: "file",
        path: `${o.home}/.ssh/authorized_keys`,
        where,
        data: `${u.sshAuthorizedKeys.join("\n")}\n`,
        mode: 0o600,
        owner,
        overwrite: true,
      });
    }
  });
  plan.directories.forEach((d, i) => {
    writes.push({ kind: "dir", path: d.path, where: `storage.directories[${i}]`, mode: d.mode });
  });
  plan.files.forEach((f, i) => {
    writes.push({
      kind: "file",
      path: f.path,
      where: `storage.files[${i}]`,
      data: f.contents,
      mode: f.mode,
      overwrite: f.overwrite,
    });
  });
  plan.links.forEach((l, i) => {
    writes.push({
      kind: l.hard ? ("hardlink" as const) : ("symlink" as const),
      path: l.path,
      where: `storage.links[${i}]`,
      target: l.target,
      overwrite: l.overwrite,
    });
  });
  plan.units.forEach((u, i) => {
    const path = `${UNIT_DIR}/${u.name}`;
    const where = `systemd.units[${i}]`;
    // As upstream: the config's unit text replaces the file.
    if (u.contents !== undefined)
      writes.push({ kind: "file", path, where, data: u.contents, mode: 0o644, overwrite: true });
    u.dropins.forEach((d, j) => {
      writes.push({
        kind: "file",
        path: `${path}.d/${d.name}`,
        where: `${where}.dropins[${j}]`,
        data: d.contents,
        mode: 0o644,
        overwrite: true,
      });
    });
  });
  const ka = plan.kernelArguments;
  if (ka.shouldExist.length + ka.shouldNotExist.length > 0)
    writes.push({
      kind: "file",
      path: KERNEL_ARGUMENTS_RECORD,
      where: "kernelArguments",
      data: `${JSON.stringify(ka)}\n`,
      mode: 0o644,
      overwrite: true,
    });
  return writes;
}

const onUsr = (p: string) => p === "/usr" || p.startsWith("/usr/");

/** Problems with the writes on this target: read-only paths, clashes, files in the way. */
export function checkWrites(writes: Write[], facts: Map<string, PathFact>): Problem[] {
  const problems: Problem[] = [];
  const seen = new Map<string, string>();
  for (const w of writes) {
    const add = (message: string) => problems.push({ path: w.where, message: `${w.path}: ${message}` });
    const prior = seen.get(w.path);
    // Two writes of one directory (e.g. two users' .ssh in one home) are fine; anything else clashes.
    if (prior !== undefined && w.kind !== "dir") add(`is also written by ${prior}`);
    seen.set(w.path, w.where);
    const f = facts.get(w.path);
    if (!f) continue;
    if (f.blocked) {
      add(`${f.blocked} is in the way (not a directory, or a loop of links)`);
      continue;
    }
    if (onUsr(f.resolved)) {
      add(
        `${f.via ? `resolves through the link ${f.via} to ${f.resolved}, ` : ""}on the read-only /usr image; write to /etc or /var instead`,
      );
      continue;
    }
    if (w.kind === "hardlink") {
      const t = facts.get(w.target);
      const written = writes.some((o) => o.kind === "file" && o.path === w.target);
      if (t && onUsr(t.resolved))
        add(`its target ${w.target} is on /usr: a hard link cannot cross file systems`);
      else if (!written && t?.kind !== "file")
        add(`its target ${w.target} is not a file here and the config writes none`);
    }
    if (w.kind === "dir" || w.kind === "home") {
      if (f.kind !== "missing" && f.kind !== "dir") add("exists and is not a directory");
    } else if (f.kind === "dir") add("is an existing directory");
    else if (f.kind === "other") add("exists and is not a regular file or a link");
    else if (!w.overwrite && f.kind !== "missing") add("already exists and overwrite is not true");
  }
  return problems;
}

/** Units the config enables, disables or adds drop-ins to must exist in the image or the config. */
export function checkUnits(plan: Plan, available: (name: string) => boolean): Problem[] {
  const problems: Problem[] = [];
  plan.units.forEach((u, i) => {
    if (u.contents !== undefined || u.mask) return;
    if (u.enabled === undefined && u.dropins.length === 0) return;
    const template = u.name.replace(/@[^.]+\./, "@.");
    if (!available(u.name) && !available(template))
      problems.push({
        path: `systemd.units[${i}].name`,
        message: `${u.name} is not in the image (/usr/lib/systemd/system, /etc/systemd/system) and the config gives no contents`,
      });
  });
  return problems;
}
