// The fleetctl commands, as fleet v1.0's. Each returns the exit code; messages and exit
// codes are fleet's except where fleet's known bugs call for better, as noted.

import type {
  WireCommandOutput,
  WireMachine,
  WireService,
  WireUnit,
  WireUnitState,
  WireUpdates,
} from "../agent/api/schema.js";
import type { CurrentState, DesiredState } from "../agent/model.js";
import { mangleUnitName, serializeUnit } from "../agent/unit/index.js";
import type { GroupConfigChange, UpdateStatus } from "../agent/update/records.js";
import type { CommandContext } from "./context.js";
import {
  BAD_VERSION_COLUMNS,
  BAD_VERSION_FIELDS,
  compareStrings,
  type FieldContext,
  isGlobalUnit,
  LIST_MACHINES_FIELDS,
  LIST_SERVICES_FIELDS,
  LIST_UNIT_FILES_FIELDS,
  LIST_UNITS_FIELDS,
  parseFields,
  renderTable,
  UPDATE_GROUP_COLUMNS,
  UPDATE_GROUP_FIELDS,
  UPDATE_MACHINE_FIELDS,
  UPDATE_STATUS_COLUMNS,
  UPDATE_STATUS_FIELDS,
} from "./format.js";
import { type CreatingCommand, errorText, lazyCreateUnits, waitAndReport } from "./units.js";
import { pollUntil, type WaitBudget, waitForSystemdActive } from "./wait.js";

/** Parsed command flags, already typed and defaulted. */
export interface Flags {
  bool(name: string): boolean;
  int(name: string): number;
  str(name: string): string;
}

export type Command = (ctx: CommandContext, args: string[], flags: Flags) => Promise<number>;

/** --block-attempts as a budget: values ≤ 0 wait forever, as in fleet. */
function budget(flags: Flags): WaitBudget {
  return { attempts: Math.max(0, flags.int("block-attempts")) };
}

/** fleet's findUnits: the registry units named by the arguments, in argument order. */
/**
 * One unit from the registry, or undefined once fleet's message for this command is printed:
 * `unreadable` is followed by the error, `missing` stands alone.
 */
async function requireUnit(
  ctx: CommandContext,
  name: string,
  messages: { unreadable: string; missing: string },
): Promise<WireUnit | undefined> {
  let unit: WireUnit | undefined;
  try {
    unit = await ctx.api.unit(name);
  } catch (err) {
    ctx.err(`${messages.unreadable}${errorText(err)}`);
    return undefined;
  }
  if (unit === undefined) ctx.err(messages.missing);
  return unit;
}

async function findUnits(ctx: CommandContext, args: string[]): Promise<WireUnit[]> {
  const byName = new Map((await ctx.api.units()).map((u) => [u.name, u]));
  return args.map((a) => byName.get(mangleUnitName(a))).filter((u): u is WireUnit => u !== undefined);
}

/**
 * The registry units named by the arguments, or the exit code when there are none to act on:
 * fleet exits 0 for no arguments, 1 when the registry cannot be read.
 */
async function namedUnits(ctx: CommandContext, args: string[]): Promise<WireUnit[] | number> {
  if (args.length === 0) {
    ctx.err("No units given");
    return 0;
  }
  try {
    return await findUnits(ctx, args);
  } catch (err) {
    ctx.err(errorText(err));
    return 1;
  }
}

/**
 * The registry units named by the arguments of stop/unload/destroy, or the exit code when
 * there is nothing to do: fleet exits 0 for no arguments and for units that do not exist.
 */
async function existingUnits(ctx: CommandContext, args: string[]): Promise<WireUnit[] | number> {
  const units = await namedUnits(ctx, args);
  if (typeof units === "number") return units;
  if (units.length === 0) {
    ctx.err("Units not found in registry");
    return 0;
  }
  return units;
}

/** Go's %v of a []string. */
function goList(items: string[]): string {
  return `[${items.join(" ")}]`;
}

