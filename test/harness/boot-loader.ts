// Firmware + systemd-boot + initrd for an nspawn machine, which has none of them: before each boot
// it picks a loader entry from the machine's ESP directory as systemd-boot does (boot counting
// included), gives the machine's init the entry's slot on its command line (systemd reads PID 1's
// arguments as the kernel command line in a container), and mounts that slot's /usr: the squashfs
// bytes on the machine's own slot disk, unpacked, or the rootfs's /usr for the image's own hash.
// A stand-in for systemd-bless-boot (which needs EFI variables) drops the counter once
// boot-complete.target is reached, so the machine's real health gate decides as on a VM.
// The real firmware and loader are exercised in QEMU (image-boot, update-e2e); this lets the
// cluster tests reboot machines into updates in seconds.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { entryName, parseEntryName } from "../../agent/update/slots.js";
import type { Definition } from "../../image/pipeline/definition.js";
import { loaderEntry } from "../../image/pipeline/stages/esp.js";
import { partitionOffset } from "../../scripts/lib/image-vm.js";
import { makeSlotDisk } from "./slot-disk.js";

/** What a machine boots with: extra nspawn arguments and its init's arguments. */
export interface BootPlan {
  nspawnArgs: string[];
  initArgs: string[];
}

export interface Firmware {
  /** Runs once, before the machine's first boot: what the firmware needs in the machine's directory. */
  install(machineDir: string): void;
  /** Runs before each boot of the machine, with its directory on the host. */
  boot(machineDir: string): BootPlan;
  /** Files (relative to the machine's root) the machine needs for this firmware, written once. */
  files(): Record<string, string>;
}

interface Entry {
  file: string;
  version: string;
  options: string;
  triesLeft?: number;
  triesDone?: number;
}

/** Where a machine's ESP, slot disk and the loader's note of the booted entry live, on the host. */
export const slotMachinePaths = (machineDir: string) => ({
  esp: path.join(machineDir, "esp"),
  disk: path.join(machineDir, "slots", "disk.raw"),
  boot: path.join(machineDir, "boot"),
});

/** Inside the machine. */
export const IN_MACHINE = {
  esp: "/efi",
  disk: "/var/lib/flotilla-slots/disk.raw",
  boot: "/run/flotilla-boot",
};

const versionParts = (v: string) => v.split(/[.\-+~]/).map((p) => (/^\d+$/.test(p) ? Number(p) : p));

/** sd-boot's order for entries of one sort-key: newer version first; entries out of tries last. */
export function bootOrder(entries: Entry[]): Entry[] {
  const cmp = (a: Entry, b: Entry) => {
    const aOut = a.triesLeft === 0 ? 1 : 0;
    const bOut = b.triesLeft === 0 ? 1 : 0;
    if (aOut !== bOut) return aOut - bOut;
    const [va, vb] = [versionParts(a.version), versionParts(b.version)];
    for (let i = 0; i < Math.max(va.length, vb.length); i++) {
      const [x, y] = [va[i] ?? 0, vb[i] ?? 0];
      if (x !== y)
        return typeof x === "number" && typeof y === "number" ? y - x : String(y).localeCompare(String(x));
    }
    return 0;
  };
  return [...entries].sort(cmp);
}

function readEntries(esp: string): Entry[] {
  const dir = path.join(esp, "loader/entries");
  return readdirSync(dir).flatMap((file) => {
    const parsed = parseEntryName(file);
    if (!parsed) return [];
    const text = readFileSync(path.join(dir, file), "utf8");
    const field = (k: string) => new RegExp(`^${k}\\s+(.*)$`, "m").exec(text)?.[1]?.trim() ?? "";
    return [{ file, version: field("version"), options: field("options"), ...parsed }];
  });
}

/** The squashfs image's length, from its superblock (bytes_used, at offset 40). */
function squashfsLength(disk: string, offset: number): number {
  const fd = openSync(disk, "r");
  try {
    const sb = Buffer.alloc(48);
    readSync(fd, sb, 0, 48, offset);
    if (sb.readUInt32LE(0) !== 0x73717368) throw new Error(`no squashfs at byte ${offset} of ${disk}`);
    return Number(sb.readBigUInt64LE(40));
  } finally {
    closeSync(fd);
  }
}

function sha256Range(file: string, offset: number, length: number): string {
  const hash = createHash("sha256");
  const fd = openSync(file, "r");
  try {
    const buf = Buffer.alloc(8 << 20);
    for (let done = 0; done < length; ) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, length - done), offset + done);
      if (n === 0) throw new Error(`${file} ends before byte ${offset + length}`);
      hash.update(buf.subarray(0, n));
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/**
 * The emulated loader for machines with a slot disk, laid out as `def` says. `imageRootHash` is the verity root hash of the
 * rootfs the machines overlay (the main image build's), whose /usr serves that hash; `usrCache`
 * holds each other /usr unpacked once per distinct content.
 */
