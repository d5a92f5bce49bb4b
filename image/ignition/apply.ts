// Applies a validated plan to a root directory, all or nothing: every check first (accounts,
// units, paths, the ESP), then every file staged under a temporary name beside its target, then
// one commit of renames. A failure during the commit puts back what was replaced and removes what
// was created, so the system is as it was and the next boot can try again.

import { execFileSync } from "node:child_process";
import { constants } from "node:fs";
import {
  chmod,
  chown,
  copyFile,
  link,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  rmdir,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { basename, dirname, join, posix } from "node:path";
import { applyKernelArguments } from "../../agent/update/kargs.js";
import { parseEntryName } from "../../agent/update/slots.js";
import { type AccountFiles, applyAccounts, checkAccounts } from "./accounts.js";
import type { Plan, Problem } from "./config.js";
import {
  checkUnits,
  checkWrites,
  MARKER,
  type PathFact,
  planWrites,
  UNIT_DIR,
  type Write,
} from "./writes.js";

/** The plan could not be applied; `applied` says whether anything of it is left on the system. */
export class ApplyError extends Error {
  constructor(
    readonly problems: Problem[],
    readonly applied: "nothing" | "rolled back" | "partly",
  ) {
    super(problems.map((p) => `${p.path}: ${p.message}`).join("; "));
  }
}

export interface Target {
  /** The root directory to provision ("/" on a booting machine). */
  root: string;
  /** The ESP, mounted (`/efi` on the machine). */
  espDir: string;
  /** A booting machine: systemd is PID 1 here, so units are enabled through it. */
  live: boolean;
  /** The marker's content: where the config came from. */
  marker: string;
}

export interface Applied {
  /** Slot entries on the ESP whose options changed. */
  entriesChanged: string[];
  users: number;
}

const ACCOUNT_FILES: (keyof AccountFiles)[] = ["passwd", "group", "shadow", "gshadow", "subuid", "subgid"];
const UNIT_SOURCES = ["/etc/systemd/system", "/usr/lib/systemd/system"];
const MAX_LINK_HOPS = 40;

const at = (root: string, p: string) => join(root, p);

async function lstatOrUndefined(p: string) {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** What is at `path` under `root`, following its parents' links inside `root`, as the kernel would after a chroot. */
export async function resolveIn(root: string, path: string): Promise<PathFact> {
  const queue = path.split("/").filter(Boolean);
  const last = queue.pop() as string;
  let cur = "/";
  let via: string | undefined;
  let hops = 0;
  while (queue.length > 0) {
    const name = queue.shift() as string;
    if (name === ".") continue;
    if (name === "..") {
      cur = posix.dirname(cur);
      continue;
    }
    const next = posix.join(cur, name);
    const st = await lstatOrUndefined(at(root, next));
    if (!st) {
      // Missing from here on: the rest will be created as directories.
      cur = posix.join(next, ...queue.filter((q) => q !== "."));
      break;
    }
    if (st.isSymbolicLink()) {
      via ??= next;
      if (++hops > MAX_LINK_HOPS) return { resolved: next, kind: "other", blocked: next };
      const target = await readlink(at(root, next));
      queue.unshift(...target.split("/").filter(Boolean));
      if (target.startsWith("/")) cur = "/";
    } else if (st.isDirectory()) cur = next;
    else return { resolved: next, kind: "other", blocked: next, ...(via ? { via } : {}) };
  }
  const resolved = posix.join(cur, last);
  const st = await lstatOrUndefined(at(root, resolved));
  const kind = !st
    ? "missing"
    : st.isSymbolicLink()
      ? "symlink"
      : st.isDirectory()
        ? "dir"
        : st.isFile()
          ? "file"
          : "other";
  return { resolved, kind, ...(via ? { via } : {}) };
}

async function readAccounts(root: string): Promise<AccountFiles> {
  const read = (name: string) =>
    readFile(at(root, `/etc/${name}`), "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
  const [passwd, group, shadow, gshadow, subuid, subgid] = await Promise.all(ACCOUNT_FILES.map(read));
  return {
    passwd: passwd ?? "",
    group: group ?? "",
    shadow: shadow ?? "",
    gshadow: gshadow ?? "",
    ...(subuid === undefined ? {} : { subuid }),
    ...(subgid === undefined ? {} : { subgid }),
  };
}

/** The slot entries' new texts, for kernelArguments; problems when the ESP cannot be edited. */
async function planEntries(plan: Plan, t: Target): Promise<{ writes: Write[]; problems: Problem[] }> {
  const ka = plan.kernelArguments;
  if (ka.shouldExist.length + ka.shouldNotExist.length === 0) return { writes: [], problems: [] };
  const problem = (message: string) => ({ writes: [], problems: [{ path: "kernelArguments", message }] });
  if (t.live) {
    const [esp, root] = await Promise.all([stat(t.espDir).catch(() => undefined), stat(t.root)]);
    if (!esp || esp.dev === root.dev) return problem(`the ESP is not mounted at ${t.espDir}`);
  }
  const dir = join(t.espDir, "loader/entries");
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => parseEntryName(n));
  if (names.length === 0) return problem(`no slot entries in ${dir}`);
  const writes: Write[] = [];
  for (const name of names.sort()) {
    const text = await readFile(join(dir, name), "utf8");
    const next = text.replace(
      /^options[ \t]+(.*)$/m,
      (_, opts: string) => `options ${applyKernelArguments(opts, ka)}`,
    );
    if (!/^options[ \t]/m.test(text)) return problem(`${join(dir, name)} has no options line`);
    if (next !== text)
      writes.push({
        kind: "file",
        path: join(dir, name),
        where: "kernelArguments",
        data: next,
        overwrite: true,
      });
  }
  return { writes, problems: [] };
}

/**
 * Checks everything, then applies. Throws ApplyError naming every problem; its `applied` says
 * honestly what is left: "nothing" (refused before any write) or "rolled back".
 */
export async function applyPlan(plan: Plan, t: Target, now = new Date()): Promise<Applied> {
  const accounts = await readAccounts(t.root);
  const problems = checkAccounts(plan, accounts);
  const outcome = applyAccounts(plan, accounts, Math.floor(now.getTime() / 86_400_000));

  const writes = planWrites(plan, outcome.users);
  const accountWrites: Write[] = outcome.changed.map((name) => ({
    kind: "file",
    path: `/etc/${name}`,
    where: "passwd",
    data: outcome.files[name] as string,
    overwrite: true,
  }));
  const facts = new Map<string, PathFact>();
  for (const w of [...accountWrites, ...writes]) {
    facts.set(w.path, await resolveIn(t.root, w.path));
    if (w.kind === "hardlink") facts.set(w.target, await resolveIn(t.root, w.target));
  }
  const available = new Set<string>();
  for (const dir of UNIT_SOURCES)
    for (const name of await readdir(at(t.root, dir)).catch(() => [] as string[])) available.add(name);
  const entries = await planEntries(plan, t);
  problems.push(
    ...checkWrites([...accountWrites, ...writes], facts),
    ...checkUnits(plan, (n) => available.has(n)),
    ...entries.problems,
  );
  if (problems.length > 0) throw new ApplyError(problems, "nothing");

  const tx = new Transaction(t.root);
  const units = await snapshotLinks(at(t.root, UNIT_DIR));
  try {
    // Homes and files first (accounts are swapped in after them, so a user never exists without
    // its home), then the account database, unit state, hard links, the ESP, and the marker last.
    for (const w of writes) if (w.kind !== "hardlink") await tx.stage(w);
    for (const w of accountWrites) await tx.stage(w);
    await tx.commit();
    await setUnitState(plan, t);
    // Hard links may point at files this config wrote: those exist only now.
    for (const w of writes) if (w.kind === "hardlink") await tx.stage(w);
    for (const w of entries.writes) await tx.stageOutside(w);
    await tx.stage({
      kind: "file",
      path: MARKER,
      where: "marker",
      data: t.marker,
      mode: 0o644,
      overwrite: true,
    });
    await tx.commit();
  } catch (err) {
    const failed = { path: "$", message: `applying failed: ${(err as Error).message}` };
    const undo = [
      ...(await tx.rollback()),
      ...(await restoreLinks(at(t.root, UNIT_DIR), units).then(
        () => [],
        (e: Error) => [`unit links: ${e.message}`],
      )),
    ];
    if (t.live)
      try {
        execFileSync("systemctl", ["daemon-reload"], { stdio: "ignore" });
      } catch (e) {
        undo.push(`systemctl daemon-reload: ${(e as Error).message}`);
      }
    if (undo.length > 0)
      throw new ApplyError(
        [failed, ...undo.map((message) => ({ path: "$", message: `rollback failed: ${message}` }))],
        "partly",
      );
    throw new ApplyError([failed], "rolled back");
  }
  await tx.finish();
  return { entriesChanged: entries.writes.map((w) => basename(w.path)), users: plan.users.length };
}

/** Enables, disables and masks units: through systemd on a live machine, offline on a root. */
async function setUnitState(plan: Plan, t: Target): Promise<void> {
  const todo = plan.units.filter((u) => u.mask || u.enabled !== undefined);
  if (todo.length === 0) return;
  const systemctl = (args: string[]) =>
    execFileSync("systemctl", t.live ? args : [`--root=${t.root}`, ...args], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  if (t.live) systemctl(["daemon-reload"]);
  for (const u of todo) {
    try {
      if (u.mask) systemctl(["mask", u.name]);
      if (u.enabled === true) systemctl(["enable", u.name]);
      if (u.enabled === false) systemctl(["disable", u.name]);
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? "").trim();
      throw new Error(`systemctl could not set the state of ${u.name}: ${stderr || (err as Error).message}`);
    }
  }
}

/** Every symlink and directory under the unit directory (enablement state), to restore after a failed commit. */
async function snapshotLinks(dir: string): Promise<Map<string, string | undefined>> {
  const entries = new Map<string, string | undefined>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isSymbolicLink()) entries.set(p, await readlink(p));
      else if (e.isDirectory()) {
        entries.set(p, undefined);
        await walk(p);
      }
    }
  };
  await walk(dir);
  return entries;
}

