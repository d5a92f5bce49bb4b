// The A/B updater loop inside the agent. Each pass: settle what the last boot means (a rollback to
// report, a new slot to keep the reboot lock for until it is blessed, a blessing that completes an
// update), then ask the channel, and let decide() say what to do: nothing, wait, install into the
// passive slot, or reboot into it per the group's strategy. Passes run on a jittered interval and
// on demand (fleetctl update check), one at a time.

import { execFile } from "node:child_process";
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { AgentConfig } from "../config.js";
import type { Logger } from "../log.js";
import { type DecideInput, decide, type UpdateAction } from "./decide.js";
import { Disk, diskOfPartLabel } from "./disk.js";
import { downloadRelease, type Progress, unpacked } from "./download.js";
import { UpdateError } from "./errors.js";
import { listEntries, removeSlotEntries, writeEspSlot } from "./esp.js";
import { fetchBounded, MANIFEST_DEADLINE_MS, MANIFEST_MAX_BYTES } from "./fetch.js";
import { applyKernelArguments, readKernelArguments } from "./kargs.js";
import {
  channelOfURL,
  type Manifest,
  parseTrustedKeys,
  type TrustedKey,
  verifyManifest,
} from "./manifest.js";
import type { BadVersion, GroupConfig, UpdateState, UpdateStatus } from "./records.js";
import {
  bootedSlot,
  detectRollback,
  kernelCommandLine,
  otherSlot,
  type PendingUpdate,
  type Slot,
  type SlotStatus,
  slotStatus,
} from "./slots.js";
import {
  clearGateFailure,
  type LocalState,
  readGateFailure,
  readState,
  versionDir,
  writeState,
} from "./state.js";
import { eligibleAt } from "./waves.js";
import { jitteredStart, nextWindow } from "./window.js";

export const KEY_DIRS = ["/usr/share/flotilla/update-keys", "/etc/flotilla/update-keys"];

/** The etcd records the loop reads and writes (UpdateStore). */
export interface UpdateRecords {
  groupConfig(group: string): Promise<GroupConfig>;
  badVersions(): Promise<Set<string>>;
  markBad(record: BadVersion): Promise<void>;
  putStatus(status: UpdateStatus): Promise<void>;
}

/** The reboot semaphore (RebootLock). */
export interface RebootSemaphore {
  acquire(
    group: string,
    holderId: string,
    meta: { machineId?: string },
  ): Promise<{ acquired: boolean; leaseId?: string; holders: string[]; maxHolders: number; reason?: string }>;
  keepAlive(leaseId: string): Promise<boolean>;
  release(group: string, holderId: string): Promise<boolean>;
}

export type UpdaterConfig = Pick<
  AgentConfig,
  | "updateChannelURL"
  | "updateGroup"
  | "updateIntervalSeconds"
  | "updateDisk"
  | "espDir"
  | "stateDir"
  | "pinnedVersion"
>;

export interface UpdaterDeps {
  cfg: UpdaterConfig;
  machineID: string;
  log: Logger;
  records: UpdateRecords;
  lock: RebootSemaphore;
  /** Moves this machine's units away, as the agent's graceful stop does. */
  drain: () => Promise<void>;
  reboot: () => Promise<void>;
  /** Where the facts of this boot are read; tests point them at files of their own. */
  paths?: { procCmdline?: string; osRelease?: string; keyDirs?: string[] };
  /** The manifest request's deadline (MANIFEST_DEADLINE_MS); tests shorten it. */
  manifestDeadlineMs?: number;
  random?: () => number;
  now?: () => Date;
}

/** A pass while the new slot is being assessed: keep the lock's lease alive, see the blessing soon. */
const GATING_PASS_MS = 15_000;
/** Retry for a full reboot lock or a failed pass, before the interval's jitter. */
const RETRY_MS = 30_000;
const ERROR_RETRY_MS = 5 * 60_000;
const PROGRESS_EVERY_MS = 2000;

