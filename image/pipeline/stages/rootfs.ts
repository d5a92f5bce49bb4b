// Stage 1: the Debian rootfs from the definition's package set (mmdebstrap, no chroot tricks
// beyond its hooks). dracut's config and our module go in before any package so the kernel's
// postinst already builds the initrd we want.

import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { StageCache, StageResult } from "../cache.js";
import type { Definition } from "../definition.js";
import { hashTree, run, stageCode } from "../util.js";

const EATMYDATA = "/usr/share/mmdebstrap/hooks/eatmydata";

export async function rootfsStage(
  cache: StageCache,
  def: Definition,
  imageDir: string,
): Promise<StageResult> {
  const dracutDir = join(imageDir, "dracut");
  const mmdebstrapVersion = (await run("mmdebstrap", ["--version"])).trim();
  const inputs = {
    code: await stageCode("rootfs"),
    def: JSON.stringify([def.suite, def.sources, def.packages, def.dpkgExclude, def.dpkgKeep]),
    dracut: await hashTree(dracutDir),
    mmdebstrapVersion,
  };
  return cache.stage("rootfs", inputs, async (dir) => {
    const tree = join(dir, "tree");
    const essentialHook = [
      `mkdir -p "$1/etc/dracut.conf.d" "$1/usr/lib/dracut/modules.d"`,
      `cp ${dracutDir}/flotilla.conf "$1/etc/dracut.conf.d/50-flotilla.conf"`,
      `cp -r ${dracutDir}/99flotilla-emergency "$1/usr/lib/dracut/modules.d/"`,
    ].join(" && ");
    // The kernel's initrd is built by dracut's own hook; build it here only if that did not happen.
    const customizeHook = [
      `set -e`,
      `rm -f "$1/etc/kernel/postinst.d/zz-systemd-boot" "$1/etc/kernel/postrm.d/zz-systemd-boot"`,
      `kver=$(ls "$1/usr/lib/modules")`,
      `[ -f "$1/boot/initrd.img-$kver" ] || chroot "$1" dracut --force --kver "$kver" "/boot/initrd.img-$kver"`,
    ].join("\n");
    await writeFile(join(dir, "customize-hook.sh"), `${customizeHook}\n`);
    const args = [
      "--mode=root",
      "--variant=essential",
      '--aptopt=Apt::Install-Recommends "false"',
      `--include=${def.packages.join(",")}`,
      ...def.dpkgExclude.map((p) => `--dpkgopt=path-exclude=${p}`),
      ...def.dpkgKeep.map((p) => `--dpkgopt=path-include=${p}`),
      `--hook-dir=${EATMYDATA}`,
      `--essential-hook=${essentialHook}`,
      `--customize-hook=sh ${join(dir, "customize-hook.sh")} "$1"`,
      def.suite,
      tree,
      ...def.sources,
    ];
    await run("mmdebstrap", args, { stream: true, env: { SOURCE_DATE_EPOCH: "1700000000" } });
  });
}