/** Puts the unit directory's links back as they were; directories made since (e.g. foo.target.wants) go. */
async function restoreLinks(dir: string, before: Map<string, string | undefined>): Promise<void> {
  const now = await snapshotLinks(dir);
  for (const [p, target] of now)
    if (target !== undefined && before.get(p) !== target) await rm(p, { force: true });
  for (const [p, target] of before)
    if (target !== undefined && now.get(p) !== target) {
      await mkdir(dirname(p), { recursive: true });
      await symlink(target, p);
    }
  const made = [...now].filter(([p, t]) => t === undefined && !before.has(p)).map(([p]) => p);
  for (const d of made.sort().reverse()) await rmdir(d);
}

type Staged = { tmp: string; target: string };

/**
 * Staging and commit with a journal: staged files sit beside their targets under temporary names
 * (same file system, so the commit is renames); a replaced file is first kept as a hard link (a
 * copy where the file system has none, e.g. the ESP's vfat). Rollback undoes the journal backwards.
 */
class Transaction {
  private staged: Staged[] = [];
  /** Undo steps, newest last. */
  private journal: (() => Promise<void>)[] = [];
  private backups: string[] = [];
  private seq = 0;

  constructor(private readonly root: string) {}

  /** Creates missing parent directories, journaled. */
  private async ensureDir(dir: string, mode = 0o755, owner?: { uid: number; gid: number }): Promise<void> {
    const st = await lstatOrUndefined(dir);
    if (st) return;
    await this.ensureDir(dirname(dir));
    await mkdir(dir, { mode });
    this.journal.push(() => rmdir(dir));
    await chmod(dir, mode);
    if (owner) await chown(dir, owner.uid, owner.gid);
  }

