// Stage 5: the ESP (vfat, built as a file with mtools): systemd-boot, slot A's kernel + initrd and
// its loader entry with a boot-counting suffix. Every slot entry shares one sort-key and carries a
// version, and loader.conf sets no `default`, so sd-boot prefers the newest entry with tries left.
// The entry comes from the updater's own newEntry, so the build and the updater write the same text.

import { stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { ESP_DIR, entryName, newEntry } from "../../../agent/update/slots.js";
import type { StageCache, StageResult } from "../cache.js";
import { checkFits, type Definition } from "../definition.js";
import { hashFile, MiB, run, stageCode } from "../util.js";

export const SD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/** The kernel command line of a slot: /usr from that slot through dm-verity with its root hash. */
export function slotCmdline(def: Definition, slot: 0 | 1, rootHash: string): string {
  const p = def.partitions;
  return [
    `root=PARTLABEL=${p.root.label} rw`,
    `mount.usr=/dev/mapper/usr mount.usrfstype=squashfs mount.usrflags=ro`,
    `systemd.verity_usr_data=PARTLABEL=${p.usr.labels[slot]}`,
    `systemd.verity_usr_hash=PARTLABEL=${p.usrVerity.labels[slot]}`,
    `usrhash=${rootHash}`,
    def.kernelCmdline,
  ].join(" ");
}

/** A slot's loader entry text: the updater's newEntry with this build's version and command lines. */
export function loaderEntry(def: Definition, slot: 0 | 1, rootHash: string): string {
  const cmdline = { A: slotCmdline(def, 0, rootHash), B: slotCmdline(def, 1, rootHash) };
  return newEntry(slot === 0 ? "A" : "B", { version: def.version, cmdline }, def.bootTries).text;
}

export async function espStage(
  cache: StageCache,
  def: Definition,
  customize: StageResult,
  rootHash: string,
): Promise<StageResult & { image: string; kernelBytes: number; initrdBytes: number; loaderBytes: number }> {
  const kernel = join(customize.dir, "vmlinuz");
  const initrd = join(customize.dir, "initrd");
  const loader = join(customize.dir, "tree", SD_BOOT);
  const [kernelBytes, initrdBytes, loaderBytes] = (await Promise.all(
    [kernel, initrd, loader].map(async (f) => (await stat(f)).size),
  )) as [number, number, number];
  const { label, sizeMiB } = def.partitions.esp;
  // Room for both slots' kernel + initrd, plus the loader twice (EFI/BOOT and EFI/systemd).
  checkFits(label, 2 * (kernelBytes + initrdBytes) + 2 * loaderBytes + MiB, sizeMiB * MiB);
  const inputs = {
    customize: customize.key,
    code: await stageCode("esp"),
    entryCode: await hashFile(resolve("agent/update/slots.ts")),
    rootHash,
    def: JSON.stringify([def.name, def.version, def.kernelCmdline, def.bootTries, def.partitions]),
  };
  const r = await cache.stage("esp", inputs, async (dir) => {
    const img = join(dir, "esp.vfat");
    await run("mkfs.vfat", ["-C", "-F", "32", "-n", label.slice(0, 11), img, String(sizeMiB * 1024)]);
    const m = (args: string[]) =>
      run(args[0] as string, ["-i", img, ...args.slice(1)], { env: { MTOOLS_SKIP_CHECK: "1" } });
    await m([
      "mmd",
      "::/EFI",
      "::/EFI/BOOT",
      "::/EFI/systemd",
      "::/loader",
      "::/loader/entries",
      `::/${ESP_DIR}`,
      `::/${ESP_DIR}/a`,
    ]);
    await m(["mcopy", loader, "::/EFI/BOOT/BOOTX64.EFI"]);
    await m(["mcopy", loader, "::/EFI/systemd/systemd-bootx64.efi"]);
    await m(["mcopy", kernel, `::/${ESP_DIR}/a/vmlinuz`]);
    await m(["mcopy", initrd, `::/${ESP_DIR}/a/initrd`]);
    await writeFile(join(dir, "loader.conf"), "timeout 0\neditor no\n");
    await m(["mcopy", join(dir, "loader.conf"), "::/loader/loader.conf"]);
    // A fresh slot: `+N` tries; systemd-bless-boot drops the suffix once boot-complete.target is reached.
    const entry = join(dir, "entry.conf");
    await writeFile(entry, loaderEntry(def, 0, rootHash));
    await m(["mcopy", entry, `::/loader/entries/${entryName("A", def.bootTries)}`]);
  });
  return { ...r, image: join(r.dir, "esp.vfat"), kernelBytes, initrdBytes, loaderBytes };
}
