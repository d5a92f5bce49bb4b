// The build's outputs (--out, dist/image by default): disk.raw, disk.qcow2 and payload/ (the
// update payload with its manifest, docs/updates.md). Copies, not links: a VM writing to
// dist/image/disk.raw must not corrupt the cache.

import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Definition } from "./definition.js";
import type { customizeStage } from "./stages/customize.js";
import { type diskStage, TYPE_GUID } from "./stages/disk.js";
import { slotCmdline } from "./stages/esp.js";
import type { UsrResult } from "./stages/usr.js";
import { hashFile, run } from "./util.js";

/** Size and mtime of an output as written, to tell whether anything changed it since. */
export interface FileStamp {
  size: number;
  mtimeMs: number;
}
export type Stamps = Record<string, FileStamp>;

export interface BuiltParts {
  customize: Awaited<ReturnType<typeof customizeStage>>;
  usr: UsrResult;
  disk: Awaited<ReturnType<typeof diskStage>>;
}

async function stampOf(file: string): Promise<FileStamp> {
  const s = await stat(file);
  return { size: s.size, mtimeMs: s.mtimeMs };
}

/**
 * The stamps of `out` when it already holds the build named `source` and no file changed since it
 * was written (e.g. a VM booted dist/image/disk.raw); otherwise undefined. A warm build then
 * leaves `out` alone, so tests running side by side can read it while another one re-checks it.
 */
export async function currentOutputs(out: string, source: string): Promise<Stamps | undefined> {
  let recorded: { source?: string; outputs?: Stamps };
  try {
    recorded = JSON.parse(await readFile(join(out, "build.json"), "utf8"));
  } catch {
    return undefined;
  }
  // The stamps list every file writeOutputs wrote, so a missing or changed one shows here.
  if (recorded.source !== source || !recorded.outputs) return undefined;
  for (const [file, want] of Object.entries(recorded.outputs)) {
    const have = await stampOf(join(out, file)).catch(() => undefined);
    if (!have || want.size !== have.size || want.mtimeMs !== have.mtimeMs) return undefined;
  }
  return recorded.outputs;
}

/** Writes `out` afresh and returns the stamps of what it wrote. */
export async function writeOutputs(out: string, def: Definition, parts: BuiltParts): Promise<Stamps> {
  const { customize, usr, disk } = parts;
  const payload = join(out, "payload");
  await rm(out, { recursive: true, force: true });
  await mkdir(payload, { recursive: true });
  const copy = (from: string, to: string) => run("cp", ["--sparse=always", from, to]);
  await copy(disk.raw, join(out, "disk.raw"));
  await copy(disk.qcow2, join(out, "disk.qcow2"));
  const files: Record<string, string> = {
    "usr.squashfs": usr.image,
    "usr.verity": usr.verity,
    vmlinuz: join(customize.dir, "vmlinuz"),
    initrd: join(customize.dir, "initrd"),
  };
  const manifestFiles: Record<string, { size: number; sha256: string }> = {};
  for (const [name, from] of Object.entries(files)) {
    await copy(from, join(payload, name));
    manifestFiles[name] = { size: (await stat(from)).size, sha256: await hashFile(from) };
  }
  const manifest = {
    name: def.name,
    version: def.version,
    kernelVersion: customize.kernelVersion,
    usrFsType: "squashfs",
    verity: { rootHash: usr.rootHash, dataBlockSize: 4096, hashBlockSize: 4096 },
    cmdline: { A: slotCmdline(def, 0, usr.rootHash), B: slotCmdline(def, 1, usr.rootHash) },
    files: manifestFiles,
    partitions: disk.partitions.map(({ image: _image, ...rest }) => rest),
    typeGuids: TYPE_GUID,
    placeholderAgent: customize.placeholderAgent,
  };
  await writeFile(join(payload, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  const stamps: Stamps = {};
  const written = [
    "disk.raw",
    "disk.qcow2",
    ...[...Object.keys(files), "manifest.json"].map((f) => `payload/${f}`),
  ];
  for (const file of written) stamps[file] = await stampOf(join(out, file));
  return stamps;
}
