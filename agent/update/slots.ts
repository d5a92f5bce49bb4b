// Boot slots A/B and their systemd-boot loader entries. Boot counting lives in the entry's file
// name (systemd AUTOMATIC_BOOT_ASSESSMENT): `flotilla-a+3.conf` is fresh with 3 tries,
// sd-boot renames it `flotilla-a+2-1.conf` when it boots it, `+0-N` is bad (sorted last, so the
// other slot boots), and systemd-bless-boot renames a good boot's entry to `flotilla-a.conf`.
// The image build (image/pipeline/stages/esp.ts) writes slot A's first entry with newEntry.

import { readFile } from "node:fs/promises";
import { UpdateError } from "./errors.js";
import type { Manifest } from "./manifest.js";

export type Slot = "A" | "B";

/** Directory on the ESP holding each slot's kernel + initrd (`/flotilla/a/…`), and the entries' prefix. */
export const ESP_DIR = "flotilla";

export const otherSlot = (s: Slot): Slot => (s === "A" ? "B" : "A");

export interface EntryName {
  slot: Slot;
  /** Absent on a blessed entry. */
  triesLeft?: number;
  triesDone?: number;
}

const ENTRY = /^flotilla-([ab])(?:\+(\d+)(?:-(\d+))?)?\.conf$/;

/** `flotilla-a.conf`, `flotilla-a+3.conf`, `flotilla-a+2-1.conf`. */
export function entryName(slot: Slot, tries?: number, done?: number): string {
  const counter = tries === undefined ? "" : `+${tries}${done ? `-${done}` : ""}`;
  return `${ESP_DIR}-${slot.toLowerCase()}${counter}.conf`;
}

/** A slot entry's name parsed, or undefined for any other file in loader/entries. */
export function parseEntryName(name: string): EntryName | undefined {
  const m = ENTRY.exec(name);
  if (!m) return undefined;
  const slot = m[1] === "a" ? "A" : "B";
  if (m[2] === undefined) return { slot };
  return { slot, triesLeft: Number(m[2]), triesDone: Number(m[3] ?? 0) };
}

/**
 * The kernel command line as systemd reads it. In a container systemd takes PID 1's arguments
 * instead of /proc/cmdline (the host's), so a container manager can pass a boot entry's options
 * to the container's init; we follow the same rule. `/run/systemd/container` marks a container.
 */
export async function kernelCommandLine(root = "/"): Promise<string> {
  const at = (p: string) => `${root.replace(/\/$/, "")}${p}`;
  const inContainer = await readFile(at("/run/systemd/container"), "utf8").then(
    () => true,
    () => false,
  );
  if (!inContainer) return readFile(at("/proc/cmdline"), "utf8");
  const argv = (await readFile(at("/proc/1/cmdline"), "utf8")).split("\0").filter(Boolean);
  return argv.slice(1).join(" ");
}

/** The booted slot, from the kernel command line the slot's entry passed. */
export function bootedSlot(procCmdline: string): Slot {
  const m = /(?:^|\s)systemd\.verity_usr_data=PARTLABEL=USR-([AB])(?:\s|$)/.exec(procCmdline);
  if (!m)
    throw new UpdateError(
      "slots",
      `kernel command line has no systemd.verity_usr_data=PARTLABEL=USR-A|B (not booted from a Flotilla slot): ${procCmdline.trim()}`,
    );
  return m[1] as Slot;
}

export interface SlotEntry {
  present: boolean;
  /** systemd-bless-boot dropped the counter. */
  blessed: boolean;
  /** No tries left and never blessed: sd-boot will not pick it while another entry is bootable. */
  bad: boolean;
  triesLeft?: number;
  triesDone?: number;
  /** The entry's file name, when present. */
  name?: string;
}

export interface SlotStatus {
  booted: Slot;
  /** The booted slot's entry has no counter: this boot passed the health gate. */
  bootBlessed: boolean;
  slots: Record<Slot, SlotEntry>;
}

/** Status of both slots from the file names in the ESP's loader/entries/. */
export function slotStatus(entries: string[], booted: Slot): SlotStatus {
  const of = (slot: Slot): SlotEntry => {
    const mine = entries
      .map((name) => ({ name, parsed: parseEntryName(name) }))
      .filter((e) => e.parsed?.slot === slot);
    // Normally one entry per slot; if a crash left two, the blessed one, else the most tries, is what counts.
    mine.sort((a, b) => rank(b.parsed as EntryName) - rank(a.parsed as EntryName));
    const e = mine[0];
    if (!e) return { present: false, blessed: false, bad: false };
    const { triesLeft, triesDone } = e.parsed as EntryName;
    const blessed = triesLeft === undefined;
    return { present: true, blessed, bad: triesLeft === 0, triesLeft, triesDone, name: e.name };
  };
  const slots = { A: of("A"), B: of("B") };
  return { booted, bootBlessed: slots[booted].blessed, slots };
}

const rank = (e: EntryName) => (e.triesLeft === undefined ? Number.MAX_SAFE_INTEGER : e.triesLeft);

/** The passive slot may be overwritten only once this boot is blessed: until then it is the fallback. */
export function passiveWritable(status: SlotStatus): boolean {
  return status.bootBlessed;
}

/**
 * A slot's loader entry: its file name (with `tries` boot-counting tries) and its text, exactly as
 * the image build writes slot A's.
 */
export function newEntry(
  slot: Slot,
  manifest: Pick<Manifest, "version" | "cmdline">,
  tries: number,
): { name: string; text: string } {
  const s = slot.toLowerCase();
  const text = [
    `title ${ESP_DIR} ${manifest.version} (slot ${slot})`,
    `version ${manifest.version}`,
    `sort-key ${ESP_DIR}`,
    `linux /${ESP_DIR}/${s}/vmlinuz`,
    `initrd /${ESP_DIR}/${s}/initrd`,
    `options ${manifest.cmdline[slot]}`,
    "",
  ].join("\n");
  return { name: entryName(slot, tries), text };
}

/** An install waiting for its reboot (state.json on ROOT, shared by both slots). */
export interface PendingUpdate {
  version: string;
  /** The slot it was written to. */
  slot: Slot;
  /** The reboot lock's lease, kept alive across the reboot. */
  leaseId?: string;
  group: string;
  installedAt: string;
}

/**
 * A pending install whose slot sd-boot gave up on: its entry has no tries left, and we are running
 * the other slot. Before the reboot the entry still has its try, so this is not a false alarm when
 * the agent restarts between install and reboot.
 */
export function detectRollback(
  pending: PendingUpdate | undefined,
  status: SlotStatus,
): { version: string; slot: Slot } | undefined {
  if (!pending || pending.slot === status.booted) return undefined;
  return status.slots[pending.slot].bad ? { version: pending.version, slot: pending.slot } : undefined;
}
