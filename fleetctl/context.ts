// What a command runs against: the API, output streams, the clock and the local directory.

import type { WireMachine } from "../agent/api/schema.js";
import type { FleetApi } from "./client.js";
import type { Clock } from "./wait.js";

export interface Writer {
  write(chunk: string): unknown;
}

export interface CommandContext {
  api: FleetApi;
  /** Writes one line to stdout; a newline is added unless present (fleetctl's stdout()). */
  out(line: string): void;
  /** Writes one line to stderr, same newline rule. */
  err(line: string): void;
  /** Writes raw bytes to stdout. */
  write(chunk: string): void;
  /** Relative unit-file paths resolve against this. */
  cwd: string;
  clock: Clock;
  /** The machine with this ID, fetched once per run; undefined if unknown or on error. */
  machine(id: string): Promise<WireMachine | undefined>;
  /** Ends commands that run until interrupted (`list-services --watch`). */
  signal?: AbortSignal;
}

export function lineWriter(w: Writer): (line: string) => void {
  return (line) => {
    w.write(line.endsWith("\n") ? line : `${line}\n`);
  };
}

/** fleet's cachedMachineState: one GET /machines per run, errors swallowed. */
export function machineCache(api: FleetApi): (id: string) => Promise<WireMachine | undefined> {
  let machines: Promise<Map<string, WireMachine>> | undefined;
  return async (id) => {
    machines ??= api.machines().then(
      (list) => new Map(list.map((m) => [m.id, m])),
      () => new Map(),
    );
    return (await machines).get(id);
  };
}
