// The [X-Fleet] section: fleet's scheduling options (job/job.go) read into Requirements, and the
// option combinations fleet's API refuses (api/units.go ValidateOptions), with fleet's messages.

import type { Requirements, UnitOption } from "../model.js";
import { globMatcher, isValidGlob } from "./glob.js";
import { goQuote, isGoSpace } from "./go.js";
import { isTemplate, unitNameParts, validateUnitName } from "./names.js";

const SECTION = "X-Fleet";

type Field =
  | "machineID"
  | "machineOf"
  | "metadata"
  | "conflicts"
  | "global"
  | "replaces"
  | "serviceName"
  | "singleInstance";

/** Option name -> field. Includes the forms deprecated in fleet v0.8, which fleet still honours. */
const FIELD_OF_OPTION = new Map<string, Field>([
  ["MachineID", "machineID"],
  ["X-ConditionMachineID", "machineID"],
  // A boot ID is not a machine ID, so this rarely matches; fleet still pins the unit to it rather
  // than let a unit that asked for a specific host start anywhere.
  ["X-ConditionMachineBootID", "machineID"],
  ["MachineOf", "machineOf"],
  ["X-ConditionMachineOf", "machineOf"],
  ["MachineMetadata", "metadata"],
  ["X-ConditionMachineMetadata", "metadata"],
  ["Conflicts", "conflicts"],
  ["X-Conflicts", "conflicts"],
  ["Global", "global"],
  ["Replaces", "replaces"],
  // Flotilla's own: the name the unit is discovered by.
  ["ServiceName", "serviceName"],
  // Flotilla's own: never run on two machines at once, even if that means stopping it when this
  // machine cannot renew its lease (docs/units.md, "SingleInstance").
  ["SingleInstance", "singleInstance"],
]);

/** fleet's RequiredTarget precedence, whatever the order in the file. */
const MACHINE_ID_OPTIONS = ["MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID"];

const SINGLE_VALUED = new Set<Field>(["machineID", "global", "serviceName", "singleInstance"]);

const TRUTHY = new Set(["true", "yes", "1", "on", "t"]);
const FALSY = new Set(["false", "no", "0", "off", "f"]);

/** Conflicts and Replaces patterns a unit may carry, each (fleet units carry a handful). */
export const MAX_PATTERNS = 64;

/** A line continuation kept in a value by the parser reads as a space, as systemd reads it. */
const CONTINUATION = /\\(\n|$)/g;

interface Entry {
  option: string;
  tokens: string[];
}

/**
 * Reads the [X-Fleet] options of unit `name`, expanding %n %N %p %i in their values.
 *
 * Each value is split on whitespace, and double quotes group (and are dropped), so
 * `MachineMetadata="region=us east" disk=ssd` holds two pairs. MachineID takes the first value
 * (MachineID, then X-ConditionMachineID, then X-ConditionMachineBootID); Global, SingleInstance and
 * ServiceName take the last, and an empty one resets them. The list options accumulate in file order.
 *
 * Metadata that is not `key=value` is kept under the empty key, which no machine has: the unit
 * then fits nowhere (fleet would ignore the pair and let it run anywhere), and
 * validateRequirements reports it.
 *
 * A template's values that depend on its instance (`MachineMetadata=hostname=%i`) are not known
 * until it is instantiated: they are left out of the template's requirements, and each instance,
 * which carries the template's options under its own name, has them checked and applied. A
 * template is never scheduled itself, so nothing is lost.
 *
 * Results are remembered per options array: the registry view's records are never modified, so
 * the engine's and the reconciler's passes over 10 000 units parse each unit once per change, not
 * once per pass. Callers must not modify the result.
 */
export function parseRequirements(
  name: string,
  options: UnitOption[],
): { requirements: Requirements; warnings: string[] } {
  const known = parsed.get(options);
  if (known?.name === name) return known.result;
  const result = parseRequirementsOnce(name, options);
  parsed.set(options, { name, result });
  return result;
}

const parsed = new WeakMap<
  UnitOption[],
  { name: string; result: { requirements: Requirements; warnings: string[] } }
>();

