// The passive slot's partitions, written in place. Partitions are found by PARTLABEL in the GPT as
// `sfdisk --json` reports it, which works the same on a block device and on a disk image file, so
// the integration test exercises the exact code a machine runs. A partition is written by opening
// the whole disk and writing at the partition's byte offset: no loop devices, no mounts, nothing
// the kernel has to re-read.

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { open, readFile, readlink, realpath } from "node:fs/promises";
import { basename } from "node:path";
import { UpdateError } from "./errors.js";

export interface Partition {
  label: string;
  /** Offset of the first byte on the disk. */
  start: number;
  /** Bytes. */
  size: number;
  /** GPT type GUID, upper case. */
  type: string;
}

/** Partitions of `sfdisk --json DISK` output, byte offsets from start sector × sector size. */
export function parseSfdiskJson(text: string, disk: string): Partition[] {
  let table: { label?: string; sectorsize?: number; partitions?: unknown[] } | undefined;
  try {
    table = (JSON.parse(text) as { partitiontable?: typeof table }).partitiontable;
  } catch (err) {
    throw new UpdateError("disk", `${disk}: sfdisk --json printed no JSON (${(err as Error).message})`);
  }
  if (table?.label !== "gpt")
    throw new UpdateError("disk", `${disk}: not a GPT disk (partition table ${table?.label ?? "missing"})`);
  // sfdisk always reports the logical sector size of a device; an image file is read as 512.
  const sector = table.sectorsize ?? 512;
  return (table.partitions ?? []).flatMap((p) => {
    const { name, start, size, type } = p as { name?: string; start?: number; size?: number; type?: string };
    if (!name || typeof start !== "number" || typeof size !== "number") return [];
    return [{ label: name, start: start * sector, size: size * sector, type: String(type).toUpperCase() }];
  });
}

const BLOCK = 1024 * 1024;

export class Disk {
  private constructor(
    readonly path: string,
    readonly partitions: Partition[],
  ) {}

  static async open(path: string): Promise<Disk> {
    const json = await new Promise<string>((resolve, reject) =>
      execFile("sfdisk", ["--json", path], (err, stdout, stderr) =>
        err
          ? reject(new UpdateError("disk", `sfdisk --json ${path}: ${stderr.trim() || err.message}`))
          : resolve(stdout),
      ),
    );
    return new Disk(path, parseSfdiskJson(json, path));
  }

  partition(label: string): Partition {
    const matches = this.partitions.filter((p) => p.label === label);
    if (matches.length !== 1)
      throw new UpdateError(
        "disk",
        matches.length === 0
          ? `${this.path}: no partition labelled ${label} (has ${this.partitions.map((p) => p.label).join(", ")})`
          : `${this.path}: ${matches.length} partitions labelled ${label}; refusing to guess which to write`,
      );
    return matches[0] as Partition;
  }

  /**
   * Writes `content` (exactly `expected.size` bytes) at the start of the partition, fsyncs, then
   * reads it back and compares sha256: the second verification, after the download's, catches a
   * disk that does not keep what it was given. Bytes after the content keep their old value; the
   * verity superblock records the data size, so they are never read.
   */
  async writePartition(
    label: string,
    content: AsyncIterable<Buffer>,
    expected: { name: string; size: number; sha256: string },
    onBytes: (written: number) => void = () => {},
  ): Promise<void> {
    const part = this.partition(label);
    if (expected.size > part.size)
      throw new UpdateError(
        "disk",
        `${expected.name} is ${expected.size} bytes, larger than partition ${label} (${part.size} bytes)`,
      );
    const fh = await open(this.path, "r+");
    let written = 0;
    try {
      for await (const chunk of content) {
        if (written + chunk.length > expected.size)
          throw new UpdateError(
            "disk",
            `${expected.name}: more than the expected ${expected.size} bytes arrived for partition ${label} (${part.size} bytes)`,
          );
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, off, chunk.length - off, part.start + written + off);
          off += bytesWritten;
        }
        written += chunk.length;
        onBytes(written);
      }
      if (written !== expected.size)
        throw new UpdateError(
          "disk",
          `${expected.name}: only ${written} of ${expected.size} bytes arrived for partition ${label}`,
        );
      await fh.sync();
    } finally {
      await fh.close();
    }
    const readBack = await this.hashPartition(label, expected.size);
    if (readBack !== expected.sha256)
      throw new UpdateError(
        "disk",
        `partition ${label}: read back sha256 ${readBack} after writing ${expected.name}, expected ${expected.sha256}`,
      );
  }

  /** sha256 of the first `length` bytes of the partition. */
  async hashPartition(label: string, length: number): Promise<string> {
    const part = this.partition(label);
    if (length > part.size)
      throw new UpdateError("disk", `cannot hash ${length} bytes of partition ${label} (${part.size} bytes)`);
    const hash = createHash("sha256");
    const fh = await open(this.path, "r");
    try {
      const buf = Buffer.allocUnsafe(BLOCK);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(BLOCK, length - done), part.start + done);
        if (bytesRead === 0)
          throw new UpdateError(
            "disk",
            `${this.path} ends inside partition ${label} (read ${done} of ${length})`,
          );
        hash.update(buf.subarray(0, bytesRead));
        done += bytesRead;
      }
    } finally {
      await fh.close();
    }
    return hash.digest("hex");
  }
}

/**
 * The whole disk that holds the partition labelled `label` (default for `updateDisk`):
 * /dev/disk/by-partlabel/USR-A → /dev/vda2, whose /sys/class/block entry sits under its disk's.
 */
export async function diskOfPartLabel(label: string): Promise<string> {
  let dev: string;
  try {
    dev = basename(await realpath(`/dev/disk/by-partlabel/${label}`));
  } catch {
    throw new UpdateError(
      "disk",
      `no partition labelled ${label} (/dev/disk/by-partlabel/${label} is missing)`,
    );
  }
  // /sys/class/block/vda2 → ../../devices/…/block/vda/vda2; a whole disk has a `partition` file
  // only on its partitions, so check we really are one level below the disk.
  const link = await readlink(`/sys/class/block/${dev}`);
  await readFile(`/sys/class/block/${dev}/partition`, "utf8").catch(() => {
    throw new UpdateError("disk", `/dev/${dev} (PARTLABEL=${label}) is not a partition`);
  });
  return `/dev/${basename(link.slice(0, link.lastIndexOf("/")))}`;
}