/** IMAGE_VERSION of an os-release file (the image build writes it; VERSION_ID is Debian's). */
export function osReleaseVersion(text: string): string | undefined {
  const m = /^IMAGE_VERSION=(?:"([^"]*)"|'([^']*)'|(\S*))\s*$/m.exec(text);
  return m ? (m[1] ?? m[2] ?? m[3]) : undefined;
}

/** `ms` spread uniformly over ±25%, so a fleet started together does not poll together. */
export function jittered(ms: number, random: () => number): number {
  return Math.round(ms * (0.75 + random() / 2));
}

/** The install decide() should know about: written (bootable, not yet booted) and pending versions. */
export function localFacts(pending: PendingUpdate | undefined, status: SlotStatus): DecideInput["local"] {
  if (!pending) return {};
  const entry = status.slots[pending.slot];
  // Written only once the slot's entry exists with a try left: a crash before it means re-install.
  const bootable = pending.slot !== status.booted && entry.present && !entry.bad;
  return { pending: pending.version, ...(bootable ? { written: pending.version } : {}) };
}

/** This boot is the pending install, booted and not settled yet (gating, or just blessed). */
const assessing = (boot: Boot) =>
  boot.state.pending?.slot === boot.slot && boot.state.pending.version === boot.version;

interface Boot {
  slot: Slot;
  version: string;
  status: SlotStatus;
  state: LocalState;
}

export class Updater {
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly now: () => Date;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again: string | undefined;
  private stopped = false;
  private readonly abort = new AbortController();
  private status: UpdateStatus | undefined;
  private published: Promise<void> = Promise.resolve();
  private lastCheck: string | undefined;
  private plannedReboot: { windowStart: number; at: Date } | undefined;

  constructor(private readonly deps: UpdaterDeps) {
    this.log = deps.log;
    this.random = deps.random ?? Math.random;
    this.now = deps.now ?? (() => new Date());
  }

  /** First pass now (a fresh boot may have a rollback to report or a blessing to complete). */
  start(): void {
    this.trigger("startup");
  }

  trigger(reason: string): void {
    if (this.stopped) return;
    if (this.running) {
      // Asked during a pass (a check request): one more pass right after it.
      this.again = reason;
      return;
    }
    clearTimeout(this.timer);
    this.running = (async () => {
      let next = await this.pass(reason);
      while (this.again !== undefined && !this.stopped) {
        const why = this.again;
        this.again = undefined;
        next = await this.pass(why);
      }
      this.running = undefined;
      if (!this.stopped) this.timer = setTimeout(() => this.trigger("timer"), next);
    })();
  }

  /**
   * The reboot group changed in etcd (a holder left, its lease expired, the size or pause changed):
   * a machine waiting for a slot tries again now instead of at its next retry.
   */
  rebootGroupChanged(): void {
    if (this.status?.state === "locking") this.trigger("reboot group changed");
  }

  /** Stops the loop and any download; the pass in progress ends at its next step. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await this.running;
  }

  /** One pass; returns the delay before the next. Never throws: errors are logged and published. */
  async pass(reason: string): Promise<number> {
    const interval = jittered(this.deps.cfg.updateIntervalSeconds * 1000, this.random);
    let boot: Boot | undefined;
    try {
      boot = await this.readBoot();
      // Without the booted slot's entry nothing can be judged (blessed? rolled back?); most likely
      // the ESP is not mounted, which would otherwise read as "not blessed yet" forever.
      if (!boot.status.slots[boot.slot].present) {
        const { espDir } = this.deps.cfg;
        throw new UpdateError(
          "esp",
          `no loader entry for the booted slot ${boot.slot} in ${espDir}/loader/entries: is the ESP mounted at ${espDir}?`,
        );
      }
      await this.settleLastBoot(boot);
      // While this boot is the update being assessed, the channel has nothing to say.
      const { manifest, baseURL, problem } = assessing(boot)
        ? { baseURL: "" }
        : await this.fetchRelease(reason);
      const group = await this.deps.records.groupConfig(this.deps.cfg.updateGroup);
      const action = decide({
        currentVersion: boot.version,
        bootBlessed: boot.status.bootBlessed,
        ...(this.deps.cfg.pinnedVersion ? { pinnedVersion: this.deps.cfg.pinnedVersion } : {}),
        badVersions: await this.deps.records.badVersions(),
        paused: group.paused,
        ...(manifest ? { manifest, eligibleAt: eligibleAt(manifest, this.deps.machineID) } : {}),
        now: this.now(),
        local: localFacts(boot.state.pending, boot.status),
      });
      this.log.debug({ action, reason }, "update decision");
      return await this.act(action, boot, group, manifest, baseURL, problem, interval);
    } catch (err) {
      if (this.stopped) return interval;
      const message = err instanceof Error ? err.message : String(err);
      this.log.error({ err: message }, "update pass failed");
      if (boot) await this.publish(boot, "error", message);
      // The lease of a boot under assessment must be kept alive even while etcd is flaky.
      if (boot && assessing(boot)) return GATING_PASS_MS;
      return Math.min(interval, jittered(ERROR_RETRY_MS, this.random));
    }
  }