async function createThenTarget(
  ctx: CommandContext,
  args: string[],
  flags: Flags,
  command: CreatingCommand,
): Promise<number> {
  if (args.length === 0) {
    ctx.err("No units given");
    return 0;
  }
  const createError = await lazyCreateUnits(ctx, args, {
    command,
    replace: flags.bool("replace"),
    budget: budget(flags),
  });
  if (createError !== undefined) {
    ctx.err(`Error creating units: ${createError}`);
    return 1;
  }
  if (command === "submit") return 0;

  const target: DesiredState = command === "start" ? "launched" : "loaded";
  const verb = command === "start" ? "start" : "load";
  const failure = `Error ${command === "start" ? "starting" : "loading"} units: `;
  // Units already at the target are waited for and reported too: fleet skipped them silently,
  // so `start` on a unit that never came up looked like success (fleet#1091).
  const waiting: string[] = [];
  const triggered: string[] = [];
  for (const arg of args) {
    const name = mangleUnitName(arg);
    const unit = await requireUnit(ctx, name, {
      unreadable: `${failure}error retrieving unit ${name} from registry: `,
      missing: `${failure}unable to find unit ${name}`,
    });
    if (unit === undefined) return 1;
    const global = isGlobalUnit(unit);
    if (unit.desiredState !== target) {
      try {
        await ctx.api.setUnitTargetState(name, target);
      } catch (err) {
        ctx.err(`${failure}${errorText(err)}`);
        return 1;
      }
      if (global) ctx.out(`Triggered global unit ${name} ${verb}`);
      else triggered.push(name);
    }
    if (!global) waiting.push(name);
  }

  if (flags.bool("no-block")) {
    // fleet printed this twice for start (once per wait phase); once is enough.
    for (const name of triggered) ctx.out(`Triggered unit ${name} ${verb}`);
    return 0;
  }
  const errors = await waitAndReport(ctx, waiting, target, budget(flags));
  if (errors.length === 0 && command === "start") {
    const results = await Promise.all(
      waiting.map((n) => waitForSystemdActive(n, (x) => ctx.api.unitState(x), budget(flags), ctx.clock)),
    );
    for (const r of results) if (!r.ok) errors.push(r.error);
  }
  for (const e of errors) ctx.err(`Error waiting for units: ${e}`);
  return errors.length > 0 ? 1 : 0;
}

/** stop and unload: set the target state of the named registry units and wait for it. */
async function setAndWait(
  ctx: CommandContext,
  args: string[],
  flags: Flags,
  verb: "stop" | "unload",
): Promise<number> {
  const found = await existingUnits(ctx, args);
  if (typeof found === "number") return found;
  const units = found;
  const target: CurrentState = verb === "stop" ? "loaded" : "inactive";
  const waiting: string[] = [];
  for (const u of units) {
    const global = isGlobalUnit(u);
    if (!global) {
      if (verb === "stop" && u.currentState === "inactive") {
        ctx.err(`Unable to stop unit ${u.name} in state inactive`);
        return 1;
      }
      if (u.currentState === target) continue;
    }
    try {
      await ctx.api.setUnitTargetState(u.name, target);
    } catch (err) {
      // fleet ignored this error and then waited in vain.
      ctx.err(`Error ${verb === "stop" ? "stopping" : "unloading"} units: ${errorText(err)}`);
      return 1;
    }
    if (global) ctx.out(`Triggered global unit ${u.name} ${verb}`);
    else waiting.push(u.name);
  }
  if (flags.bool("no-block")) {
    for (const name of waiting) ctx.out(`Triggered unit ${name} ${verb}`);
  } else {
    const errors = await waitAndReport(ctx, waiting, target, budget(flags));
    if (errors.length > 0) {
      for (const e of errors) ctx.err(`Error waiting for units: ${e}`);
      return 1;
    }
  }
  ctx.err(`Successfully ${verb === "stop" ? "stopped" : "unloaded"} units ${goList(waiting)}.`);
  return 0;
}

