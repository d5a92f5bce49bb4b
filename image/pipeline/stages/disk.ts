// Stage 6: the GPT disk, assembled without loop devices: sgdisk writes the table onto a sparse
// file and each partition image is copied in at its offset. Slot B stays empty until the first
// update writes it. Also converts to qcow2.

import { join } from "node:path";
import type { StageCache, StageResult } from "../cache.js";
import type { Definition } from "../definition.js";
import { BuildError, MiB, run, stageCode } from "../util.js";

/** Discoverable Partitions Specification type GUIDs (x86-64). */
export const TYPE_GUID = {
  esp: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
  usr: "8484680C-9521-48C6-9C11-B0720656F69E",
  usrVerity: "77FF5F63-E7B6-4633-ACF4-1565B864C0E6",
  root: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
  /** OEM has no discoverable type: generic Linux data. */
  oem: "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
} as const;

export interface PartitionPlan {
  number: number;
  label: string;
  type: string;
  startMiB: number;
  sizeMiB: number;
  /** Image copied into the partition, if any. */
  image?: string;
}

/** Partition order: EFI-SYSTEM, USR-A, USR-B, USR-A-VERITY, USR-B-VERITY, OEM, ROOT (last, so it can grow). */
export function layout(def: Definition): PartitionPlan[] {
  const p = def.partitions;
  const rows: [string, string, number][] = [
    [p.esp.label, TYPE_GUID.esp, p.esp.sizeMiB],
    [p.usr.labels[0], TYPE_GUID.usr, p.usr.sizeMiB],
    [p.usr.labels[1], TYPE_GUID.usr, p.usr.sizeMiB],
    [p.usrVerity.labels[0], TYPE_GUID.usrVerity, p.usrVerity.sizeMiB],
    [p.usrVerity.labels[1], TYPE_GUID.usrVerity, p.usrVerity.sizeMiB],
    [p.oem.label, TYPE_GUID.oem, p.oem.sizeMiB],
    [p.root.label, TYPE_GUID.root, p.root.sizeMiB],
  ];
  let start = 1;
  return rows.map(([label, type, sizeMiB], i) => {
    const row = { number: i + 1, label, type, startMiB: start, sizeMiB };
    start += sizeMiB;
    return row;
  });
}

export interface DiskImages {
  esp: string;
  usr: string;
  usrVerity: string;
  root: string;
}

export async function diskStage(
  cache: StageCache,
  def: Definition,
  images: DiskImages,
  upstream: string[],
): Promise<StageResult & { raw: string; qcow2: string; partitions: PartitionPlan[] }> {
  const parts = layout(def);
  const byLabel: Record<string, string> = {
    [def.partitions.esp.label]: images.esp,
    [def.partitions.usr.labels[0]]: images.usr,
    [def.partitions.usrVerity.labels[0]]: images.usrVerity,
    [def.partitions.root.label]: images.root,
  };
  for (const part of parts) {
    const image = byLabel[part.label];
    if (image) part.image = image;
  }
  const inputs = {
    code: await stageCode("disk"),
    upstream: upstream.join(","),
    layout: JSON.stringify(parts),
  };
  const r = await cache.stage("disk", inputs, async (dir) => {
    const raw = join(dir, "disk.raw");
    // OEM starts as an empty vfat that operators (and scripts/vm) drop config.ign into.
    const oem = parts.find((p) => p.label === def.partitions.oem.label) as PartitionPlan;
    oem.image = join(dir, "oem.vfat");
    await run("mkfs.vfat", ["-C", "-n", oem.label.slice(0, 11), oem.image, String(oem.sizeMiB * 1024)]);
    const last = parts[parts.length - 1] as PartitionPlan;
    // 1 MiB before the first partition (protective MBR + GPT) and 1 MiB after (backup GPT).
    await run("truncate", ["-s", `${last.startMiB + last.sizeMiB + 1}M`, raw]);
    const sectors = MiB / 512;
    const args = ["--zap-all", "--clear"];
    for (const p of parts) {
      const first = p.startMiB * sectors;
      const lastSector = (p.startMiB + p.sizeMiB) * sectors - 1;
      args.push(
        `--new=${p.number}:${first}:${lastSector}`,
        `--typecode=${p.number}:${p.type}`,
        `--change-name=${p.number}:${p.label}`,
      );
    }
    await run("sgdisk", [...args, raw]);
    for (const p of parts) {
      const info = await run("sgdisk", [`--info=${p.number}`, raw]);
      const first = Number(/First sector: (\d+)/.exec(info)?.[1]);
      if (first !== p.startMiB * sectors)
        throw new BuildError(
          `partition ${p.label} starts at sector ${first}, expected ${p.startMiB * sectors}`,
        );
      if (p.image)
        await run("dd", [
          `if=${p.image}`,
          `of=${raw}`,
          "bs=1M",
          `seek=${p.startMiB}`,
          "conv=notrunc,sparse",
          "status=none",
        ]);
    }
    await run("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", raw, join(dir, "disk.qcow2")]);
  });
  return { ...r, raw: join(r.dir, "disk.raw"), qcow2: join(r.dir, "disk.qcow2"), partitions: parts };
}
