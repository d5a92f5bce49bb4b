// Refusals (a connection over a cap, a follow over its limit) are logged at warn level with the
// client, but at most once per interval per kind, so a flood cannot also flood the journal: the
// first refusal of a burst is logged at once, and the next logged line of that kind says how many
// were left out in between.

import type { Logger } from "./log.js";

export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export type RefusalLog = (kind: string, fields: Record<string, unknown>, message: string) => void;

export function refusalLog(
  log: Logger,
  intervalMs = REFUSAL_LOG_INTERVAL_MS,
  now: () => number = Date.now,
): RefusalLog {
  const byKind = new Map<string, { lastAt: number; suppressed: number }>();
  return (kind, fields, message) => {
    const at = now();
    const seen = byKind.get(kind);
    if (seen !== undefined && at - seen.lastAt < intervalMs) {
      seen.suppressed++;
      return;
    }
    const suppressed = seen?.suppressed ?? 0;
    byKind.set(kind, { lastAt: at, suppressed: 0 });
    log.warn({ refusal: kind, ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, message);
  };
}
