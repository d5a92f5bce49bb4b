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
  const soonEngine = debounce(runEngine, 50);
  const soonAgent = debounce(() => void reconciler.trigger("registry changed"), 50);
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