const destroy: Command = async (ctx, args, flags) => {
  const found = await existingUnits(ctx, args);
  if (typeof found === "number") return found;
  const units = found;
  let exit = 0;
  for (const u of units) {
    try {
      if (!(await ctx.api.destroyUnit(u.name))) continue;
    } catch (err) {
      ctx.err(`Error destroying units: ${errorText(err)}`);
      exit = 1;
      continue;
    }
    // fleet only polled for the unit to disappear under --no-block, the reverse of its intent.
    if (!flags.bool("no-block")) {
      const gone = await pollUntil(
        async () => ((await ctx.api.unit(u.name)) === undefined ? true : undefined),
        budget(flags),
        ctx.clock,
      );
      if (!("value" in gone)) {
        ctx.err(`Error destroying units: timed out waiting for unit ${u.name} to be destroyed`);
        exit = 1;
        continue;
      }
    }
    ctx.out(`Destroyed ${u.name}`);
  }
  return exit;
};

/**
 * fleet v1.0's restart: units missing from the registry are submitted first, as start does, so
 * one with no unit file is an error (`Error creating units: …`, exit 1) rather than fleet's
 * stop/unload/destroy's "Units not found in registry" and exit 0. A unit submitted here is
 * inactive and is not restarted.
 */
const restart: Command = async (ctx, args, flags) => {
  const units = await namedUnits(ctx, args);
  if (typeof units === "number") return units;
  const createError = await lazyCreateUnits(ctx, args, {
    command: "restart",
    replace: false,
    budget: budget(flags),
  });
  if (createError !== undefined) {
    ctx.err(`Error creating units: ${createError}`);
    return 1;
  }
  const step = async (name: string, state: CurrentState): Promise<boolean> => {
    try {
      await ctx.api.setUnitTargetState(name, state);
    } catch (err) {
      ctx.err(`Error setting target state for unit ${name}: ${errorText(err)}`);
      return false;
    }
    // fleet waited for `launched` after setting `loaded` too, so it never saw the stop.
    const errors = await waitAndReport(ctx, [name], state, budget(flags));
    for (const e of errors) ctx.err(`Error waiting for units: ${e}`);
    return errors.length === 0;
  };
  for (const u of units) {
    if (isGlobalUnit(u)) {
      // fleet restarted global units with systemctl over SSH; Flotilla cycles their desired
      // state and waits until no machine reports them active in between.
      if (!(await restartGlobal(ctx, u.name, budget(flags)))) return 1;
      continue;
    }
    if (u.currentState === "inactive") {
      ctx.err(`Unable to restart unit ${u.name} in state inactive`);
      continue;
    }
    if (u.currentState === "launched" && !(await step(u.name, "loaded"))) return 1;
    if (!(await step(u.name, "launched"))) return 1;
  }
  return 0;
};

async function restartGlobal(ctx: CommandContext, name: string, waitBudget: WaitBudget): Promise<boolean> {
  try {
    await ctx.api.setUnitTargetState(name, "loaded");
    const stopped = await pollUntil(
      async () => {
        const states = await ctx.api.unitStates();
        return states.some((s) => s.name === name && s.systemdActiveState === "active") ? undefined : true;
      },
      waitBudget,
      ctx.clock,
    );
    if (!("value" in stopped)) {
      ctx.err(`Error waiting for units: timed out waiting for global unit ${name} to stop`);
      return false;
    }
    await ctx.api.setUnitTargetState(name, "launched");
  } catch (err) {
    ctx.err(`Error restarting global unit ${name}: ${errorText(err)}`);
    return false;
  }
  ctx.out(`Triggered global unit ${name} restart`);
  return true;
}

function fieldContext(flags: Flags, machines: WireMachine[], reasons: Map<string, string>): FieldContext {
  const byID = new Map(machines.map((m) => [m.id, m]));
  return { full: flags.bool("full"), machine: (id) => byID.get(id), reason: (name) => reasons.get(name) };
}

/** fleet ignores machine lookup failures in tables and shows the bare machine ID. */
async function machinesOrEmpty(ctx: CommandContext): Promise<WireMachine[]> {
  try {
    return await ctx.api.machines();
  } catch {
    return [];
  }
}