  private async act(
    action: UpdateAction,
    boot: Boot,
    group: GroupConfig,
    manifest: Manifest | undefined,
    baseURL: string,
    problem: string | undefined,
    interval: number,
  ): Promise<number> {
    const pending = boot.state.pending;
    switch (action.kind) {
      case "blessed": {
        await this.finishUpdate(boot, pending as PendingUpdate);
        return interval;
      }
      case "idle":
        // A channel that cannot be read or trusted is an error to see; otherwise the last update's
        // outcome stays visible until the next one starts.
        if (problem) {
          await this.publish(boot, "error", problem);
          return Math.min(interval, jittered(ERROR_RETRY_MS, this.random));
        }
        await this.publish(boot, boot.state.outcome ?? "idle", action.reason);
        return interval;
      case "wait": {
        if (pending && assessing(boot)) {
          // This boot is the update, under assessment: hold the reboot slot until it is blessed.
          await this.keepLease(boot, pending);
          await this.publish(boot, "gating", action.reason);
          return GATING_PASS_MS;
        }
        await this.publish(boot, "waiting", action.reason);
        const until = action.until ? action.until.getTime() - this.now().getTime() : interval;
        return Math.max(1000, Math.min(interval, until));
      }
      case "install":
        await this.install(boot, manifest as Manifest, baseURL);
        return this.rebootStep(await this.readBoot(), group, action.version, interval);
      case "reboot":
        return this.rebootStep(boot, group, action.version, interval);
    }
  }

  /** The booted slot and version, the ESP's entries and the local state, read fresh each pass. */
  private async readBoot(): Promise<Boot> {
    const p = this.deps.paths ?? {};
    const slot = bootedSlot(
      p.procCmdline ? await readFile(p.procCmdline, "utf8") : await kernelCommandLine(),
    );
    const osRelease = p.osRelease ?? "/usr/lib/os-release";
    const version = osReleaseVersion(await readFile(osRelease, "utf8"));
    if (!version) throw new Error(`${osRelease} has no IMAGE_VERSION: not a Flotilla OS image`);
    const status = slotStatus(await listEntries(this.deps.cfg.espDir), slot);
    return { slot, version, status, state: await readState(this.deps.cfg.stateDir) };
  }

  /** A rollback is reported once: the bad version marked for the cluster, the lock freed, the state cleared. */
  private async settleLastBoot(boot: Boot): Promise<void> {
    const pending = boot.state.pending;
    const rollback = detectRollback(pending, boot.status);
    if (!pending || !rollback) return;
    const { stateDir } = this.deps.cfg;
    const failure = await readGateFailure(stateDir);
    const reason: string =
      failure?.version === rollback.version
        ? `health gate failed: ${failure.reason}`
        : `slot ${rollback.slot} used up its boot tries without passing the health gate (no gate report: it did not get that far)`;
    const at = this.now().toISOString();
    this.log.error({ version: rollback.version, slot: rollback.slot, reason }, "update rolled back");
    await this.deps.records.markBad({
      version: rollback.version,
      reason,
      machineId: this.deps.machineID,
      at,
    });
    await this.releaseLock(pending);
    boot.state = { outcome: "rolled-back", lastRollback: { version: rollback.version, reason, at } };
    await writeState(stateDir, boot.state);
    await clearGateFailure(stateDir);
  }

