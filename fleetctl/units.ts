// Getting units into the registry before load/start, and submit itself (fleet's lazyCreateUnits):
// a unit already in the registry is kept (with a warning if the local file differs) unless
// --replace allows replacing it; otherwise it is read from disk, or for an instance `a@1.service`
// from the template `a@.service` in the registry or else on disk next to the argument.

import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import type { WireUnit, WireUnitOption } from "../agent/api/schema.js";
import type { CurrentState, DesiredState } from "../agent/model.js";
import {
  mangleUnitName,
  parseUnitFile,
  templateOf,
  unitHash,
  validateUnitName,
} from "../agent/unit/index.js";
import type { CommandContext } from "./context.js";
import { machineFullLegend } from "./format.js";
import { type WaitBudget, waitForUnitState } from "./wait.js";

export type CreatingCommand = "submit" | "load" | "start" | "restart";

/** Desired states in which --replace may replace a unit, per command (fleet's fleetctl). */
const REPLACE_ALLOWED: Record<CreatingCommand, readonly DesiredState[]> = {
  submit: ["inactive"],
  load: ["inactive", "loaded"],
  start: ["inactive", "loaded", "launched"],
  // restart has no --replace.
  restart: [],
};

export interface CreateOptions {
  command: CreatingCommand;
  replace: boolean;
  budget: WaitBudget;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The argument as a file path with `.service` added when it has no known unit suffix. */
function withDefaultSuffix(arg: string): string {
  const base = path.posix.basename(arg);
  const name = mangleUnitName(arg);
  return name.startsWith(base) ? arg + name.slice(base.length) : arg;
}

/**
 * Makes sure every argument's unit exists in the registry, creating (or replacing) the ones
 * that need it and waiting until each created unit reports `inactive`.
 * Returns the text printed after "Error creating units: ", or undefined on success.
 */
export async function lazyCreateUnits(
  ctx: CommandContext,
  args: readonly string[],
  opts: CreateOptions,
): Promise<string | undefined> {
  const created: string[] = [];
  for (const rawArg of args) {
    const arg = withDefaultSuffix(rawArg);
    const name = mangleUnitName(arg);
    let existing: WireUnit | undefined;
    try {
      existing = await ctx.api.unit(name);
    } catch (err) {
      return `error retrieving Unit(${name}) from Registry: ${errorText(err)}`;
    }
    if (existing !== undefined) {
      const diff = await isLocalUnitDifferent(ctx, arg, existing, opts.replace);
      if (!opts.replace) continue;
      if ("error" in diff) return diff.error;
      if (!diff.different) {
        ctx.out(`Found same Unit(${existing.name}) in Registry, nothing to do`);
        continue;
      }
      const desired = existing.desiredState ?? "";
      if (!(REPLACE_ALLOWED[opts.command] as readonly string[]).includes(desired)) {
        ctx.err(
          `Warning: can not replace Unit(${existing.name}) in state '${desired}', use the appropriate command`,
        );
        continue;
      }
    }
    const file = await getUnitFile(ctx, arg, name, opts.replace);
    if ("error" in file) return file.error;
    const invalid = validateUnitName(name);
    if (invalid !== undefined) return invalid;
    try {
      await ctx.api.createUnit(name, file.options);
    } catch (err) {
      return `failed creating unit ${name}: ${errorText(err)}`;
    }
    created.push(name);
  }

  const errors = await waitAndReport(ctx, created, "inactive", opts.budget);
  for (const e of errors) ctx.err(`Error waiting on unit creation: ${e}`);
  return errors.length > 0 ? "One or more errors creating units" : undefined;
}

/**
 * Waits for every unit to reach `target`, printing `Unit X <state>[ on <machine>]` as each does.
 * Returns the error texts of the units that did not.
 */
export async function waitAndReport(
  ctx: CommandContext,
  names: readonly string[],
  target: CurrentState,
  budget: WaitBudget,
): Promise<string[]> {
  const results = await Promise.all(
    names.map(async (name) => {
      const r = await waitForUnitState(name, target, (n) => ctx.api.unit(n), budget, ctx.clock);
      if (!r.ok) return r.error;
      let msg = `Unit ${name} ${r.unit.currentState ?? target}`;
      const machine = r.unit.machineID ? await ctx.machine(r.unit.machineID) : undefined;
      if (machine) msg += ` on ${machineFullLegend(machine, false)}`;
      ctx.out(msg);
      return undefined;
    }),
  );
  return results.filter((e): e is string => e !== undefined);
}

type FileResult = { options: WireUnitOption[] } | { error: string };

async function getUnitFile(
  ctx: CommandContext,
  file: string,
  name: string,
  replace: boolean,
): Promise<FileResult> {
  if (await exists(ctx, file)) {
    try {
      return { options: await readUnit(ctx, file) };
    } catch (err) {
      return { error: `failed getting Unit(${file}) from file: ${errorText(err)}` };
    }
  }
  const template = templateOf(name);
  if (template === undefined) return { error: `unable to find Unit(${name}) in Registry or on filesystem` };
  const fromTemplate = await getUnitFileFromTemplate(ctx, template, file, replace);
  if ("error" in fromTemplate)
    return { error: `failed getting Unit(${file}) from template: ${fromTemplate.error}` };
  return fromTemplate;
}

async function getUnitFileFromTemplate(
  ctx: CommandContext,
  template: string,
  file: string,
  replace: boolean,
): Promise<FileResult> {
  let registered: WireUnit | undefined;
  try {
    registered = await ctx.api.unit(template);
  } catch (err) {
    return { error: `error retrieving template Unit(${template}) from Registry: ${errorText(err)}` };
  }
  if (registered !== undefined) {
    await isLocalUnitDifferent(ctx, file, registered, replace);
    return { options: registered.options ?? [] };
  }
  const templateFile = path.posix.join(path.posix.dirname(file), template);
  if (!(await exists(ctx, templateFile))) {
    return { error: `unable to find template Unit(${template}) in Registry or on filesystem` };
  }
  try {
    return { options: await readUnit(ctx, templateFile) };
  } catch (err) {
    return { error: `unable to load template Unit(${template}) from file: ${errorText(err)}` };
  }
}

/**
 * Compares the local file (or, failing that, the local template of an instance) with the
 * registry's unit by hash, warning when they differ and --replace is not given.
 */
async function isLocalUnitDifferent(
  ctx: CommandContext,
  file: string,
  unit: WireUnit,
  replace: boolean,
): Promise<{ different: boolean } | { error: string }> {
  const registryHash = unitHash(unit.options ?? []);
  const direct = await localHash(ctx, file);
  if (typeof direct === "string") {
    if (direct !== registryHash && !replace) {
      ctx.err(
        `WARNING: Unit ${unit.name} in registry differs from local unit file ${file}. Add --replace to override.`,
      );
    }
    return { different: direct !== registryHash };
  }
  const template = templateOf(path.posix.basename(file));
  if (template === undefined) return { error: `error Unit ${file} does not seem to be a template unit` };
  const viaTemplate = await localHash(ctx, path.posix.join(path.posix.dirname(file), template));
  if (typeof viaTemplate !== "string") return viaTemplate;
  if (viaTemplate !== registryHash && !replace) {
    ctx.err(
      `WARNING: Unit ${unit.name} in registry differs from local template unit file ${file}. Add --replace to override.`,
    );
  }
  return { different: viaTemplate !== registryHash };
}

async function localHash(ctx: CommandContext, file: string): Promise<string | { error: string }> {
  try {
    return unitHash(await readUnit(ctx, file));
  } catch (err) {
    return { error: errorText(err) };
  }
}

/** Like fleet's `os.Stat(f); !os.IsNotExist(err)`: only a missing path counts as absent. */
async function exists(ctx: CommandContext, file: string): Promise<boolean> {
  try {
    await stat(path.resolve(ctx.cwd, file));
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== "ENOENT" && code !== "ENOTDIR";
  }
}

const FS_ERRORS: Record<string, string> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EISDIR: "is a directory",
  ENOTDIR: "not a directory",
};

async function readUnit(ctx: CommandContext, file: string): Promise<WireUnitOption[]> {
  let text: string;
  try {
    text = await readFile(path.resolve(ctx.cwd, file), "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    // Go-style "open x: reason", naming the path as the user wrote it.
    throw new Error(`open ${file}: ${FS_ERRORS[code] ?? errorText(err)}`);
  }
  return parseUnitFile(text, file);
}