const listUnits: Command = async (ctx, _args, flags) => {
  const cols = parseFields(flags.str("fields"), LIST_UNITS_FIELDS);
  if ("error" in cols) {
    ctx.err(cols.error);
    return 1;
  }
  let states: WireUnitState[];
  const reasons = new Map<string, string>();
  try {
    states = await ctx.api.unitStates();
    // `reason` lives on the unit, not its state: fetch the units only when asked for.
    if (cols.includes("reason")) {
      for (const u of await ctx.api.units()) if (u.reason) reasons.set(u.name, u.reason);
    }
  } catch (err) {
    ctx.err(`Error retrieving list of units from repository: ${errorText(err)}`);
    return 1;
  }
  const needMachines = cols.includes("machine") && states.some((s) => s.machineID);
  const machines = needMachines ? await machinesOrEmpty(ctx) : [];
  const sorted = [...states].sort(
    (a, b) => compareStrings(a.name, b.name) || compareStrings(a.machineID ?? "", b.machineID ?? ""),
  );
  ctx.write(
    renderTable(
      cols,
      sorted,
      LIST_UNITS_FIELDS,
      fieldContext(flags, machines, reasons),
      flags.bool("no-legend"),
    ),
  );
  return 0;
};

/** The key families each list is about, for its quarantine warning. */
const UNIT_FAMILIES = ["units", "schedule", "pending", "failures", "states"];
const MACHINE_FAMILIES = ["machines", "metadata"];

/**
 * Names, on stderr, the registry values of `families` the agent skips as bad, with why. stdout
 * stays fleet's table (scripts parse it) and the exit code stays 0: the list is still right about
 * every good record. A server without the list (404) or an error adds nothing.
 */
async function warnQuarantined(ctx: CommandContext, families: readonly string[]): Promise<void> {
  const values = await ctx.api.quarantine().catch(() => undefined);
  const shown = (values ?? []).filter((v) => families.includes(v.family));
  if (shown.length === 0) return;
  ctx.err(
    `WARNING: ${shown.length} registry value(s) failed their checks and are skipped until fixed or deleted:`,
  );
  for (const v of shown) ctx.err(`  ${v.key}: ${v.reason}`);
}

const listUnitFiles: Command = async (ctx, _args, flags) => {
  const cols = parseFields(flags.str("fields"), LIST_UNIT_FILES_FIELDS);
  if ("error" in cols) {
    ctx.err(cols.error);
    return 1;
  }
  if (cols.includes("tmachine")) ctx.err('WARNING: The "tmachine" field is deprecated. Use "target" instead');
  let units: WireUnit[];
  try {
    units = await ctx.api.units();
  } catch (err) {
    ctx.err(`Error retrieving list of units from repository: ${errorText(err)}`);
    return 1;
  }
  const needMachines =
    (cols.includes("target") || cols.includes("tmachine")) && units.some((u) => u.machineID);
  const machines = needMachines ? await machinesOrEmpty(ctx) : [];
  const sorted = [...units].sort((a, b) => compareStrings(a.name, b.name));
  ctx.write(
    renderTable(
      cols,
      sorted,
      LIST_UNIT_FILES_FIELDS,
      fieldContext(flags, machines, new Map()),
      flags.bool("no-legend"),
    ),
  );
  await warnQuarantined(ctx, UNIT_FAMILIES);
  return 0;
};

const listMachines: Command = async (ctx, _args, flags) => {
  const cols = parseFields(flags.str("fields"), LIST_MACHINES_FIELDS);
  if ("error" in cols) {
    ctx.err(cols.error);
    return 1;
  }
  let machines: WireMachine[];
  try {
    machines = await ctx.api.machines();
  } catch (err) {
    ctx.err(`Error retrieving list of active machines from fleet API (${errorText(err)})`);
    ctx.err("Possible issues:");
    ctx.err("  etcd is unhealthy and/or lost quorum");
    ctx.err("  connection cannot be established to any etcd servers");
    return 1;
  }
  // Only the Flotilla fields cost a second request, so fleet's default output asks exactly as fleet did.
  const statuses = new Map<string, UpdateStatus>();
  if (cols.some((c) => UPDATE_MACHINE_FIELDS.includes(c))) {
    try {
      for (const m of (await ctx.api.updates()).machines) if (m.status) statuses.set(m.machineID, m.status);
    } catch (err) {
      ctx.err(`Error retrieving update status: ${errorText(err)}`);
      return 1;
    }
  }
  const sorted = [...machines].sort((a, b) => compareStrings(a.id, b.id));
  ctx.write(
    renderTable(
      cols,
      sorted,
      LIST_MACHINES_FIELDS,
      { ...fieldContext(flags, [], new Map()), update: (id) => statuses.get(id) },
      flags.bool("no-legend"),
    ),
  );
  await warnQuarantined(ctx, MACHINE_FAMILIES);
  return 0;
};