  private async finishUpdate(boot: Boot, pending: PendingUpdate): Promise<void> {
    this.log.info({ version: pending.version, slot: pending.slot }, "update complete: booted and blessed");
    // Reported before the lock is released, so the next machine's "draining" always comes after
    // this one's "blessed": the records never show two machines out of service at once.
    await this.publish(boot, "blessed", `${pending.version} booted from slot ${pending.slot} and blessed`);
    await this.releaseLock(pending);
    boot.state = { ...boot.state, pending: undefined, outcome: "blessed" };
    await writeState(this.deps.cfg.stateDir, boot.state);
  }

  private async keepLease(boot: Boot, pending: PendingUpdate): Promise<void> {
    if (!pending.leaseId) return;
    if (await this.deps.lock.keepAlive(pending.leaseId)) return;
    // Expired during a slow boot, or an operator released it: nothing left to hold or release.
    this.log.warn({ leaseId: pending.leaseId }, "the reboot lock's lease is gone before the blessing");
    const { leaseId: _gone, ...rest } = pending;
    boot.state = { ...boot.state, pending: rest };
    await writeState(this.deps.cfg.stateDir, boot.state);
  }

  private async releaseLock(pending: PendingUpdate): Promise<void> {
    if (!pending.leaseId) return;
    await this.deps.lock.release(pending.group, this.deps.machineID);
    this.log.info({ group: pending.group }, "reboot lock released");
  }

  /** The channel's newest (or the pinned) release, verified; a failure is a reason, not an error. */
  private async fetchRelease(
    reason: string,
  ): Promise<{ manifest?: Manifest; baseURL: string; problem?: string }> {
    const { updateChannelURL: channel, pinnedVersion: pinned } = this.deps.cfg;
    const url = new URL(pinned ? `${pinned}/manifest.json` : "latest.json", channel).href;
    try {
      const name = channelOfURL(channel);
      if (!name) throw new UpdateError("channel", `${channel} does not end in a channel name`);
      const body = await fetchBounded(url, {
        maxBytes: MANIFEST_MAX_BYTES,
        deadlineMs: this.deps.manifestDeadlineMs ?? MANIFEST_DEADLINE_MS,
        signal: this.abort.signal,
      });
      let doc: unknown;
      try {
        doc = JSON.parse(body.toString("utf8"));
      } catch (err) {
        throw new UpdateError("manifest", `${url}: not JSON (${(err as Error).message})`);
      }
      // Checked before anything else is fetched: signature, fields, channel and expiry.
      const manifest = verifyManifest(doc, await this.trustedKeys(), { channel: name, now: this.now() });
      if (pinned && manifest.version !== pinned)
        throw new Error(`${url} is version ${manifest.version}, not the pinned ${pinned}`);
      this.lastCheck = this.now().toISOString();
      this.log.info({ reason, url, version: manifest.version }, "checked the update channel");
      return { manifest, baseURL: new URL(`${manifest.version}/`, channel).href };
    } catch (err) {
      if (this.stopped) throw err;
      const problem = `update check failed: ${err instanceof Error ? err.message : String(err)}`;
      this.log.error({ reason, url }, problem);
      return { baseURL: "", problem };
    }
  }

  /** Read at every check, so a key added to /etc/flotilla/update-keys counts without a restart. */
  private async trustedKeys(): Promise<TrustedKey[]> {
    const entries: { name: string; text: string }[] = [];
    for (const dir of this.deps.paths?.keyDirs ?? KEY_DIRS) {
      const names = await readdir(dir).catch(() => [] as string[]);
      for (const name of names.sort())
        if (name.endsWith(".pub.pem")) entries.push({ name, text: await readFile(join(dir, name), "utf8") });
    }
    return parseTrustedKeys(entries);
  }