export function slotFirmware(def: Definition, imageRootHash: string, usrCache: string): Firmware {
  return {
    install(machineDir) {
      // As the image ships: slot A blessed with the image's own /usr, slot B empty.
      const p = slotMachinePaths(machineDir);
      mkdirSync(path.join(p.esp, "loader/entries"), { recursive: true });
      writeFileSync(path.join(p.esp, "loader/entries", entryName("A")), loaderEntry(def, 0, imageRootHash));
      mkdirSync(path.dirname(p.disk), { recursive: true });
      makeSlotDisk(p.disk, {
        usrMiB: def.partitions.usr.sizeMiB,
        verityMiB: def.partitions.usrVerity.sizeMiB,
      });
    },
    files: () => ({
      // The gate skips itself in containers (no slots there, normally); this machine has slots.
      "etc/systemd/system/flotilla-update-gate.service.d/slot-machine.conf":
        "[Unit]\nConditionVirtualization=\n",
      "etc/systemd/system/slot-machine-bless.service": [
        "[Unit]",
        "Description=Stand-in for systemd-bless-boot (no EFI variables in a container)",
        "Requires=boot-complete.target",
        "After=boot-complete.target",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        `ExecStart=/bin/sh -c 'e=$(cat ${IN_MACHINE.boot}/entry); b=$(echo "$e" | sed -E "s/[+][0-9]+(-[0-9]+)?[.]conf$/.conf/"); [ "$e" = "$b" ] || mv "${IN_MACHINE.esp}/loader/entries/$e" "${IN_MACHINE.esp}/loader/entries/$b"'`,
        "",
      ].join("\n"),
      "etc/systemd/system/multi-user.target.d/slot-machine.conf":
        "[Unit]\nWants=slot-machine-bless.service\n",
    }),
    boot(machineDir) {
      const p = slotMachinePaths(machineDir);
      const [chosen] = bootOrder(readEntries(p.esp));
      if (!chosen) throw new Error(`${p.esp}: no loader entry to boot`);
      let file = chosen.file;
      if (chosen.triesLeft !== undefined && chosen.triesLeft > 0) {
        // As sd-boot: one try spent before the kernel starts.
        const slot = parseEntryName(file)?.slot.toLowerCase();
        file = `flotilla-${slot}+${chosen.triesLeft - 1}-${(chosen.triesDone ?? 0) + 1}.conf`;
        renameSync(path.join(p.esp, "loader/entries", chosen.file), path.join(p.esp, "loader/entries", file));
      }
      mkdirSync(p.boot, { recursive: true });
      writeFileSync(path.join(p.boot, "entry"), `${file}\n`);
      const slot = /systemd\.verity_usr_data=PARTLABEL=(USR-[AB])/.exec(chosen.options)?.[1];
      const usrHash = /(?:^|\s)usrhash=([0-9a-f]+)/.exec(chosen.options)?.[1];
      if (!slot || !usrHash)
        throw new Error(`${chosen.file}: options name no USR slot or usrhash: ${chosen.options}`);
      const nspawnArgs = [
        `--bind=${p.esp}:${IN_MACHINE.esp}`,
        `--bind=${path.dirname(p.disk)}:${path.dirname(IN_MACHINE.disk)}`,
        `--bind-ro=${p.boot}:${IN_MACHINE.boot}`,
      ];
      if (usrHash !== imageRootHash)
        nspawnArgs.unshift(`--bind-ro=${unpackUsr(p.disk, slot, usrCache)}:/usr`);
      return { nspawnArgs, initArgs: [`systemd.verity_usr_data=PARTLABEL=${slot}`] };
    },
  };
}

/** The slot's /usr unpacked (once per distinct squashfs content), as the initrd would mount it. */
function unpackUsr(disk: string, label: string, cache: string): string {
  const offset = partitionOffset(disk, label);
  const length = squashfsLength(disk, offset);
  const dir = path.join(cache, sha256Range(disk, offset, length));
  if (!existsSync(dir)) {
    // Unpacked aside and renamed, so a machine never sees half a /usr.
    const tmp = `${dir}.${process.pid}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    // Debian 12's unsquashfs (4.5.1) has no -offset: the slot's bytes go to a file first.
    const image = `${tmp}.squashfs`;
    mkdirSync(cache, { recursive: true });
    execFileSync("dd", [
      `if=${disk}`,
      `of=${image}`,
      "bs=1M",
      `skip=${offset}`,
      `count=${length}`,
      "iflag=skip_bytes,count_bytes",
      "status=none",
    ]);
    try {
      execFileSync("unsquashfs", ["-q", "-n", "-d", tmp, image], { stdio: ["ignore", "ignore", "pipe"] });
    } finally {
      rmSync(image, { force: true });
    }
    renameSync(tmp, dir);
  }
  return dir;
}
