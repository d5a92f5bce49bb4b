// Phased rollout (Bottlerocket-style waves, docs/updates.md): each machine has a position in
// [0,1) derived from its machine-id, and becomes eligible for a release when the first wave whose
// cumulative share covers that position has started.

import { createHash } from "node:crypto";
import { UpdateError } from "./errors.js";
import type { Manifest } from "./manifest.js";

/** `percent` of all machines (cumulative) may install `afterSeconds` after publishedAt. */
export interface Wave {
  percent: number;
  afterSeconds: number;
}

/**
 * Position of a machine for one release. The version is hashed in so that the same machines are not
 * always the canaries; within a release the position is fixed, so eligibility only grows with time.
 */
export function wavePosition(machineId: string, version: string): number {
  const h = createHash("sha256").update(`${machineId}\n${version}`).digest();
  return h.readUIntBE(0, 6) / 2 ** 48;
}

/** When this machine may install the manifest's release. */
export function eligibleAt(
  manifest: Pick<Manifest, "version" | "publishedAt" | "waves">,
  machineId: string,
): Date {
  const published = Date.parse(manifest.publishedAt);
  const position = wavePosition(machineId, manifest.version);
  // checkWaves guarantees the last wave is 100%, which covers every position in [0,1).
  const wave = manifest.waves?.find((w) => w.percent / 100 > position);
  return new Date(published + (wave?.afterSeconds ?? 0) * 1000);
}

/** Validates waves: percents rising to exactly 100, start times not decreasing. */
export function checkWaves(waves: unknown, where: string): Wave[] {
  const fail = (what: string): never => {
    throw new UpdateError("waves", `${where}: ${what}`);
  };
  if (!Array.isArray(waves) || waves.length === 0) fail("must be a non-empty list");
  const list = waves as unknown[];
  list.forEach((w, i) => {
    const { percent, afterSeconds } = (w ?? {}) as Partial<Wave>;
    if (typeof percent !== "number" || !(percent > 0 && percent <= 100))
      fail(`wave ${i + 1}: percent must be in (0, 100], got ${JSON.stringify(percent)}`);
    if (!Number.isSafeInteger(afterSeconds) || (afterSeconds as number) < 0)
      fail(`wave ${i + 1}: afterSeconds must be a non-negative integer, got ${JSON.stringify(afterSeconds)}`);
    const prev = list[i - 1] as Wave | undefined;
    if (prev && (percent as number) <= prev.percent)
      fail(`wave ${i + 1}: percent ${percent} does not exceed the previous wave's ${prev.percent}`);
    if (prev && (afterSeconds as number) < prev.afterSeconds)
      fail(`wave ${i + 1}: starts (${afterSeconds} s) before the previous wave (${prev.afterSeconds} s)`);
  });
  const last = list[list.length - 1] as Wave;
  if (last.percent !== 100) fail(`the last wave must reach 100%, not ${last.percent}%`);
  return list as Wave[];
}

const UNIT_SECONDS: Record<string, number> = { "": 1, s: 1, m: 60, h: 3600, d: 86400 };

/** `90`, `30s`, `15m`, `12h`, `14d` → seconds; undefined when it is none of those. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  return m ? Number(m[1]) * (UNIT_SECONDS[m[2] as string] as number) : undefined;
}

/** `10:0,50:1h,100:2d` (percent:delay, delay in seconds or with an s/m/h/d suffix) → waves. */
export function parseWaves(spec: string): Wave[] {
  const waves = spec.split(",").map((part) => {
    const m = /^\s*(\d+(?:\.\d+)?):(\d+)([smhd]?)\s*$/.exec(part);
    if (!m)
      throw new UpdateError(
        "waves",
        `waves "${spec}": "${part}" is not PERCENT:DELAY (e.g. 10:0,50:1h,100:2d)`,
      );
    return { percent: Number(m[1]), afterSeconds: Number(m[2]) * (UNIT_SECONDS[m[3] as string] as number) };
  });
  return checkWaves(waves, `waves "${spec}"`);
}