/**
 * Machines' OS version, slot, update state, last check and last rollback; then, unless
 * --no-legend (which keeps the output one table for scripts), the reboot groups and bad versions.
 */
const updateStatus: Command = async (ctx, args, flags) => {
  if (args.length > 0) {
    ctx.err("update-status takes no arguments");
    return 1;
  }
  let updates: WireUpdates;
  try {
    updates = await ctx.api.updates();
  } catch (err) {
    ctx.err(`Error retrieving update status: ${errorText(err)}`);
    return 1;
  }
  const fc = fieldContext(flags, [], new Map());
  const noLegend = flags.bool("no-legend");
  ctx.write(renderTable(UPDATE_STATUS_COLUMNS, updates.machines, UPDATE_STATUS_FIELDS, fc, noLegend));
  if (noLegend) return 0;
  ctx.write(`\n${renderTable(UPDATE_GROUP_COLUMNS, updates.groups, UPDATE_GROUP_FIELDS, fc, false)}`);
  if (updates.bad.length > 0) {
    ctx.write(`\n${renderTable(BAD_VERSION_COLUMNS, updates.bad, BAD_VERSION_FIELDS, fc, false)}`);
  }
  return 0;
};

export const UPDATE_USAGE = [
  "fleetctl update check [MACHINE]",
  "fleetctl update pause GROUP",
  "fleetctl update resume GROUP",
  "fleetctl update lock-size GROUP N",
  "fleetctl update release GROUP HOLDER",
  "fleetctl update clear-bad VERSION",
];

/** `fleetctl update <action> …`: one command with actions, as `fleetctl update --help` lists. */
const update: Command = async (ctx, args) => {
  const [action, ...rest] = args;
  const usage = (line: string): number => {
    ctx.err(`Usage: ${line}`);
    return 1;
  };
  const want = (n: number, line: string): boolean => {
    if (rest.length === n) return true;
    usage(line);
    return false;
  };
  switch (action) {
    case "check":
      if (rest.length > 1) return usage("fleetctl update check [MACHINE]");
      return updateCheck(ctx, rest[0]);
    case "pause":
    case "resume": {
      if (!want(1, `fleetctl update ${action} GROUP`)) return 1;
      const group = rest[0] as string;
      const done = await changeGroup(ctx, group, { paused: action === "pause" });
      if (done) ctx.out(`${action === "pause" ? "Paused" : "Resumed"} updates of group ${group}`);
      return done ? 0 : 1;
    }
    case "lock-size": {
      if (!want(2, "fleetctl update lock-size GROUP N")) return 1;
      const [group, n] = rest as [string, string];
      if (!/^\d+$/.test(n) || Number(n) < 1) {
        ctx.err(`Invalid lock size ${JSON.stringify(n)}: expected a whole number of at least 1`);
        return 1;
      }
      const done = await changeGroup(ctx, group, { maxHolders: Number(n) });
      if (done) ctx.out(`Group ${group}: at most ${n} machine(s) reboot at once`);
      return done ? 0 : 1;
    }
    case "release": {
      if (!want(2, "fleetctl update release GROUP HOLDER")) return 1;
      const [group, holder] = rest as [string, string];
      return removal(ctx, () => ctx.api.releaseHolder(group, holder), {
        done: `Released the reboot slot of ${holder} in group ${group}`,
        missing: `Group ${group} has no lock holder ${holder}`,
        failed: `Error releasing ${holder} in group ${group}`,
      });
    }
    case "clear-bad": {
      if (!want(1, "fleetctl update clear-bad VERSION")) return 1;
      const version = rest[0] as string;
      return removal(ctx, () => ctx.api.clearBadVersion(version), {
        done: `Version ${version} is no longer marked bad`,
        missing: `Version ${version} is not marked bad`,
        failed: `Error clearing bad version ${version}`,
      });
    }
    default:
      ctx.err(
        action === undefined ? "No update action given" : `Unknown update action ${JSON.stringify(action)}`,
      );
      for (const line of UPDATE_USAGE) ctx.err(`  ${line}`);
      return 1;
  }
};

