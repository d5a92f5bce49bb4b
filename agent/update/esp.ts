// The ESP side of a slot: /flotilla/<x>/{vmlinuz,initrd} and the loader entry that makes the slot
// bootable. Order is what keeps a crash harmless: the slot's old entry goes first (a half-written
// slot must never be referenced), the kernel and initrd arrive by tmp + fsync + rename, and the new
// entry is written last, itself by rename, so sd-boot sees either no entry or a complete one.

import { createHash } from "node:crypto";
import { mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { UpdateError } from "./errors.js";
import type { Manifest } from "./manifest.js";
import { ESP_DIR, newEntry, parseEntryName, type Slot } from "./slots.js";

/** One try: an update whose health gate fails boots once, then sd-boot falls back. */
export const UPDATE_TRIES = 1;

const entriesDir = (espDir: string) => join(espDir, "loader", "entries");

/** File names in loader/entries (empty when the directory does not exist yet). */
export async function listEntries(espDir: string): Promise<string[]> {
  return readdir(entriesDir(espDir)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
}

/** Removes every loader entry of `slot` (blessed or counting), so sd-boot cannot pick it. */
export async function removeSlotEntries(espDir: string, slot: Slot): Promise<string[]> {
  const gone = (await listEntries(espDir)).filter((n) => parseEntryName(n)?.slot === slot);
  for (const name of gone) await rm(join(entriesDir(espDir), name), { force: true });
  if (gone.length) await syncDir(entriesDir(espDir));
  return gone;
}

export interface EspFile {
  content: AsyncIterable<Buffer>;
  size: number;
  sha256: string;
}

/**
 * Installs a slot's kernel + initrd and its entry `flotilla-<x>+1.conf`. Each file is checked
 * against the manifest's size and sha256 as it is written. Returns the entry's file name.
 */
export async function writeEspSlot(
  espDir: string,
  slot: Slot,
  manifest: Pick<Manifest, "version" | "cmdline">,
  files: { vmlinuz: EspFile; initrd: EspFile },
): Promise<string> {
  await removeSlotEntries(espDir, slot);
  const dir = join(espDir, ESP_DIR, slot.toLowerCase());
  await mkdir(dir, { recursive: true });
  for (const [name, f] of Object.entries(files)) await writeChecked(dir, name, f);
  await syncDir(dir);
  const entry = newEntry(slot, manifest, UPDATE_TRIES);
  await mkdir(entriesDir(espDir), { recursive: true });
  await writeAtomically(entriesDir(espDir), entry.name, [Buffer.from(entry.text)]);
  await syncDir(entriesDir(espDir));
  return entry.name;
}

async function writeChecked(dir: string, name: string, f: EspFile): Promise<void> {
  const hash = createHash("sha256");
  let size = 0;
  const count = (chunk: Buffer) => {
    size += chunk.length;
    hash.update(chunk);
  };
  await writeAtomically(dir, name, f.content, count, () => {
    const sha = hash.digest("hex");
    if (size !== f.size || sha !== f.sha256)
      throw new UpdateError(
        "esp",
        `ESP ${join(dir, name)}: got ${size} bytes with sha256 ${sha}, expected ${f.size} bytes with ${f.sha256}`,
      );
  });
}

/**
 * tmp + fsync + rename; `check` may refuse the content before it takes the real name. The tmp
 * name has no .conf suffix, so sd-boot never reads a partial entry.
 */
async function writeAtomically(
  dir: string,
  name: string,
  content: AsyncIterable<Buffer> | Buffer[],
  onChunk: (chunk: Buffer) => void = () => {},
  check: () => void = () => {},
): Promise<void> {
  const tmp = join(dir, `.${name}.tmp`);
  const fh = await open(tmp, "w");
  try {
    for await (const chunk of content) {
      onChunk(chunk);
      await fh.write(chunk);
    }
    await fh.sync();
    check();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, join(dir, name));
}

/** Makes renames and deletions in `dir` durable (a file system without directory fsync says EINVAL: nothing more to do there). */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
  } finally {
    await fh.close();
  }
}