function parseRequirementsOnce(
  name: string,
  options: UnitOption[],
): { requirements: Requirements; warnings: string[] } {
  const parts = unitNameParts(name);
  // A NUL is in no unit name, so a token that expands differently with it names the instance.
  const anyInstance = { ...parts, instance: "\0" };
  const decidedPerInstance = (token: string) =>
    isTemplate(name) && expandSpecifiers(token, anyInstance) !== expandSpecifiers(token, parts);
  const warnings: string[] = [];
  const entries = new Map<Field, Entry[]>();
  const reported = new Set<string>();
  const warnOnce = (key: string, warning: string) => {
    if (reported.has(key)) return;
    reported.add(key);
    warnings.push(warning);
  };

  for (const option of options) {
    if (option.section !== SECTION) {
      // fleet matches the section name exactly; a near miss would drop every constraint silently.
      if (option.section.toLowerCase() === SECTION.toLowerCase()) {
        warnOnce(
          `section ${option.section}`,
          `section [${option.section}] is ignored: did you mean [X-Fleet]?`,
        );
      }
      continue;
    }
    const field = FIELD_OF_OPTION.get(option.name);
    if (field === undefined) {
      warnOnce(
        `option ${option.name}`,
        `unrecognized requirement in [X-Fleet] section: ${goQuote(option.name)}`,
      );
      continue;
    }
    const { tokens, unterminatedQuote } = splitValue(option.value);
    if (unterminatedQuote) {
      warnings.push(`[X-Fleet] ${option.name} has an unterminated quote: ${goQuote(option.value)}`);
    }
    if (SINGLE_VALUED.has(field) && tokens.length > 1) {
      warnings.push(`[X-Fleet] ${option.name} takes one value, got ${goQuote(option.value)}`);
    }
    const entry = {
      option: option.name,
      tokens: tokens
        .filter((token) => !decidedPerInstance(token))
        .map((token) => expandSpecifiers(token, parts)),
    };
    const fieldEntries = entries.get(field);
    if (fieldEntries) fieldEntries.push(entry);
    else entries.set(field, [entry]);
  }

  const entriesOf = (field: Field) => entries.get(field) ?? [];
  const listOf = (field: Field) => [...new Set(entriesOf(field).flatMap((entry) => entry.tokens))];
  const lastValueOf = (field: Field) => entriesOf(field).at(-1)?.tokens.at(-1) ?? "";

  const requirements: Requirements = {
    machineOf: listOf("machineOf"),
    metadata: metadataOf(listOf("metadata")),
    conflicts: listOf("conflicts"),
    global: TRUTHY.has(lastValueOf("global").toLowerCase()),
    replaces: listOf("replaces"),
  };
  const machineID = MACHINE_ID_OPTIONS.map((option) =>
    entriesOf("machineID")
      .filter((entry) => entry.option === option)
      .flatMap((entry) => entry.tokens)
      .find((token) => token !== ""),
  ).find((id) => id !== undefined);
  if (machineID !== undefined) requirements.machineID = machineID;
  const serviceName = lastValueOf("serviceName");
  if (serviceName !== "") requirements.serviceName = serviceName;
  const singleInstance = lastValueOf("singleInstance").toLowerCase();
  if (TRUTHY.has(singleInstance)) requirements.singleInstance = true;
  else if (singleInstance !== "" && !FALSY.has(singleInstance))
    warnings.push(`[X-Fleet] SingleInstance must be true or false, got ${goQuote(singleInstance)}`);
  return { requirements, warnings };
}

/**
 * Problems that make unit `name` unschedulable, [] when there are none. The combination rules and
 * their messages are fleet's ValidateOptions (MachineOf is "Peers" there); fleet stops at the first,
 * this reports all. Malformed metadata, bad glob patterns, invalid MachineOf names and a unit
 * naming itself in MachineOf are Flotilla's additions: fleet accepted them, then silently ignored
 * the metadata or pattern, or never placed the unit.
 */
