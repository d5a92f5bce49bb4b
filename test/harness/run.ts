import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
} from "node:fs";
import { readdir, rm, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { log, since } from "./log.js";
import { cleanScript, runsDir } from "./paths.js";
import { run, sleep, startTime, waitFor } from "./proc.js";

/**
 * The cgroup hierarchies a run's processes are placed in. On this hybrid host nspawn needs its own
 * group in both the cgroup2 tree and the v1 name=systemd tree; without one, every machine lands in
 * the same `/payload` group and they collide. The cgroup2 directory comes first.
 */
function hierarchies(): string[] {
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) return ["/sys/fs/cgroup"];
  return ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"];
}

export class Cgroup {
  readonly dirs: string[];

  constructor(dirs: string[]) {
    this.dirs = dirs;
  }

  /** SIGKILLs every process in the group and below it (cgroup2 `cgroup.kill`, Linux 5.14+). */
  async kill(): Promise<void> {
    const v2 = this.dirs[0];
    if (v2 !== undefined && existsSync(v2)) await writeFile(path.join(v2, "cgroup.kill"), "1");
  }

  populated(): boolean {
    const v2 = this.dirs[0];
    if (v2 === undefined || !existsSync(v2)) return false;
    return readFileSync(path.join(v2, "cgroup.events"), "utf8").includes("populated 1");
  }

  async waitEmpty(timeoutMs: number): Promise<void> {
    await waitFor("cgroup to empty", () => (this.populated() ? undefined : true), timeoutMs, 50);
  }

  /** Removes the groups depth-first (a group with children cannot be removed). */
  async remove(): Promise<void> {
    for (const dir of this.dirs) await removeTree(dir);
  }
}

async function removeTree(dir: string): Promise<void> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const e of entries) if (e.isDirectory()) await removeTree(path.join(dir, e.name));
  // A group emptied a moment ago can still report EBUSY briefly.
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY" || attempt >= 50) throw err;
      await sleep(100);
    }
  }
}

/** A process the run started; `exited` resolves once Node has reaped it. */
export interface Spawned {
  pid: number;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  readonly running: boolean;
}

// Joins the shell to the given cgroups, then execs the real command, which so keeps the shell's PID.
const CGROUP_SHIM = 'for f in $FLOTILLA_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; exec "$@"';

const live = new Set<Run>();

/**
 * One harness run: a directory `.cache/run/<id>/` with everything the run creates, and a `state`
 * file that records each resource *before* it is created, so scripts/clean-harness can remove the
 * leftovers of a run whose process died. Line format: `<kind> <value>` (owner, cgroup, mount, bridge).
 */
export class Run {
  readonly id: string;
  readonly dir: string;
  private readonly stateFile: string;
  private readonly root: Cgroup;
  private readonly mounts: string[] = [];
  private readonly bridges: string[] = [];
  private readonly children = new Set<Spawned>();
  private destroying: Promise<void> | undefined;

  private constructor(id: string) {
    this.id = id;
    this.dir = path.join(runsDir, id);
    this.stateFile = path.join(this.dir, "state");
    this.root = new Cgroup(hierarchies().map((h) => path.join(h, `flotilla-${id}`)));
  }

  static create(): Run {
    mkdirSync(runsDir, { recursive: true });
    let id: string;
    // Short, because it prefixes interface names (15 bytes at most); unique among live runs.
    do id = `flt${randomBytes(3).toString("hex")}`;
    while (existsSync(path.join(runsDir, id)));
    const r = new Run(id);
    mkdirSync(r.dir);
    r.record("owner", `${process.pid} ${startTime(process.pid)}`);
    for (const dir of r.root.dirs) r.record("cgroup", dir);
    for (const dir of r.root.dirs) mkdirSync(dir);
    live.add(r);
    installHandlers();
    return r;
  }

  record(kind: "owner" | "cgroup" | "mount" | "bridge", value: string): void {
    appendFileSync(this.stateFile, `${kind} ${value}\n`);
  }

  trackMount(mountpoint: string): void {
    this.record("mount", mountpoint);
    this.mounts.push(mountpoint);
  }

  trackBridge(name: string): void {
    this.record("bridge", name);
    this.bridges.push(name);
  }

  cgroup(name: string): Cgroup {
    const cg = new Cgroup(this.root.dirs.map((d) => path.join(d, name)));
    for (const dir of cg.dirs) mkdirSync(dir, { recursive: true });
    return cg;
  }

