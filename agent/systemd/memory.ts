// The UnitManager port in memory: one simulated systemd per instance, cheap enough to run many
// machines in one process. It keeps systemd's split between unit files on disk and units loaded
// in memory: a written or removed file takes effect only at reload(), a running unit whose file is
// gone keeps running (loadState not-found) until it stops, and a stop passes through
// `deactivating` before `inactive`. It is stricter than systemd in one way: starting a unit whose
// file was written after the last reload fails, so a caller that forgets the reload is caught.

import { EventEmitter } from "node:events";
import type { SystemdUnitState, UnitManager } from "./port.js";

export interface MemoryUnitManagerOptions {
  /** The machine's own units (name → unit file path), loaded and active from the start. */
  hostUnits?: Record<string, string>;
  /** How long a start call takes to return (the D-Bus round trip). Default 0. */
  startCallMs?: number;
  /** How long a unit takes from its stop job to `inactive`. Default 0 (the next tick). */
  stopMs?: number;
}

interface LoadedUnit extends SystemdUnitState {
  /** The file contents systemd read at the last reload; undefined once the file is gone. */
  contents: string | undefined;
}

/** Counters a test or a benchmark reads to check how the port was used. */
export interface MemoryUnitManagerStats {
  reloads: number;
  starts: number;
  stops: number;
  /** Most start calls in flight at once. */
  maxConcurrentStarts: number;
  /** Calls that touched a host unit (write, remove, start, stop, reset): must stay empty. */
  hostUnitCalls: string[];
}

export class MemoryUnitManager extends EventEmitter<{ change: [] }> implements UnitManager {
  /** Unit files the agent wrote, by name (the agent's unit directory). */
  readonly files = new Map<string, string>();
  /** Units systemd has in memory, by name. */
  readonly units = new Map<string, LoadedUnit>();
  readonly stats: MemoryUnitManagerStats = {
    reloads: 0,
    starts: 0,
    stops: 0,
    maxConcurrentStarts: 0,
    hostUnitCalls: [],
  };
  /** Names whose next writeUnit fails (injected faults). */
  readonly failWrites = new Set<string>();
  /** Names whose start jobs fail: the unit ends up `failed`. */
  readonly failStarts = new Set<string>();
  private readonly host: Map<string, string>;
  private startsInFlight = 0;

  constructor(private readonly opts: MemoryUnitManagerOptions = {}) {
    super();
    this.host = new Map(Object.entries(opts.hostUnits ?? {}));
    for (const name of this.host.keys())
      this.units.set(name, { contents: "", loadState: "loaded", activeState: "active", subState: "running" });
  }

  async writeUnit(name: string, contents: string, _enable: boolean): Promise<void> {
    this.touch("write", name);
    if (this.failWrites.delete(name)) throw new Error(`injected failure writing ${name}`);
    this.files.set(name, contents);
  }

  async removeUnit(name: string): Promise<void> {
    this.touch("remove", name);
    this.files.delete(name);
  }

  async reload(): Promise<void> {
    this.stats.reloads++;
    for (const [name, contents] of this.files) {
      const unit = this.units.get(name);
      if (unit) {
        unit.contents = contents;
        unit.loadState = "loaded";
      } else
        this.units.set(name, { contents, loadState: "loaded", activeState: "inactive", subState: "dead" });
    }
    for (const [name, unit] of this.units) {
      if (this.files.has(name) || this.host.has(name)) continue;
      if (unit.activeState === "inactive") this.units.delete(name);
      else {
        unit.contents = undefined;
        unit.loadState = "not-found";
      }
    }
    this.emit("change");
  }

  async resetFailed(name: string): Promise<void> {
    this.touch("reset-failed", name);
    const unit = this.units.get(name);
    if (unit?.activeState !== "failed") return;
    this.set(name, unit, "inactive", "dead");
  }

  async start(name: string): Promise<void> {
    this.touch("start", name);
    this.stats.starts++;
    this.startsInFlight++;
    this.stats.maxConcurrentStarts = Math.max(this.stats.maxConcurrentStarts, this.startsInFlight);
    try {
      if (this.opts.startCallMs) await sleep(this.opts.startCallMs);
      const unit = this.units.get(name);
      if (unit?.contents === undefined) throw new Error(`Unit ${name} not found.`);
      if (unit.activeState === "active") return;
      this.set(name, unit, "activating", "start");
      setImmediate(() => {
        if (unit.activeState !== "activating") return;
        if (this.failStarts.has(name)) this.set(name, unit, "failed", "failed");
        else this.set(name, unit, "active", "running");
      });
    } finally {
      this.startsInFlight--;
    }
  }

  async stop(name: string): Promise<void> {
    this.touch("stop", name);
    this.stats.stops++;
    const unit = this.units.get(name);
    if (!unit || unit.activeState === "inactive" || unit.activeState === "failed") return;
    this.set(name, unit, "deactivating", "stop-sigterm");
    const done = () => {
      if (unit.activeState === "deactivating") this.set(name, unit, "inactive", "dead");
    };
    if (this.opts.stopMs) setTimeout(done, this.opts.stopMs);
    else setImmediate(done);
  }

  async loadedFiles(): Promise<Map<string, string>> {
    return new Map(this.files);
  }

  async states(names: string[]): Promise<Map<string, SystemdUnitState>> {
    const out = new Map<string, SystemdUnitState>();
    for (const name of names) {
      const unit = this.units.get(name);
      if (unit)
        out.set(name, { loadState: unit.loadState, activeState: unit.activeState, subState: unit.subState });
    }
    return out;
  }

  async hostUnits(names: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const name of names) {
      const path = this.host.get(name);
      if (path !== undefined) out.set(name, path);
    }
    return out;
  }

  /** A running unit exits with an error (its process died and systemd gave up on it). */
  crash(name: string): void {
    const unit = this.units.get(name);
    if (unit) this.set(name, unit, "failed", "failed");
  }

  private set(name: string, unit: LoadedUnit, activeState: string, subState: string): void {
    unit.activeState = activeState;
    unit.subState = subState;
    // A unit whose file is gone leaves memory once it is no longer running, as after a reload.
    if (unit.contents === undefined && activeState === "inactive") this.units.delete(name);
    this.emit("change");
  }

  private touch(call: string, name: string): void {
    if (this.host.has(name)) this.stats.hostUnitCalls.push(`${call} ${name}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
