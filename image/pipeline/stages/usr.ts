// Stage 3: the /usr image (squashfs) and its dm-verity hash tree, kept in a separate file
// because systemd 252 has no hash-offset option: the tree goes to the slot's -VERITY partition.

import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { StageCache, StageResult } from "../cache.js";
import type { Definition } from "../definition.js";
import { BuildError, run, sha256, stageCode } from "../util.js";

export interface UsrResult extends StageResult {
  image: string;
  verity: string;
  rootHash: string;
  imageBytes: number;
  verityBytes: number;
}

export async function usrStage(
  cache: StageCache,
  def: Definition,
  customize: StageResult,
): Promise<UsrResult> {
  const inputs = {
    customize: customize.key,
    code: await stageCode("usr"),
    compression: JSON.stringify(def.usr),
  };
  const r = await cache.stage("usr", inputs, async (dir) => {
    const image = join(dir, "usr.squashfs");
    const level =
      def.usr.compression === "gzip" || def.usr.compression === "zstd"
        ? ["-Xcompression-level", String(def.usr.level)]
        : [];
    await run("mksquashfs", [
      join(customize.dir, "tree/usr"),
      image,
      "-comp",
      def.usr.compression,
      ...level,
      "-noappend",
      "-no-progress",
      "-quiet",
      // Fixed times: the same tree gives the same image, hence the same root hash.
      "-mkfs-time",
      "0",
      "-all-time",
      "0",
    ]);
    // Salt and UUID derived from the inputs, for the same reason.
    const salt = sha256(`salt ${customize.key}`);
    const u = sha256(`uuid ${customize.key}`);
    const uuid = `${u.slice(0, 8)}-${u.slice(8, 12)}-4${u.slice(13, 16)}-8${u.slice(17, 20)}-${u.slice(20, 32)}`;
    const out = await run("veritysetup", [
      "format",
      "--data-block-size=4096",
      "--hash-block-size=4096",
      `--salt=${salt}`,
      `--uuid=${uuid}`,
      image,
      join(dir, "usr.verity"),
    ]);
    const rootHash = /Root hash:\s+([0-9a-f]{64})/.exec(out)?.[1];
    if (!rootHash) throw new BuildError(`veritysetup printed no root hash:\n${out}`);
    await writeFile(join(dir, "roothash"), rootHash);
  });
  const image = join(r.dir, "usr.squashfs");
  const verity = join(r.dir, "usr.verity");
  return {
    ...r,
    image,
    verity,
    rootHash: (await readFile(join(r.dir, "roothash"), "utf8")).trim(),
    imageBytes: (await stat(image)).size,
    verityBytes: (await stat(verity)).size,
  };
}