  /**
   * Downloads and verifies every file, then writes the passive slot: its entry goes first, the
   * partitions next (each read back), state.json before the new entry, the ESP files and the
   * entry last. A failure at any step leaves no entry for the slot, so it is never booted half-made.
   */
  private async install(boot: Boot, manifest: Manifest, baseURL: string): Promise<void> {
    const { cfg } = this.deps;
    const target = otherSlot(boot.slot);
    const version = manifest.version;
    const dir = versionDir(cfg.stateDir, version);
    await this.removeOtherDownloads(version);
    const log = this.log.child({ version, slot: target });
    log.info({ from: baseURL }, "downloading the release");
    const t0 = Date.now();
    let lastPublish = 0;
    const onProgress = (p: Progress) => {
      if (Date.now() - lastPublish < PROGRESS_EVERY_MS && p.bytes < p.total) return;
      lastPublish = Date.now();
      log.info({ file: p.file, bytes: p.bytes, total: p.total }, "download progress");
      void this.publish(boot, "downloading", `${version}: ${p.file}`, { bytes: p.bytes, total: p.total });
    };
    const files = await downloadRelease(baseURL, manifest, dir, {
      log,
      onProgress,
      signal: this.abort.signal,
    });
    const t1 = Date.now();
    log.info({ ms: t1 - t0 }, "release downloaded and verified");

    await this.publish(boot, "writing", `${version} to slot ${target}`);
    // Nothing may point at a partition while it is being rewritten.
    await removeSlotEntries(cfg.espDir, target);
    const disk = await Disk.open(cfg.updateDisk || (await diskOfPartLabel("USR-A")));
    const parts = [
      ["usr.squashfs", `USR-${target}`],
      ["usr.verity", `USR-${target}-VERITY`],
    ] as const;
    const total = parts.reduce((n, [name]) => n + manifest.files[name].size, 0);
    let done = 0;
    for (const [name, label] of parts) {
      const f = manifest.files[name];
      await disk.writePartition(
        label,
        unpacked(files[name]),
        { name, size: f.size, sha256: f.sha256 },
        (n) => {
          if (Date.now() - lastPublish < PROGRESS_EVERY_MS) return;
          lastPublish = Date.now();
          void this.publish(boot, "writing", `${version} to slot ${target}`, { bytes: done + n, total });
        },
      );
      done += f.size;
      log.info({ partition: label, bytes: f.size }, "partition written and read back");
    }
    const pending: PendingUpdate = {
      version,
      slot: target,
      group: cfg.updateGroup,
      installedAt: this.now().toISOString(),
    };
    await writeState(cfg.stateDir, { ...boot.state, pending, outcome: undefined });
    // Provisioned kernel arguments (Ignition) apply to every slot entry, not only the first ones.
    const kernelArguments = await readKernelArguments().catch((err: unknown) => {
      throw new UpdateError(
        "kernel-arguments",
        `cannot apply the provisioned kernel arguments: ${String(err)}`,
      );
    });
    const cmdline = {
      ...manifest.cmdline,
      [target]: applyKernelArguments(manifest.cmdline[target], kernelArguments),
    };
    const entry = await writeEspSlot(
      cfg.espDir,
      target,
      { version: manifest.version, cmdline },
      {
        vmlinuz: { content: unpacked(files.vmlinuz), ...manifest.files.vmlinuz },
        initrd: { content: unpacked(files.initrd), ...manifest.files.initrd },
      },
    );
    // The slot is complete; ROOT is small, and a rollback never reinstalls the same version.
    await rm(dir, { recursive: true, force: true });
    log.info(
      { entry, downloadMs: t1 - t0, writeMs: Date.now() - t1 },
      "release installed to the passive slot",
    );
  }

  /** Downloads of other versions (an older release, a superseded partial one) only take ROOT's space. */
  private async removeOtherDownloads(keep: string): Promise<void> {
    const { stateDir } = this.deps.cfg;
    for (const name of await readdir(stateDir).catch(() => [] as string[]))
      if (name !== keep && /^\d+\.\d+\.\d+$/.test(name))
        await rm(join(stateDir, name), { recursive: true, force: true });
  }