/** Asks one machine (a full ID or a unique prefix, like fleet's machine arguments) or all to check. */
async function updateCheck(ctx: CommandContext, machine: string | undefined): Promise<number> {
  try {
    let target: string | undefined;
    if (machine !== undefined) {
      const ids = (await ctx.api.updates()).machines
        .map((m) => m.machineID)
        .filter((id) => id.startsWith(machine));
      if (ids.length !== 1) {
        ctx.err(
          ids.length === 0
            ? `Machine ${machine} not found`
            : `Machine ${machine} is ambiguous: ${ids.join(", ")}`,
        );
        return 1;
      }
      target = ids[0];
    }
    const answer = await ctx.api.checkUpdates(target);
    ctx.out(`Update check requested on ${answer.target === "all" ? "all machines" : answer.target}`);
    return 0;
  } catch (err) {
    ctx.err(`Error requesting an update check: ${errorText(err)}`);
    return 1;
  }
}

async function changeGroup(ctx: CommandContext, group: string, change: GroupConfigChange): Promise<boolean> {
  try {
    await ctx.api.changeUpdateGroup(group, change);
    return true;
  } catch (err) {
    ctx.err(`Error changing group ${group}: ${errorText(err)}`);
    return false;
  }
}

async function removal(
  ctx: CommandContext,
  remove: () => Promise<boolean>,
  text: { done: string; missing: string; failed: string },
): Promise<number> {
  try {
    if (!(await remove())) {
      ctx.err(text.missing);
      return 1;
    }
  } catch (err) {
    ctx.err(`${text.failed}: ${errorText(err)}`);
    return 1;
  }
  ctx.out(text.done);
  return 0;
}

/** How often `list-services --watch` polls. */
export const WATCH_INTERVAL_MS = 1000;

const listServices: Command = async (ctx, args, flags) => {
  const cols = parseFields(flags.str("fields"), LIST_SERVICES_FIELDS);
  if ("error" in cols) {
    ctx.err(cols.error);
    return 1;
  }
  if (args.length > 1) {
    ctx.err("At most one service name may be given");
    return 1;
  }
  const service = args[0];
  const table = async (): Promise<string> => {
    const records: WireService[] = [...(await ctx.api.services(service))].sort(
      (a, b) =>
        compareStrings(a.service, b.service) ||
        compareStrings(a.machineID, b.machineID) ||
        compareStrings(a.unit, b.unit),
    );
    return renderTable(
      cols,
      records,
      LIST_SERVICES_FIELDS,
      fieldContext(flags, [], new Map()),
      flags.bool("no-legend"),
    );
  };
  const failure = (err: unknown) => `Error retrieving list of services: ${errorText(err)}`;
  if (!flags.bool("watch")) {
    try {
      ctx.write(await table());
    } catch (err) {
      ctx.err(failure(err));
      return 1;
    }
    return 0;
  }
  // Poll and print the table again when it differs; an error is reported once until it changes.
  let shown: string | undefined;
  let lastError: string | undefined;
  while (!ctx.signal?.aborted) {
    try {
      const text = await table();
      lastError = undefined;
      if (text !== shown) {
        if (shown !== undefined) ctx.write("\n");
        ctx.write(text);
        shown = text;
      }
    } catch (err) {
      const message = failure(err);
      if (message !== lastError) ctx.err(message);
      lastError = message;
    }
    await ctx.clock.sleep(WATCH_INTERVAL_MS);
  }
  return 0;
};

