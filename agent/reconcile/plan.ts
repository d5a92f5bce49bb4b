// The machine agent's plan (fleet's agent/reconcile.go): the tasks that take what this machine has
// loaded to what the engine wants here. Pure; reconciler.ts applies the tasks through systemd.

import { compare } from "../engine/eligibility.js";

export interface DesiredUnit {
  name: string;
  hash: string;
  state: "loaded" | "launched";
}

export interface CurrentUnit {
  name: string;
  /** Hash of the unit file the agent wrote; undefined when it does not know. */
  hash: string | undefined;
  /** The agent has issued a start since loading the unit (fleet's agent cache). */
  launched: boolean;
  /** systemd's ActiveState. */
  activeState: string;
}

export type Task = {
  kind: "load" | "unload" | "start" | "stop";
  unit: string;
  /** The unit file version to load (load tasks only). */
  hash?: string;
  reason: string;
};

/** ActiveStates in which a unit is running or about to be. */
const RUNNING = new Set(["active", "activating", "reloading"]);

/**
 * Tasks in unit-name order, and per unit stop → unload → load → start. A launched unit that failed
 * or exited is not started again: `launched` stays set, and the engine moves failed units instead.
 */
export function plan(desired: DesiredUnit[], current: CurrentUnit[]): Task[] {
  const want = new Map(desired.map((d) => [d.name, d]));
  const have = new Map(current.map((c) => [c.name, c]));
  const names = [...new Set([...want.keys(), ...have.keys()])].sort(compare);
  const tasks: Task[] = [];
  for (const name of names) {
    const d = want.get(name);
    const c = have.get(name);
    const running = c !== undefined && (c.launched || RUNNING.has(c.activeState));
    if (!d) {
      const reason = "no longer scheduled here";
      if (running) tasks.push({ kind: "stop", unit: name, reason });
      tasks.push({ kind: "unload", unit: name, reason });
    } else if (!c || c.hash !== d.hash) {
      const reason = c ? "unit file changed" : "scheduled here";
      if (c) {
        if (running) tasks.push({ kind: "stop", unit: name, reason });
        tasks.push({ kind: "unload", unit: name, reason });
      }
      tasks.push({ kind: "load", unit: name, hash: d.hash, reason });
      if (d.state === "launched") tasks.push({ kind: "start", unit: name, reason });
    } else if (d.state === "loaded" && c.launched) {
      tasks.push({ kind: "stop", unit: name, reason: "desired state is loaded" });
    } else if (d.state === "launched" && !c.launched) {
      tasks.push({ kind: "start", unit: name, reason: "desired state is launched" });
    }
  }
  return tasks;
}