  private tmpBeside(real: string): string {
    return join(dirname(real), `.${basename(real)}.ignition-${process.pid}-${this.seq++}`);
  }

  async stage(w: Write): Promise<void> {
    await this.stageAt(at(this.root, w.path), w);
  }

  /** A write whose path is already absolute on this system (the ESP). */
  async stageOutside(w: Write): Promise<void> {
    await this.stageAt(w.path, w);
  }

  private async stageAt(real: string, w: Write): Promise<void> {
    if (w.kind === "dir" || w.kind === "home") {
      const st = await lstatOrUndefined(real);
      if (st) {
        if (w.kind === "dir") {
          const mode = st.mode & 0o7777;
          await chmod(real, w.mode);
          this.journal.push(() => chmod(real, mode));
        }
        return;
      }
      const owner = w.owner;
      await this.ensureDir(real, w.kind === "dir" ? w.mode : 0o755, owner);
      if (w.kind === "home") await this.copySkel(real, w.owner);
      return;
    }
    await this.ensureDir(dirname(real));
    const tmp = this.tmpBeside(real);
    this.journal.push(() => rm(tmp, { force: true }));
    if (w.kind === "symlink" || w.kind === "hardlink") {
      if (w.kind === "symlink") await symlink(w.target, tmp);
      else await link(at(this.root, w.target), tmp);
    } else {
      const old = await lstatOrUndefined(real);
      await writeFile(tmp, w.data, { mode: w.mode ?? 0o644 });
      const mode = w.mode ?? (old ? old.mode & 0o7777 : 0o644);
      const owner = w.owner ?? (old ? { uid: old.uid, gid: old.gid } : undefined);
      // vfat (the ESP) has no modes or owners: what it reports is all there is.
      if (w.mode !== undefined || old) await chmod(tmp, mode).catch(ignoreOn(["EPERM"]));
      if (owner) await chown(tmp, owner.uid, owner.gid).catch(ignoreOn(["EPERM"]));
    }
    this.staged.push({ tmp, target: real });
  }