const cat: Command = async (ctx, args) => {
  if (args.length !== 1) {
    ctx.err("One unit file must be provided");
    return 1;
  }
  const name = mangleUnitName(args[0] as string);
  const unit = await requireUnit(ctx, name, {
    unreadable: `Error retrieving Unit ${name}: `,
    missing: `Unit ${name} not found`,
  });
  if (unit === undefined) return 1;
  // No newline added: the output is the stored unit, byte for byte.
  ctx.write(serializeUnit(unit.options ?? []));
  return 0;
};

/** The remote exit code as a process exit code. */
function exitCodeOf(code: unknown): number {
  return typeof code === "number" && Number.isInteger(code) ? code & 0xff : 1;
}

const status: Command = async (ctx, args) => {
  for (const [i, arg] of args.entries()) {
    const name = mangleUnitName(arg);
    const unit = await requireUnit(ctx, name, {
      unreadable: "Error retrieving unit: ",
      missing: `Unit ${name} does not exist.`,
    });
    if (unit === undefined) return 1;
    if (!isGlobalUnit(unit) && unit.currentState === "inactive") {
      ctx.err(`Unit ${name} does not appear to be loaded.`);
      return 1;
    }
    let result: WireCommandOutput | undefined;
    try {
      result = await ctx.api.unitStatus(name);
    } catch (err) {
      ctx.err(`Error retrieving status of unit ${name}: ${errorText(err)}`);
      return 1;
    }
    if (result === undefined) {
      ctx.err(`Unit ${name} does not exist.`);
      return 1;
    }
    // Separates the units' outputs the way consecutive `systemctl status` outputs are.
    if (i > 0) ctx.write("\n");
    ctx.write(result.output);
    const code = exitCodeOf(result.exitCode);
    if (code !== 0) return code;
  }
  return 0;
};

const journal: Command = async (ctx, args, flags) => {
  if (args.length !== 1) {
    ctx.err("One unit file must be provided.");
    return 1;
  }
  const name = mangleUnitName(args[0] as string);
  const unit = await requireUnit(ctx, name, {
    unreadable: `Error retrieving unit ${name}: `,
    missing: `Unit ${name} does not exist.`,
  });
  if (unit === undefined) return 1;
  if (isGlobalUnit(unit)) {
    ctx.err(`Unable to retrieve journal of global unit ${name}.`);
    return 1;
  }
  if (unit.currentState === "inactive") {
    ctx.err(`Unit ${name} does not appear to be running.`);
    return 1;
  }
  const opts = { lines: flags.int("lines"), output: flags.str("output") };
  try {
    if (flags.bool("follow")) {
      if (!(await ctx.api.followJournal(name, opts, (chunk) => ctx.write(chunk)))) {
        ctx.err(`Unit ${name} does not exist.`);
        return 1;
      }
      return 0;
    }
    const result = await ctx.api.unitJournal(name, opts);
    if (result === undefined) {
      ctx.err(`Unit ${name} does not exist.`);
      return 1;
    }
    ctx.write(result.output);
    return exitCodeOf(result.exitCode);
  } catch (err) {
    ctx.err(`Error retrieving journal of unit ${name}: ${errorText(err)}`);
    return 1;
  }
};

/** Commands that talk to the API; help, version, verify and the unsupported ones live in cli.ts. */
export const API_COMMANDS: Record<string, Command> = {
  submit: (ctx, args, flags) => createThenTarget(ctx, args, flags, "submit"),
  load: (ctx, args, flags) => createThenTarget(ctx, args, flags, "load"),
  start: (ctx, args, flags) => createThenTarget(ctx, args, flags, "start"),
  stop: (ctx, args, flags) => setAndWait(ctx, args, flags, "stop"),
  unload: (ctx, args, flags) => setAndWait(ctx, args, flags, "unload"),
  destroy,
  restart,
  "list-units": listUnits,
  "list-unit-files": listUnitFiles,
  "list-machines": listMachines,
  "list-services": listServices,
  "update-status": updateStatus,
  update,
  cat,
  status,
  journal,
};
