// Stage cache: each stage's output lives in .cache/image/<stage>-<key>/ where key hashes the
// stage's inputs (including the previous stages' keys), so an unchanged stage is reused.

import { existsSync } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { log, sha256 } from "./util.js";

export interface StageResult {
  key: string;
  dir: string;
  cached: boolean;
  seconds: number;
}

export class StageCache {
  readonly timings: Record<string, { seconds: number; cached: boolean }> = {};

  constructor(readonly root: string) {}

  /** Returns the stage's output dir, building it with `build(dir)` unless a finished one exists. */
  async stage(
    name: string,
    inputs: Record<string, string>,
    build: (dir: string) => Promise<void>,
  ): Promise<StageResult> {
    const key = sha256(JSON.stringify(Object.entries(inputs).sort())).slice(0, 16);
    const dir = join(this.root, `${name}-${key}`);
    const t0 = Date.now();
    if (existsSync(join(dir, ".complete"))) {
      log(name, `cached (${key})`);
      this.timings[name] = { seconds: 0, cached: true };
      return { key, dir, cached: true, seconds: 0 };
    }
    log(name, `building (${key})`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await build(dir);
    await writeFile(join(dir, ".complete"), `${new Date().toISOString()}\n`);
    const seconds = (Date.now() - t0) / 1000;
    this.timings[name] = { seconds, cached: false };
    log(name, `done in ${seconds.toFixed(1)} s`);
    await this.prune(name, dir);
    return { key, dir, cached: false, seconds };
  }

  /** Older outputs of a stage are hundreds of MiB each: keep only the newest. */
  private async prune(name: string, keep: string): Promise<void> {
    for (const entry of await readdir(this.root)) {
      const p = join(this.root, entry);
      if (p !== keep && new RegExp(`^${name}-[0-9a-f]{16}$`).test(entry))
        await rm(p, { recursive: true, force: true });
    }
  }
}
