// The fence's adapter (docs/architecture.md, "Fencing"): reads the boot clock, writes the deadline
// and the list of SingleInstance units under /run/flotilla/fence, and keeps the guard running. The
// guard is a tiny bash loop in a transient systemd service of its own, outside the agent's cgroup,
// so it enforces the deadline when the agent is dead, restarting or frozen: at the deadline it
// queues a stop of the listed units, SIGKILLs them and waits for the stop, unless the agent has
// written a later deadline.

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log.js";
import { FenceDeadline, type FenceTiming, formatDeadline, parseUptime } from "./fence.js";

export const FENCE_DIR = "/run/flotilla/fence";
export const GUARD_UNIT = "flotilla-fence-guard.service";

/**
 * The guard. Builtins only in its loop (read, [[ ]], printf -v, read -t on a pipe nobody writes
 * to as its sleep), so a tick forks nothing; it sleeps until the deadline it last read, at most
 * 0.5 s, so a deadline pulled in (a lost lease) is seen within half a second. A deadline file it
 * cannot parse counts as passed; no deadline file means not armed (the agent left gracefully, or
 * has not joined yet). It fences once per deadline value.
 */
export const GUARD_SCRIPT = `
dir=$1
fenced=
exec 3<> <(:)
fence() {
  local units=()
  [[ -e $dir/units ]] && mapfile -t units < "$dir/units"
  echo "lease not renewed by deadline $2 (now $1, centiseconds since boot): fencing \${#units[@]} unit(s): \${units[*]}"
  (( \${#units[@]} )) || return 0
  # The stop job first, so that Restart= does not start what the kill ends; then SIGKILL to every
  # process of the units rather than wait for their stop timeouts; then wait for the stops.
  systemctl stop --no-block -- "\${units[@]}"
  systemctl kill --signal=SIGKILL --kill-who=all -- "\${units[@]}"
  systemctl stop -- "\${units[@]}"
  read -r up _ < /proc/uptime
  echo "fenced at \${up/./}: \${units[*]}"
}
while :; do
  read -r up _ < /proc/uptime
  now=$((10#\${up/./}))
  deadline=
  if [[ -e $dir/deadline ]]; then
    read -r deadline < "$dir/deadline"
    [[ $deadline =~ ^[0-9]+$ ]] || deadline=0
  fi
  wait=50
  if [[ -n $deadline ]]; then
    if (( now >= deadline )); then
      if [[ $fenced != "$deadline" ]]; then
        fenced=$deadline
        fence "$now" "$deadline"
      fi
    elif (( deadline - now < wait )); then
      wait=$((deadline - now))
    fi
  fi
  printf -v pause '%d.%02d' $((wait / 100)) $((wait % 100))
  read -r -t "$pause" -u 3 _
done
`;

/** Starts a transient service unless one of that name and description is running (manager.ts). */
export interface TransientServices {
  ensureService(name: string, description: string, argv: string[]): Promise<void>;
}

/** Milliseconds since boot, suspend included (CLOCK_BOOTTIME, as /proc/uptime shows it). */
export function bootClockMs(): number {
  return parseUptime(readFileSync("/proc/uptime", "utf8"));
}

export class Fencing {
  private readonly state: FenceDeadline;
  private guardReady = false;
  private writtenUnits: string | undefined;

  constructor(
    timing: FenceTiming,
    private readonly services: TransientServices,
    private readonly log: Logger,
    private readonly dir = FENCE_DIR,
    private readonly clock = bootClockMs,
  ) {
    this.state = new FenceDeadline(timing);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (err) {
      // Not fatal for the agent: without the directory the guard cannot start, so no
      // SingleInstance unit is started here (ensureGuard says why).
      log.error({ dir, err: String(err) }, "cannot create the fence directory");
    }
  }

  /** Starts the guard if it is not running (a restarted agent finds its earlier run's guard). */
  async ensureGuard(): Promise<boolean> {
    const hash = createHash("sha256").update(GUARD_SCRIPT).digest("hex").slice(0, 12);
    try {
      // A file, not `bash -c`: systemd would expand the script's $variables in an ExecStart argument.
      const script = join(this.dir, "guard.sh");
      this.atomicWrite("guard.sh", GUARD_SCRIPT);
      await this.services.ensureService(GUARD_UNIT, `Flotilla fence guard (script ${hash})`, [
        "/bin/bash",
        script,
        this.dir,
      ]);
      if (!this.guardReady) this.log.info({ unit: GUARD_UNIT }, "fence guard running");
      this.guardReady = true;
    } catch (err) {
      this.guardReady = false;
      this.log.error(
        { unit: GUARD_UNIT, err: String(err) },
        "cannot start the fence guard; SingleInstance units are not started here",
      );
    }
    return this.guardReady;
  }

  /**
   * etcd confirmed the lease with a keep-alive (or grant) sent at `sentAtMs` (boot clock). Returns
   * true when this lifts a fence: the deadline had passed and is now ahead again.
   */
  renewed(sentAtMs: number, revision: number): boolean {
    const now = this.clock();
    const before = this.state.deadline;
    const fenced = before !== undefined && now >= before;
    this.state.renewed(sentAtMs, now, revision);
    if (this.state.deadline !== before) this.writeDeadline();
    return fenced && this.state.deadline !== undefined && now < this.state.deadline;
  }

  /** etcd said the lease is gone: the guard fences within half a second. */
  lost(): void {
    this.state.lost(this.clock());
    this.writeDeadline();
    this.log.warn("machine lease lost: fencing SingleInstance units now");
  }

  /** How many times the deadline has passed; a change means the guard killed the units. */
  lapses(): number {
    return this.state.observe(this.clock());
  }

  /** Whether SingleInstance units may be started by a pass over the view at `viewRevision` (fence.ts). */
  mayStart(viewRevision: number): boolean {
    return this.guardReady && this.state.mayStart(this.clock(), viewRevision);
  }

  /** The units the guard kills at the deadline; written before any of them is started. */
  setUnits(names: readonly string[]): void {
    const text = names.map((n) => `${n}\n`).join("");
    if (text === this.writtenUnits) return;
    this.atomicWrite("units", text);
    this.writtenUnits = text;
  }

  /** Graceful stop, after the units were stopped: the guard has nothing to enforce any more. */
  disarm(): void {
    rmSync(join(this.dir, "deadline"), { force: true });
  }

  private writeDeadline(): void {
    const deadline = this.state.deadline;
    if (deadline === undefined) return;
    try {
      this.atomicWrite("deadline", formatDeadline(deadline));
    } catch (err) {
      // The guard keeps the older, earlier deadline: it fences too soon, never too late.
      this.log.error({ err: String(err) }, "cannot write the fence deadline");
    }
  }

  /** Written then renamed, so the guard never reads half a file. */
  private atomicWrite(name: string, text: string): void {
    const path = join(this.dir, name);
    writeFileSync(`${path}.tmp`, text, { mode: 0o644 });
    renameSync(`${path}.tmp`, path);
  }
}
