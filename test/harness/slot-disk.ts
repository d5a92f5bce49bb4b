// A sparse GPT disk file with the image's four slot partitions (labels and type GUIDs as the image
// builds them), for the updater's real partition code on the host or in an nspawn machine. Nothing
// is allocated up front: a 2 GiB layout costs only what is written into it.

import { execFileSync } from "node:child_process";

const USR_TYPE = "8484680C-9521-48C6-9C11-B0720656F69E";
const VERITY_TYPE = "77FF5F63-E7B6-4633-ACF4-1565B864C0E6";

export function makeSlotDisk(file: string, sizes: { usrMiB: number; verityMiB: number }): void {
  const parts: [string, string, number][] = [
    ["USR-A", USR_TYPE, sizes.usrMiB],
    ["USR-B", USR_TYPE, sizes.usrMiB],
    ["USR-A-VERITY", VERITY_TYPE, sizes.verityMiB],
    ["USR-B-VERITY", VERITY_TYPE, sizes.verityMiB],
  ];
  // 1 MiB for the GPT and alignment at each end.
  const total = parts.reduce((n, [, , mib]) => n + mib, 0) + 2;
  execFileSync("truncate", ["-s", `${total}M`, file]);
  const args = parts.flatMap(([label, type, mib], i) => [
    `--new=${i + 1}:0:+${mib}M`,
    `--typecode=${i + 1}:${type}`,
    `--change-name=${i + 1}:${label}`,
  ]);
  execFileSync("sgdisk", ["--clear", ...args, file], { stdio: "ignore" });
}
