// Blocking waits, as fleetctl's. fleet polls every 250 ms and gives each
// "attempt" 2 s; --block-attempts=0 waits forever. Flotilla keeps that pacing but defaults to
// a finite budget (fleet#559, #964: `fleetctl start` hanging on unschedulable units), and when it
// gives up it reports the server's `reason` for the unit if there is one.

import type { WireUnit, WireUnitState } from "../agent/api/schema.js";
import type { CurrentState } from "../agent/model.js";
import { isGlobalUnit } from "./format.js";

export const POLL_INTERVAL_MS = 250;
export const ATTEMPT_MS = 2000;
/** Used when --block-attempts is not given: 10 × 2 s = 20 s. */
export const DEFAULT_BLOCK_ATTEMPTS = 10;

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** How long to block: `attempts` windows of ATTEMPT_MS, or forever when 0. */
export interface WaitBudget {
  attempts: number;
}

/**
 * Calls `probe` every POLL_INTERVAL_MS until it returns a value or the budget is spent.
 * A probe that throws counts as "not yet" (fleet logs and keeps polling); the last error is kept.
 */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined>,
  budget: WaitBudget,
  clock: Clock,
): Promise<{ value: T } | { lastError?: unknown }> {
  const deadline =
    budget.attempts > 0 ? clock.now() + budget.attempts * ATTEMPT_MS : Number.POSITIVE_INFINITY;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return { value };
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (clock.now() >= deadline) return lastError === undefined ? {} : { lastError };
    await clock.sleep(Math.min(POLL_INTERVAL_MS, deadline - clock.now()));
  }
}

export type WaitResult = { ok: true; unit: WireUnit } | { ok: false; error: string };

/**
 * Waits until the unit's currentState (desiredState for global units, which have no single
 * current state) equals `target`. The error text follows "Error waiting for units: ".
 */
export async function waitForUnitState(
  name: string,
  target: CurrentState,
  getUnit: (name: string) => Promise<WireUnit | undefined>,
  budget: WaitBudget,
  clock: Clock,
): Promise<WaitResult> {
  let last: WireUnit | undefined;
  const result = await pollUntil(
    async () => {
      const u = await getUnit(name);
      last = u;
      if (u === undefined) return undefined;
      const state = isGlobalUnit(u) ? u.desiredState : u.currentState;
      return state === target ? u : undefined;
    },
    budget,
    clock,
  );
  if ("value" in result) return { ok: true, unit: result.value };
  if (last?.reason) return { ok: false, error: `unit ${name} cannot be scheduled: ${last.reason}` };
  return {
    ok: false,
    error: `timed out waiting for unit ${name} to report state ${target}${causeSuffix(result)}`,
  };
}

/**
 * After `launched`, fleetctl start also waits for systemd to report the unit loaded and active
 * (GET /state/{name}). The error names the last systemd state seen, which fleet did not.
 */
export async function waitForSystemdActive(
  name: string,
  getState: (name: string) => Promise<WireUnitState | undefined>,
  budget: WaitBudget,
  clock: Clock,
): Promise<{ ok: true } | { ok: false; error: string }> {
  let last: WireUnitState | undefined;
  const result = await pollUntil(
    async () => {
      last = await getState(name);
      return last?.systemdActiveState === "active" && last.systemdLoadState === "loaded" ? true : undefined;
    },
    budget,
    clock,
  );
  if ("value" in result) return { ok: true };
  const seen = last
    ? ` (systemd: ${last.systemdLoadState ?? "-"}/${last.systemdActiveState ?? "-"}/${last.systemdSubState ?? "-"})`
    : "";
  return {
    ok: false,
    error: `timed out waiting for unit ${name} to report active state${seen}${causeSuffix(result)}`,
  };
}

function causeSuffix(result: { lastError?: unknown }): string {
  return result.lastError instanceof Error ? ` (last error: ${result.lastError.message})` : "";
}
