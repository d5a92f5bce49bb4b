// Stage 4: the ROOT filesystem (ext4): everything but /usr, i.e. /etc and /var as shipped.
// It is small here and grows to fill the disk on first boot (flotilla-growroot.service).

import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { StageCache, StageResult } from "../cache.js";
import { checkFits } from "../definition.js";
import { log, MiB, run, stageCode } from "../util.js";

/** Bytes ext4 needs for the tree: data blocks plus ~15% for metadata, journal and inodes. */
async function neededBytes(tree: string): Promise<number> {
  const out = await run("du", ["-s", "--block-size=1", "--exclude=./usr", "."], { cwd: tree });
  return Math.ceil(Number(out.split(/\s/)[0]) * 1.15) + 16 * MiB;
}

export async function rootStage(
  cache: StageCache,
  customize: StageResult,
  label: string,
  sizeMiB: number,
): Promise<StageResult & { image: string }> {
  const tree = join(customize.dir, "tree");
  checkFits(label, await neededBytes(tree), sizeMiB * MiB);
  const inputs = {
    customize: customize.key,
    code: await stageCode("root"),
    label,
    size: String(sizeMiB),
  };
  const r = await cache.stage("root", inputs, async (dir) => {
    // A hard-linked view of the tree without /usr: mkfs.ext4 -d copies a whole directory.
    const staging = join(dir, "staging");
    await run("mkdir", ["-p", join(staging, "usr")]);
    for (const entry of await readdir(tree))
      if (entry !== "usr") await run("cp", ["-al", join(tree, entry), staging]);
    const image = join(dir, "root.ext4");
    await run("mkfs.ext4", ["-q", "-L", label, "-d", staging, image, `${sizeMiB}M`]);
    await run("rm", ["-rf", staging]);
    log("root", `${label}: ext4 ${sizeMiB} MiB`);
  });
  return { ...r, image: join(r.dir, "root.ext4") };
}
