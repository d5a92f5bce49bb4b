// Engine bench: the pure scheduler (`decide`) on synthetic clusters, no I/O. Prints the time to
// place every unit on an empty cluster, the time of a pass with nothing to do, and the pass after
// one machine is lost, each with the etcd transactions its writes take when batched (engine.ts)
// against one per write before.
// Usage: npx tsx bench/engine.ts [machines×units ...]   (default: 5×5000 1000×10000)
//
// The unit mix exercises every index: mostly plain units, 5 % with MachineMetadata, 5 % in a
// conflict group (web@N with Conflicts=web@*), 5 % MachineOf sidecars, 1 % Replaces, two global
// units. In the small cluster most of the conflict group cannot be placed, so the idle pass also
// works out pending reasons.

import { batches } from "../agent/engine/engine.js";
import { decide, type EngineAction, type EngineInput, type SchedUnit } from "../agent/engine/scheduler.js";
import type { Machine, Placement, Requirements } from "../agent/model.js";
import { ENGINE_TXN_MAX_WRITES } from "../agent/registry/registry.js";

const REGIONS = ["a", "b", "c"];

function machines(n: number): Machine[] {
  return Array.from({ length: n }, (_, i) => ({
    id: i.toString(16).padStart(32, "0"),
    publicIP: "10.0.0.1",
    metadata: { region: REGIONS[i % REGIONS.length] as string },
    version: "bench",
  }));
}

function unit(name: string, req: Partial<Requirements> = {}): SchedUnit {
  return {
    name,
    options: [],
    hash: "h",
    desiredState: "launched",
    requirements: { machineOf: [], metadata: {}, conflicts: [], global: false, replaces: [], ...req },
  };
}

function units(n: number): SchedUnit[] {
  const out: SchedUnit[] = [
    unit("global-a.service", { global: true }),
    unit("global-b.service", { global: true }),
  ];
  for (let i = 0; out.length < n; i++) {
    const pad = String(i).padStart(5, "0");
    switch (i % 20) {
      case 0:
        out.push(unit(`meta-${pad}.service`, { metadata: { region: ["a", "b"] } }));
        break;
      case 1:
        out.push(unit(`web@${pad}.service`, { conflicts: ["web@*.service"] }));
        break;
      case 2:
        out.push(
          unit(`side-${pad}.service`, { machineOf: [`app-${String(i + 1).padStart(5, "0")}.service`] }),
        );
        break;
      case 3:
        out.push(unit(`app-${pad}.service`));
        break;
      case 4:
        if (i % 100 === 4 && i >= 20)
          out.push(
            unit(`new-${pad}.service`, { replaces: [`old-${String(i - 20).padStart(5, "0")}.service`] }),
          );
        else out.push(unit(`old-${pad}.service`));
        break;
      default:
        out.push(unit(`app-${pad}.service`));
    }
  }
  return out;
}

function input(m: number, u: number): EngineInput {
  return {
    now: 1_000_000,
    units: units(u),
    schedule: new Map(),
    pending: new Map(),
    failures: new Map(),
    machines: machines(m),
    states: [],
    settling: false,
    policy: { maxMoves: 3, backoffBaseMs: 1000 },
  };
}

/** The next pass's input after the engine's writes succeeded. */
function applied(inp: EngineInput, actions: EngineAction[]): EngineInput {
  const schedule = new Map<string, Placement>(inp.schedule);
  const pending = new Map(inp.pending);
  for (const a of actions) {
    if (a.kind === "schedule")
      schedule.set(a.unit, { machineID: a.machineID, at: inp.now, reason: a.reason });
    if (a.kind === "unschedule") schedule.delete(a.unit);
    if (a.kind === "pending") pending.set(a.unit, { reason: a.reason, at: inp.now });
    if (a.kind === "clear-pending") pending.delete(a.unit);
  }
  return { ...inp, schedule, pending };
}

function timed<T>(fn: () => T): { value: T; ms: number } {
  const t0 = performance.now();
  const value = fn();
  return { value, ms: performance.now() - t0 };
}

const sizes = (process.argv.length > 2 ? process.argv.slice(2) : ["5x5000", "1000x10000"]).map((s) => {
  const [m, u] = s.split(/[x×]/).map(Number);
  if (!m || !u) throw new Error(`bench/engine.ts: size ${JSON.stringify(s)} is not MACHINESxUNITS`);
  return { m, u };
});

for (const { m, u } of sizes) {
  let inp = input(m, u);
  const place = timed(() => decide(inp));
  let passes = 1;
  inp = applied(inp, place.value);
  // Replaces and MachineOf can take a second pass to settle; the idle figure is for a settled cluster.
  for (let more = decide(inp); more.length > 0 && passes < 5; more = decide(inp), passes++)
    inp = applied(inp, more);
  const idle: number[] = [];
  for (let i = 0; i < 5; i++) {
    const pass = timed(() => decide(inp));
    if (pass.value.length !== 0)
      throw new Error(`bench/engine.ts: the idle pass wanted ${pass.value.length} actions`);
    idle.push(pass.ms);
  }
  idle.sort((a, b) => a - b);
  const lost = inp.machines[0]?.id;
  const failover = timed(() => decide({ ...inp, machines: inp.machines.filter((m) => m.id !== lost) }));
  const txns = (actions: EngineAction[]) =>
    `${batches(actions, ENGINE_TXN_MAX_WRITES).length} txns (one per write: ${actions.length})`;
  console.log(
    `${m} machines × ${u} units (${inp.schedule.size} placed, ${inp.pending.size} pending):\n` +
      `  place all        ${place.ms.toFixed(0).padStart(6)} ms, ${txns(place.value)}, settled after ${passes} pass(es)\n` +
      `  nothing to do    ${(idle[2] ?? 0).toFixed(1).padStart(6)} ms (median of 5), 0 txns\n` +
      `  a machine lost   ${failover.ms.toFixed(1).padStart(6)} ms, ${txns(failover.value)}`,
  );
}
