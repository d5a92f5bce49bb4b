// Unit names: systemd's rules (unit_name_is_valid, in fleet's wording where fleet had the rule),
// fleetctl's argument mangling, and the template/instance split (unit/unit.go UnitNameInfo).
// fleet's own check let through names systemd refuses (".service", 256 bytes, "x.busname"): such a
// unit was stored and placed, then logged an error on its machine every pass and left its file
// behind on destroy. Here every name systemd would refuse is refused at the API instead.

import { goPathBase, goQuote, goQuoteRune } from "./go.js";

/** systemd's UNIT_NAME_MAX is 256 with the terminating NUL, so a name has at most 255 bytes. */
const UNIT_NAME_MAX_BYTES = 255;

/** The types systemd loads from unit files. */
const UNIT_TYPES = new Set([
  "automount",
  "device",
  "mount",
  "path",
  "service",
  "slice",
  "socket",
  "swap",
  "target",
  "timer",
]);

/** Types fleet accepted that systemd never loads from a unit file: such a unit could never run. */
const NOT_FROM_FILES = new Map([
  ["scope", "scope units are created by programs through systemd's API, never from a unit file"],
  ["busname", "busname units were removed from systemd"],
  ["snapshot", "snapshot units were removed from systemd"],
]);

/** Types systemd can instantiate from a template. */
const TEMPLATABLE_TYPES = new Set(["path", "service", "socket", "target", "timer"]);

/** fleet's validChars: `:-_.\@` plus ASCII letters and digits. */
const NAME_CHAR = /^[A-Za-z0-9:\-_.\\@]$/;

/** Suffixes fleetctl leaves alone; any other argument gets ".service" appended. */
const MANGLE_KEEPS_SUFFIXES = [".service", ".socket", ".timer", ".path", ".device", ".mount", ".automount"];

/**
 * The first rule `name` breaks, in fleet's wording where fleet had the rule, or undefined when
 * systemd would load it: 1 to 255 bytes; a known type that systemd loads from files after the last
 * "."; a non-empty prefix before it, of ASCII letters, digits and `:-_.\@`, not starting with "@";
 * "@" (template "x@.type", instance "x@i.type") only for types systemd instantiates.
 */
export function validateUnitName(name: string): string | undefined {
  // systemd counts bytes, as Go's len() does.
  const length = Buffer.byteLength(name);
  if (length === 0) return "unit name cannot be empty";
  if (length > UNIT_NAME_MAX_BYTES)
    return `unit name exceeds maximum length (${UNIT_NAME_MAX_BYTES} bytes, got ${length})`;
  const dot = name.lastIndexOf(".");
  if (dot === -1) return 'unit name must contain "."';
  if (dot === name.length - 1) return 'unit name cannot end in "."';
  const type = name.slice(dot + 1);
  const gone = NOT_FROM_FILES.get(type);
  if (gone !== undefined) return `invalid unit type ${goQuote(type)}: ${gone}`;
  if (!UNIT_TYPES.has(type)) return `invalid unit type: ${goQuote(type)}`;
  if (dot === 0) return `unit name has nothing before ".${type}"`;
  for (const char of name.slice(0, dot)) {
    if (!NAME_CHAR.test(char)) return `invalid character ${goQuoteRune(char)} in unit name`;
  }
  if (name.startsWith("@")) return 'unit name cannot start in "@"';
  if (name.includes("@") && !TEMPLATABLE_TYPES.has(type)) {
    return `unit type ${goQuote(type)} cannot be a template or an instance`;
  }
  return undefined;
}

/** fleetctl's unitNameMangle: turns a path or bare name given on the command line into a unit name. */
export function mangleUnitName(arg: string): string {
  const base = goPathBase(arg);
  return MANGLE_KEEPS_SUFFIXES.some((suffix) => base.endsWith(suffix)) ? base : `${base}.service`;
}

/**
 * The pieces systemd's specifiers name, for "foo@bar.service": full `foo@bar.service` (%n),
 * base `foo@bar` (%N), prefix `foo` (%p), instance `bar` (%i). Without an "@" the prefix is the
 * base and the instance is empty; without a "." the base is the whole name.
 */
export function unitNameParts(name: string): {
  full: string;
  base: string;
  prefix: string;
  instance: string;
} {
  const { base, at } = split(name);
  return {
    full: name,
    base,
    prefix: at === -1 ? base : base.slice(0, at),
    instance: at === -1 ? "" : base.slice(at + 1),
  };
}

/** "foo@.service": has an "@" and nothing between it and the suffix. */
export function isTemplate(name: string): boolean {
  const { dot, base, at } = split(name);
  return dot !== -1 && at !== -1 && at === base.length - 1;
}

/** The template an instance is made from ("foo@1.service" -> "foo@.service"); undefined otherwise. */
export function templateOf(name: string): string | undefined {
  const { dot, base, at } = split(name);
  if (dot === -1 || at === -1 || at === base.length - 1) return undefined;
  return `${base.slice(0, at + 1)}${name.slice(dot)}`;
}

/** Like fleet: the suffix starts at the last ".", the instance after the first "@". */
function split(name: string): { dot: number; base: string; at: number } {
  const dot = name.lastIndexOf(".");
  const base = dot === -1 ? name : name.slice(0, dot);
  return { dot, base, at: base.indexOf("@") };
}