  private async copySkel(home: string, owner: { uid: number; gid: number }): Promise<void> {
    const skel = at(this.root, "/etc/skel");
    for (const name of await readdir(skel).catch(() => [] as string[])) {
      const dst = join(home, name);
      const st = await lstat(join(skel, name));
      if (!st.isFile()) continue;
      await copyFile(join(skel, name), dst, constants.COPYFILE_EXCL);
      this.journal.push(() => rm(dst, { force: true }));
      await chown(dst, owner.uid, owner.gid);
    }
  }

  /** Renames every staged file into place; a replaced file is kept until finish(). */
  async commit(): Promise<void> {
    for (const s of this.staged.splice(0)) {
      const old = await lstatOrUndefined(s.target);
      if (old) {
        const backup = this.tmpBeside(s.target);
        if (old.isFile()) await link(s.target, backup).catch(() => copyFile(s.target, backup));
        else if (old.isSymbolicLink()) await symlink(await readlink(s.target), backup);
        else throw new Error(`${s.target} is not a file or link`);
        this.backups.push(backup);
        await rename(s.tmp, s.target);
        this.journal.push(() => rename(backup, s.target));
      } else {
        await rename(s.tmp, s.target);
        this.journal.push(() => rm(s.target, { force: true }));
      }
    }
  }

  /** Undoes everything; returns what could not be undone. */
  async rollback(): Promise<string[]> {
    const failed: string[] = [];
    for (const undo of this.journal.reverse())
      await undo().catch((err: Error) => {
        failed.push(err.message);
      });
    this.journal = [];
    return failed;
  }

  async finish(): Promise<void> {
    for (const b of this.backups) await rm(b, { force: true });
    this.journal = [];
  }
}

const ignoreOn = (codes: string[]) => (err: NodeJS.ErrnoException) => {
  if (!codes.includes(err.code ?? "")) throw err;
};
