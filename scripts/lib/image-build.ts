// Runs scripts/build-image from tests and the bench, and reads what it produced.

import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dirname, "../..");
export const IMAGE_DIR = join(REPO, "dist/image");

export interface BuildRun {
  status: number | null;
  stderr: string;
  seconds: number;
}

/** Runs the build (synchronously: it is the only thing a test waits for at that point). */
export function buildImage(args: string[] = [], timeoutMs = 30 * 60_000): BuildRun {
  const t0 = Date.now();
  const r = spawnSync(join(REPO, "scripts/build-image"), args, {
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
