// Which of the agent's loops a registry change wakes. Pure, so the rules are unit-tested; main.ts
// feeds it every batch of watched changes before the view applies them (docs/architecture.md).

import type { Keys } from "./registry/keys.js";
import type { ViewEvent } from "./registry/view.js";
import { parsePlacement } from "./registry/view.js";
import { CHECK_ALL } from "./update/records.js";

export interface RouteContext {
  keys: Keys;
  machineID: string;
  /** This machine's reboot group. */
  updateGroup: string;
  /** Where the view placed a unit before this batch (undefined: nowhere). */
  placedBefore(unit: string): string | undefined;
}

export interface Wakes {
  /** The engine's pass: anything it decides from changed. */
  engine: boolean;
  /** This machine's reconcile pass: a unit, a placement to or from here, or a machine changed. */
  agent: boolean;
  /** The updater: a check was requested for this machine or for all. */
  updateCheck: boolean;
  /** The updater: this machine's reboot group changed (another holder came or went, config). */
  rebootGroup: boolean;
}

export function route(ctx: RouteContext, events: readonly ViewEvent[]): Wakes {
  const wakes: Wakes = { engine: false, agent: false, updateCheck: false, rebootGroup: false };
  const { keys } = ctx;
  for (const ev of events) {
    const key = ev.key;
    // Update records change with every progress report: they concern no engine or unit.
    if (key.startsWith(keys.updates())) {
      if (key.startsWith(keys.updateChecks())) {
        const target = key.slice(keys.updateChecks().length);
        if (target === ctx.machineID || target === CHECK_ALL) wakes.updateCheck = true;
      } else if (
        key.startsWith(keys.updateGroup(ctx.updateGroup)) &&
        key !== keys.updateGroupSeq(ctx.updateGroup) &&
        // Our own holder record changes because we took or left the slot: nothing to retry.
        key !== keys.updateHolder(ctx.updateGroup, ctx.machineID)
      )
        wakes.rebootGroup = true;
      continue;
    }
    const k = keys.classify(key);
    // The engine's own records and discovery's do not change its decisions.
    if (k?.family === "pending" || k?.family === "failures" || k?.family === "services") continue;
    wakes.engine = true;
    switch (k?.family) {
      case "units":
      case "machines":
      case "metadata":
        wakes.agent = true;
        break;
      case "schedule":
        if (ctx.placedBefore(k.rest) === ctx.machineID || placedNow(ev) === ctx.machineID) wakes.agent = true;
        break;
    }
  }
  return wakes;
}

function placedNow(ev: ViewEvent): string | undefined {
  if (ev.type !== "put") return undefined;
  try {
    return parsePlacement(ev.value).machineID;
  } catch {
    // A corrupt placement: the view drops it; whoever held the unit must look again.
    return undefined;
  }
}
