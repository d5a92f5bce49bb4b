// The agent's loops: the engine and reconcile passes on timers and on the registry changes
// routing.ts sends them, and state publishing on systemd's changes. Shared by main.ts and the scale
// bench (bench/scale.ts), which runs many simulated machines in one process.

import { coalesced } from "./coalesce.js";
import type { AgentConfig } from "./config.js";
import type { Engine } from "./engine/engine.js";
import { timePass } from "./metrics.js";
import type { Reconciler } from "./reconcile/reconciler.js";
import type { Wakes } from "./routing.js";
import type { UnitManager } from "./systemd/port.js";

/**
 * How long a wake waits for more changes before the pass runs. A pass already running absorbs
 * every wake that arrives meanwhile (coalesced), so this only gathers the first changes of a burst
 * (a Txn's events, an API client's concurrent PUTs) into one pass; it is on the path of every
 * change, twice (engine, then the machine), so it is short. Not shorter than 50 ms: a machine key
 * deleted by hand is written back within ~30–45 ms, and an engine pass inside that gap moves the
 * machine's units (restarting them); at 10 ms a clean-clone run caught that. The engine does not
 * yet wait to confirm a machine's loss (docs/architecture.md, "Cost of a change").
 */
export const WAKE_DELAY_MS = 50;

export interface Loops {
  /** Wakes the loops a batch of registry changes concerns (routing.ts). */
  wake(w: Wakes): void;
  /** The view was listed again: anything may have changed. */
  resync(): void;
  stop(): void;
}

/** Timers plus the view's changes; a change only wakes the loops that care about it. */
export function startLoops(
  cfg: Pick<AgentConfig, "engineIntervalMs" | "agentIntervalMs">,
  engine: Pick<Engine, "pass"> | undefined,
  reconciler: Pick<Reconciler, "trigger" | "publishStates">,
  systemd: Pick<UnitManager, "on">,
  updates: { checkRequested(): void; rebootGroupChanged(): void },
): Loops {
  const timers: NodeJS.Timeout[] = [];
  const enginePass = coalesced(() => timePass("engine", engine?.pass() ?? Promise.resolve()));
  const runEngine = () => void enginePass();
  const debounce = (fn: () => void, ms: number) => {
    let t: NodeJS.Timeout | undefined;
    return () => {
      if (t) return;
      t = setTimeout(() => {
        t = undefined;
        fn();
      }, ms);
    };
  };
  const soonEngine = debounce(runEngine, WAKE_DELAY_MS);
  const soonAgent = debounce(() => void reconciler.trigger("registry changed"), WAKE_DELAY_MS);
  const soonPublish = debounce(() => void reconciler.publishStates(), 100);

  timers.push(setInterval(runEngine, cfg.engineIntervalMs));
  timers.push(setInterval(() => void reconciler.trigger("periodic"), cfg.agentIntervalMs));
  runEngine();
  systemd.on("change", soonPublish);

  return {
    wake(w) {
      if (w.engine) soonEngine();
      if (w.agent) soonAgent();
      if (w.updateCheck) updates.checkRequested();
      if (w.rebootGroup) updates.rebootGroupChanged();
    },
    resync() {
      soonEngine();
      soonAgent();
    },
    stop() {
      for (const t of timers) clearInterval(t);
    },
  };
}