  /** Reboots into the written slot when the group's strategy, window and lock allow; else when to look again. */
  private async rebootStep(
    boot: Boot,
    group: GroupConfig,
    version: string,
    interval: number,
  ): Promise<number> {
    const target = otherSlot(boot.slot);
    if (group.strategy === "off") {
      await this.publish(
        boot,
        "waiting",
        `${version} is written to slot ${target}; strategy off: reboot when you choose`,
      );
      return interval;
    }
    if (group.window) {
      const now = this.now();
      const span = nextWindow(group.window, now);
      // One random moment per window, kept across passes, so retries do not re-roll it later and later.
      if (this.plannedReboot?.windowStart !== span.start.getTime())
        this.plannedReboot = { windowStart: span.start.getTime(), at: jitteredStart(span, now, this.random) };
      const at = this.plannedReboot.at;
      if (at > now) {
        await this.publish(
          boot,
          "waiting",
          `${version} is written; reboot planned at ${at.toISOString()} (window)`,
        );
        return Math.min(interval, at.getTime() - now.getTime());
      }
    }
    let pending = boot.state.pending as PendingUpdate;
    if (group.strategy === "etcd-lock") {
      await this.publish(
        boot,
        "locking",
        `${version}: taking a reboot slot of group ${this.deps.cfg.updateGroup}`,
      );
      const r = await this.deps.lock.acquire(this.deps.cfg.updateGroup, this.deps.machineID, {
        machineId: this.deps.machineID,
      });
      if (!r.acquired) {
        const why =
          r.reason === "paused"
            ? "the group is paused"
            : `held by ${r.holders.join(", ")} (at most ${r.maxHolders} at once)`;
        await this.publish(boot, "locking", `${version} is written; waiting for a reboot slot: ${why}`);
        return jittered(RETRY_MS, this.random);
      }
      // On ROOT, so the next boot keeps the same lease alive and releases it once blessed.
      pending = {
        ...pending,
        group: this.deps.cfg.updateGroup,
        ...(r.leaseId ? { leaseId: r.leaseId } : {}),
      };
      await writeState(this.deps.cfg.stateDir, { ...boot.state, pending });
      this.log.info({ group: this.deps.cfg.updateGroup, leaseId: r.leaseId }, "reboot lock acquired");
    }
    await this.publish(boot, "draining", `${version}: moving units away before the reboot`);
    await this.deps.drain();
    await this.publish(boot, "rebooting", `into ${version} on slot ${target}`);
    this.log.info({ version, slot: target }, "rebooting into the update");
    this.stopped = true;
    await this.deps.reboot();
    return interval;
  }

  private async publish(
    boot: Boot,
    state: UpdateState,
    detail: string,
    progress?: UpdateStatus["progress"],
  ): Promise<void> {
    const status: UpdateStatus = {
      machineId: this.deps.machineID,
      version: boot.version,
      slot: boot.slot,
      state,
      detail,
      group: this.deps.cfg.updateGroup,
      ...(this.lastCheck ? { lastCheck: this.lastCheck } : {}),
      ...(boot.state.lastRollback ? { lastRollback: boot.state.lastRollback } : {}),
      ...(progress ? { progress } : {}),
      updatedAt: this.now().toISOString(),
    };
    const same = (s: UpdateStatus | undefined) => JSON.stringify({ ...s, updatedAt: "" });
    if (same(status) === same(this.status)) return;
    if (state !== this.status?.state) this.log.info({ state, detail }, "update state");
    this.status = status;
    // One put at a time, in order: a progress report sent without waiting must not land after
    // the state that followed it.
    this.published = this.published.then(() =>
      this.deps.records.putStatus(status).catch((err: unknown) => {
        // etcd away: the next pass publishes again.
        this.log.debug({ err: String(err) }, "update status not published");
      }),
    );
    await this.published;
  }
}

/** `systemctl reboot`: a clean shutdown, so every unit (and the agent's own SIGTERM path) stops in order. */
export function systemctlReboot(): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile("systemctl", ["reboot"], (err, _stdout, stderr) =>
      err ? reject(new Error(`systemctl reboot: ${stderr.trim() || err.message}`)) : resolve(),
    ),
  );
}