export function validateRequirements(name: string, requirements: Requirements): string[] {
  const { machineOf, conflicts, replaces } = requirements;
  // Every placement matches each pattern against other units: bound the work a unit can ask for
  // before compiling anything.
  const tooMany = (["Conflicts", "Replaces"] as const)
    .map((option) => ({ option, count: (option === "Conflicts" ? conflicts : replaces).length }))
    .filter(({ count }) => count > MAX_PATTERNS)
    .map(({ option, count }) => `too many ${option} patterns: ${count}, at most ${MAX_PATTERNS}`);
  if (tooMany.length > 0) return tooMany;
  const errors: string[] = [];

  for (const pair of requirements.metadata[""] ?? []) {
    errors.push(`invalid MachineMetadata ${goQuote(pair)}: want key=value`);
  }
  for (const [option, patterns] of [
    ["Conflicts", conflicts],
    ["Replaces", replaces],
  ] as const) {
    for (const pattern of patterns) {
      if (!isValidGlob(pattern))
        errors.push(`invalid ${option} pattern ${goQuote(pattern)}: syntax error in pattern`);
    }
  }
  for (const peer of machineOf) {
    const problem = validateUnitName(peer);
    if (problem !== undefined) errors.push(`invalid MachineOf unit ${goQuote(peer)}: ${problem}`);
  }
  if (machineOf.includes(name))
    errors.push(`unresolvable requirements: unit ${goQuote(name)} is its own peer`);

  // Uncached: the glob cache holds only patterns of stored units, never those of a refused request.
  const matches = (pattern: string, peer: string) => globMatcher(pattern)?.(peer) === true;
  for (const peer of machineOf) {
    for (const conflict of conflicts) {
      if (matches(conflict, peer)) {
        errors.push(`unresolvable requirements: peer ${goQuote(peer)} matches conflict ${goQuote(conflict)}`);
      }
    }
    for (const replace of replaces) {
      if (matches(replace, peer)) {
        errors.push(`unresolvable requirements: peer ${goQuote(peer)} matches replace ${goQuote(replace)}`);
      }
    }
  }

  const hasMachineID = requirements.machineID !== undefined;
  const hasPeers = machineOf.length > 0;
  const hasConflicts = conflicts.length > 0;
  const hasReplaces = replaces.length > 0;
  const { global } = requirements;
  if (hasMachineID && hasPeers) errors.push("MachineID cannot be used with Peers");
  if (hasMachineID && hasConflicts) errors.push("MachineID cannot be used with Conflicts");
  if (hasMachineID && global) errors.push("MachineID cannot be used with Global");
  if (hasMachineID && hasReplaces) errors.push("MachineID cannot be used with Replaces");
  if (global && hasPeers) errors.push("Global cannot be used with Peers");
  if (global && hasReplaces) errors.push("Global cannot be used with Replaces");
  if (hasConflicts && hasReplaces) errors.push("Conflicts cannot be used with Replaces");
  // A global unit runs on every machine by design: one copy cluster-wide is a contradiction.
  if (global && requirements.singleInstance) errors.push("SingleInstance cannot be used with Global");
  return errors;
}

/** Whitespace-separated tokens; double quotes group and are dropped ("" is an empty token). */
function splitValue(value: string): { tokens: string[]; unterminatedQuote: boolean } {
  const tokens: string[] = [];
  let token: string | undefined;
  let quoted = false;
  for (const char of value.replace(CONTINUATION, " ")) {
    if (char === '"') {
      quoted = !quoted;
      token ??= "";
    } else if (!quoted && isGoSpace(char)) {
      if (token !== undefined) tokens.push(token);
      token = undefined;
    } else {
      token = (token ?? "") + char;
    }
  }
  if (token !== undefined) tokens.push(token);
  return { tokens, unterminatedQuote: quoted };
}

/** fleet's unitPrintf: one specifier after another, so a substituted name is itself scanned. */
function expandSpecifiers(value: string, parts: ReturnType<typeof unitNameParts>): string {
  return value
    .split("%n")
    .join(parts.full)
    .split("%N")
    .join(parts.base)
    .split("%p")
    .join(parts.prefix)
    .split("%i")
    .join(parts.instance);
}

/** Pairs split at the first "=": machine metadata set through the API may have "=" in a value. */
function metadataOf(pairs: string[]): Record<string, string[]> {
  const metadata = new Map<string, string[]>();
  for (const pair of pairs) {
    const equals = pair.indexOf("=");
    const wellFormed = equals > 0 && equals < pair.length - 1;
    const key = wellFormed ? pair.slice(0, equals) : "";
    const value = wellFormed ? pair.slice(equals + 1) : pair;
    const values = metadata.get(key);
    if (values) values.push(value);
    else metadata.set(key, [value]);
  }
  // fromEntries defines own properties, so a key such as "__proto__" stays an ordinary key.
  return Object.fromEntries(metadata);
}
