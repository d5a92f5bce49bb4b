// Runs scripts/build-image from tests and the bench, and reads what it produced.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dirname, "../..");
export const IMAGE_DIR = join(REPO, "dist/image");

export interface BuildRun {
  status: number | null;
  stderr: string;
  seconds: number;
}

/**
 * Runs the build (synchronously: it is the only thing a test waits for at that point). Tests build
 * test images, which trust the committed test key (`--test-keys`) unless `testKeys` is false.
 */
export function buildImage(
  args: string[] = [],
  timeoutMs = 30 * 60_000,
  { testKeys = true }: { testKeys?: boolean } = {},
): BuildRun {
  const t0 = Date.now();
  // Niced like the VMs (image-vm.ts): the machines of tests running beside it come first.
  const argv = [join(REPO, "scripts/build-image"), ...(testKeys ? ["--test-keys"] : []), ...args];
  const r = spawnSync("nice", ["-n", "19", ...argv], {
    cwd: REPO,
    encoding: "utf8",
    timeout: timeoutMs,
  });
  return {
    status: r.status,
    stderr: `${r.stderr ?? ""}${r.error ? String(r.error) : ""}`,
    seconds: (Date.now() - t0) / 1000,
  };
}

/** Builds (or, warm, just re-checks) dist/image; throws with the build's output when it fails. */
export function ensureImage(): void {
  const r = buildImage();
  if (r.status !== 0)
    throw new Error(`scripts/build-image failed:\n${r.stderr.split("\n").slice(-30).join("\n")}`);
}

export interface Manifest {
  name: string;
  version: string;
  kernelVersion: string;
  verity: { rootHash: string };
  files: Record<string, { size: number; sha256: string }>;
  placeholderAgent: boolean;
}

export function readManifest(): Manifest {
  return JSON.parse(readFileSync(join(IMAGE_DIR, "payload/manifest.json"), "utf8")) as Manifest;
}

/**
 * Where a named variant is built, inside the clone's .cache so test files share it: a rebuild with
 * the same inputs reuses every stage. Each variant keeps its own stage cache (a cache keeps only
 * the newest output of each stage).
 */
export function variantDirs(name: string): { out: string; cache: string } {
  const dir = join(REPO, ".cache/image/variants", name);
  return { out: join(dir, "out"), cache: join(dir, "cache") };
}

export interface VariantOptions {
  /** Where the variant's dist (disk.raw, payload/, …) goes. */
  out: string;
  /** Stage cache of its own, so building the variant does not evict the main build's stages. */
  cache: string;
  version: string;
  /** Another agent bundle (e.g. one that never becomes healthy, for a release that must roll back). */
  agent?: string;
  /** A directory copied over the image's files (e.g. a health check that always fails). */
  extraFiles?: string;
}

/**
 * Builds the image again with another version (optionally another agent or extra files) into `out`. The
 * variant's cache starts with hard links to the main build's rootfs stage, which no stage modifies
 * in place, so only customize onwards is rebuilt (under a minute) and the main cache is untouched.
 */
export function buildVariant(v: VariantOptions): void {
  mkdirSync(v.cache, { recursive: true });
  for (const entry of readdirSync(join(REPO, ".cache/image"))) {
    const target = join(v.cache, entry);
    if (/^rootfs-[0-9a-f]{16}$/.test(entry) && !existsSync(target))
      execFileSync("cp", ["-al", join(REPO, ".cache/image", entry), target]);
  }
  const definition = JSON.parse(readFileSync(join(REPO, "image/definition.json"), "utf8"));
  definition.version = v.version;
  // Test releases trade size for build time: zstd level 3 packs /usr in seconds where the product's
  // level takes a minute or more, for a payload about 15% larger in the same format.
  definition.usr = { ...definition.usr, level: 3 };
  const defFile = join(v.cache, `definition-${v.version}.json`);
  writeFileSync(defFile, JSON.stringify(definition));
  const args = ["--definition", defFile, "--out", v.out, "--cache", v.cache];
  if (v.agent) args.push("--agent", v.agent);
  if (v.extraFiles) args.push("--extra-files", v.extraFiles);
  const t0 = Date.now();
  const r = buildImage(args);
  if (r.status !== 0)
    throw new Error(`building ${v.version} failed:\n${r.stderr.split("\n").slice(-30).join("\n")}`);
  console.log(`[image] test release ${v.version} built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}