  /**
   * Starts `argv` inside `cg`, detached (a Ctrl-C on the terminal reaches us, not the machines: we
   * tear down in order) and unreferenced (a forgotten machine does not keep Node alive; the exit
   * hook cleans up). Its output is appended to `logFile`.
   */
  spawnIn(cg: Cgroup, argv: readonly string[], logFile: string, env: NodeJS.ProcessEnv = {}): Spawned {
    const fd = openSync(logFile, "a");
    let child: ChildProcess;
    try {
      child = spawn("sh", ["-c", CGROUP_SHIM, "sh", ...argv], {
        detached: true,
        stdio: ["ignore", fd, fd],
        env: {
          ...process.env,
          ...env,
          FLOTILLA_CGROUP_PROCS: cg.dirs.map((d) => path.join(d, "cgroup.procs")).join(" "),
        },
      });
    } finally {
      closeSync(fd);
    }
    const pid = child.pid;
    if (pid === undefined) throw new Error(`cannot start ${argv[0]}`);
    let running = true;
    const spawned: Spawned = {
      pid,
      exited: new Promise((resolve) => {
        child.on("exit", (code) => {
          running = false;
          this.children.delete(spawned);
          resolve(code);
        });
      }),
      get running() {
        return running;
      },
    };
    this.children.add(spawned);
    child.unref();
    return spawned;
  }

  /**
   * Kills everything the run started, reaps the processes it spawned, unmounts, removes the cgroups
   * depth-first, deletes the bridges and the run directory. Idempotent; throws after doing all it can
   * if something could not be removed.
   */
  destroy(): Promise<void> {
    this.destroying ??= this.doDestroy();
    return this.destroying;
  }

  private async doDestroy(): Promise<void> {
    const start = performance.now();
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    // Every process of the run (machines, etcd) is in its cgroup: one write kills them all.
    await attempt("kill", () => this.root.kill());
    await attempt("reap", () =>
      waitFor("processes to be reaped", () => (this.children.size === 0 ? true : undefined), 15_000, 20),
    );
    await attempt("empty cgroups", () => this.root.waitEmpty(15_000));
    for (const m of [...this.mounts].reverse()) await attempt(`umount ${m}`, () => unmount(m));
    await attempt("remove cgroups", () => this.root.remove());
    for (const b of this.bridges) await attempt(`delete bridge ${b}`, () => deleteLink(b));
    await this.waitVethsGone();
    const stillMounted = mountsUnder(this.dir);
    if (stillMounted.length > 0) problems.push(`still mounted, run dir kept: ${stillMounted.join(" ")}`);
    else await attempt("remove run dir", () => rm(this.dir, { recursive: true, force: true }));
    live.delete(this);
    if (live.size === 0) removeHandlers();
    if (problems.length > 0)
      throw new Error(`teardown of run ${this.id} incomplete:\n${problems.join("\n")}`);
    log(`run ${this.id} torn down in ${since(start)}`);
  }

  /**
   * The host ends of the machines' veth pairs (nspawn names them vb-<machine>) vanish only when the
   * kernel frees the machines' network namespaces, asynchronously and, on a busy box, seconds later.
   * Names are unique per run, so a slow one harms nothing; wait a while so the box is clean on return.
   */
  private async waitVethsGone(): Promise<void> {
    const veths = () => readdirSync("/sys/class/net").filter((n) => n.startsWith(`vb-${this.id}`));
    try {
      await waitFor(
        "machine veths to disappear",
        () => (veths().length === 0 ? true : undefined),
        30_000,
        100,
      );
    } catch {
      log(`kernel has not yet removed ${veths().join(" ")}; it will`);
    }
  }
}

async function unmount(mountpoint: string): Promise<void> {
  if (!mountsUnder(mountpoint).includes(mountpoint)) return;
  const r = await run("umount", [mountpoint]);
  // Busy (a stray process still has a file open there): detach it now, the kernel frees it later.
  if (r.code !== 0) await run("umount", ["--lazy", mountpoint]);
  if (mountsUnder(mountpoint).includes(mountpoint)) throw new Error(r.stderr.trim());
}

async function deleteLink(name: string): Promise<void> {
  const r = await run("ip", ["link", "delete", name]);
  if (r.code !== 0 && !/Cannot find device|does not exist/.test(r.stderr)) throw new Error(r.stderr.trim());
}

/** Mount points at or below `dir`, from /proc/self/mountinfo (octal escapes decoded). */
export function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((m): m is string => m !== undefined)
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

// Signals: tear down every live run, then exit as the signal would have. On any other exit with runs
// still live (a crash, process.exit() from a test runner) only synchronous code can run, so the
// clean-harness script does the work.
const exitCodes: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
let handling = false;

function onSignal(signal: NodeJS.Signals): void {
  if (handling) return;
  handling = true;
  log(`${signal}: tearing down ${live.size} harness run(s)`);
  const exit = () => process.exit(exitCodes[signal] ?? 1);
  setTimeout(exit, 60_000).unref();
  void Promise.allSettled([...live].map((r) => r.destroy())).then(exit);
}

function onExit(): void {
  for (const r of live) spawnSync("bash", [cleanScript, "--force", r.dir], { stdio: "inherit" });
}

function installHandlers(): void {
  if (process.listeners("exit").includes(onExit)) return;
  for (const s of Object.keys(exitCodes)) process.on(s, onSignal);
  process.on("exit", onExit);
}

function removeHandlers(): void {
  for (const s of Object.keys(exitCodes)) process.off(s, onSignal);
  process.off("exit", onExit);
}
