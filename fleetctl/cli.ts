// fleetctl's entry point as a function, so tests can run it in-process as well as via the bundle.
// Argument handling follows fleet's cobra setup: prefix-matched
// commands, global flags anywhere, FLEETCTL_* env for global flags, and exit 0 with usage on
// unknown commands and flag errors.

import { readFileSync } from "node:fs";
import parseFlags from "yargs-parser";
import { type ClientOptions, type ClientTls, type FleetApi, HttpFleetApi } from "./client.js";
import { API_COMMANDS, type Flags } from "./commands.js";
import { type CommandContext, lineWriter, machineCache, type Writer } from "./context.js";
import { parseEndpoint } from "./endpoint.js";
import { commandHelp, rootHelp } from "./help.js";
import {
  type CommandSpec,
  convertFlag,
  type FlagSpec,
  type FlagValue,
  findCommand,
  findCommandIndex,
  GLOBAL_FLAGS,
  globalsFromEnv,
} from "./spec.js";
import { VERSION } from "./version.js";
import { type Clock, realClock } from "./wait.js";

export interface FleetctlIO {
  stdout: Writer;
  stderr: Writer;
  env: Record<string, string | undefined>;
  cwd: string;
}

/** Seams for tests: the API implementation and the clock used by blocking waits. */
export interface CliDeps {
  createApi(opts: ClientOptions): FleetApi;
  clock: Clock;
  /** Ends commands that run until interrupted; the process's SIGINT does so otherwise. */
  signal?: AbortSignal;
}

const defaultDeps: CliDeps = { createApi: (opts) => new HttpFleetApi(opts), clock: realClock };

/** Runs fleetctl with `argv` (without the program name) and returns the exit code. */
export function runFleetctl(argv: string[], io: FleetctlIO): Promise<number> {
  return runCli(argv, io, defaultDeps);
}

interface Parsed {
  positional: string[];
  /** Flags given on the command line, converted to their types. */
  given: Record<string, FlagValue>;
}

export async function runCli(argv: string[], io: FleetctlIO, deps: CliDeps): Promise<number> {
  const out = lineWriter(io.stdout);
  const err = lineWriter(io.stderr);

  if (argv[0] === "--version" || argv[0] === "-v") return version(out);

  const index = findCommandIndex(argv);
  const word = index >= 0 ? (argv[index] as string) : undefined;
  const cmd = word === undefined ? undefined : findCommand(word);
  if (word !== undefined && cmd === undefined) {
    err(`Error: unknown command ${JSON.stringify(word)} for "fleetctl"`);
    err("Run 'fleetctl --help' for usage.");
    return 0;
  }

  const rest = index >= 0 ? [...argv.slice(0, index), ...argv.slice(index + 1)] : argv;
  const parsed = parseArgs(rest, cmd?.flags ?? []);
  if ("error" in parsed) {
    err(`Error: ${parsed.error}`);
    io.stderr.write(cmd ? commandHelp(cmd) : rootHelp());
    return 0;
  }
  const globals = globalsFromEnv(pick(parsed.given, GLOBAL_FLAGS), io.env);
  if (globals.version === true) return version(out);
  if (cmd === undefined) {
    io.stdout.write(rootHelp());
    return 0;
  }
  if (globals.help === true) {
    io.stdout.write(commandHelp(cmd));
    return 0;
  }

  switch (cmd.name) {
    case "help":
      return help(parsed.positional, io, err);
    case "version":
      return version(out);
    case "verify":
      out('Command "verify" is deprecated, DEPRECATED - No longer works');
      err("WARNING: The signed/verified units feature is DEPRECATED and cannot be used.");
      return 2;
    case "ssh":
    case "fd-forward":
      err(
        `fleetctl ${cmd.name} is not supported by Flotilla; use status and journal, or log in to the machine`,
      );
      return 1;
  }

  const clientOpts = clientOptions(globals, err);
  if ("error" in clientOpts) {
    err(`Unable to initialize client: ${clientOpts.error}`);
    return 1;
  }
  const api = deps.createApi(clientOpts);
  const ctx: CommandContext = {
    api,
    out,
    err,
    write: (chunk) => {
      io.stdout.write(chunk);
    },
    cwd: io.cwd,
    clock: deps.clock,
    machine: machineCache(api),
    ...(deps.signal ? { signal: deps.signal } : {}),
  };
  const run = API_COMMANDS[cmd.name];
  try {
    if (run === undefined) throw new Error(`command ${cmd.name} has no implementation`);
    return await run(ctx, parsed.positional, flagsFor(cmd, parsed.given));
  } catch (e) {
    err(`Error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    api.close();
  }
}

function version(out: (line: string) => void): number {
  out(`fleetctl version ${VERSION}`);
  return 0;
}

function help(args: string[], io: FleetctlIO, err: (line: string) => void): number {
  const topic = args[0];
  if (topic === undefined) {
    io.stdout.write(rootHelp());
    return 0;
  }
  const cmd = findCommand(topic);
  if (cmd === undefined) {
    err(`Unknown help topic \`${topic}\``);
    io.stdout.write(rootHelp());
    return 0;
  }
  io.stdout.write(commandHelp(cmd));
  return 0;
}

/**
 * Parses flags with yargs' own parser, configured like pflag: no `--no-x` negation, no camelCase
 * copies, last value wins, positionals stay strings. Unknown flags are errors, as in cobra. The
 * parser alone, not yargs with its help and i18n layers, keeps fleetctl's start-up short.
 */
function parseArgs(args: string[], local: FlagSpec[]): Parsed | { error: string } {
  const specs = [...GLOBAL_FLAGS, ...local];
  const byName = new Map<string, FlagSpec>();
  const boolean: string[] = [];
  const string: string[] = [];
  const alias: Record<string, string[]> = {};
  for (const spec of specs) {
    (spec.type === "bool" ? boolean : string).push(spec.name);
    if (spec.aliases) alias[spec.name] = [...spec.aliases];
    byName.set(spec.name, spec);
  }
  const raw = parseFlags(args, {
    boolean,
    string,
    alias,
    configuration: {
      "boolean-negation": false,
      "camel-case-expansion": false,
      "dot-notation": false,
      "duplicate-arguments-array": false,
      "parse-numbers": false,
      "parse-positional-numbers": false,
      "strip-aliased": true,
    },
  });
  const given: Record<string, FlagValue> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (key === "_" || key === "$0") continue;
    const spec = byName.get(key);
    if (spec === undefined) return { error: unknownFlag(key, args) };
    const converted = convertFlag(spec, typeof value === "boolean" ? value : String(value));
    if (typeof converted === "object") return converted;
    given[key] = converted;
  }
  return { positional: raw._.map(String), given };
}

/** pflag's wording, naming the argument a one-letter flag came from. */
function unknownFlag(key: string, args: string[]): string {
  if (key.length === 1) {
    const token = args.find((a) => /^-[^-]/.test(a) && a.slice(1).split("=")[0]?.includes(key)) ?? `-${key}`;
    return `unknown shorthand flag: '${key}' in ${token}`;
  }
  return `unknown flag: --${key}`;
}

function pick(given: Record<string, FlagValue>, specs: FlagSpec[]): Record<string, FlagValue> {
  const out: Record<string, FlagValue> = {};
  for (const s of specs) if (Object.hasOwn(given, s.name)) out[s.name] = given[s.name] as FlagValue;
  return out;
}

function flagsFor(cmd: CommandSpec, given: Record<string, FlagValue>): Flags {
  const value = (name: string): FlagValue => {
    if (Object.hasOwn(given, name)) return given[name] as FlagValue;
    const spec = cmd.flags.find((f) => f.name === name);
    if (spec === undefined) throw new Error(`flag --${name} is not defined for ${cmd.name}`);
    return spec.default;
  };
  return {
    bool: (name) => value(name) === true,
    int: (name) => Number(value(name)),
    str: (name) => String(value(name)),
  };
}

/**
 * --ca-file, --cert-file and --key-file (or FLEETCTL_*) for an https:// endpoint; ignored for
 * others, as fleet did. Certificate and key come together.
 */
function readClientTls(get: (name: string) => FlagValue): ClientTls | { error: string } {
  const certFile = String(get("cert-file"));
  const keyFile = String(get("key-file"));
  if ((certFile === "") !== (keyFile === "")) {
    return { error: "--cert-file and --key-file go together: give both or neither" };
  }
  const tls: ClientTls = {};
  for (const [flag, field] of [
    ["ca-file", "ca"],
    ["cert-file", "cert"],
    ["key-file", "key"],
  ] as const) {
    const file = String(get(flag));
    if (file === "") continue;
    try {
      tls[field] = readFileSync(file);
    } catch (e) {
      return { error: `--${flag} ${file}: ${(e as Error).message}` };
    }
  }
  return tls;
}

function clientOptions(
  globals: Record<string, FlagValue>,
  err: (line: string) => void,
): ClientOptions | { error: string } {
  const get = (name: string): FlagValue =>
    globals[name] ?? (GLOBAL_FLAGS.find((f) => f.name === name) as FlagSpec).default;
  // --experimental-api=false meant "use the etcd driver" in fleet.
  const driver = get("experimental-api") === false ? "etcd" : String(get("driver"));
  if (driver !== "API") return { error: `unrecognized driver ${JSON.stringify(driver)}` };
  if (get("tunnel") !== "") return { error: "--tunnel is not supported by Flotilla" };
  if (["etcd-cafile", "etcd-certfile", "etcd-keyfile"].some((f) => get(f) !== ""))
    return {
      error:
        "--etcd-cafile, --etcd-certfile and --etcd-keyfile are not supported: use --ca-file, --cert-file and --key-file",
    };
  const timeout = Number(get("request-timeout"));
  if (!(timeout > 0)) return { error: "--request-timeout must be a positive number of seconds" };
  let parsed: ReturnType<typeof parseEndpoint>;
  try {
    parsed = parseEndpoint(String(get("endpoint")));
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
  if (parsed.warning) err(`WARNING: ${parsed.warning}`);
  const tls = parsed.endpoint.kind === "tcp" && parsed.endpoint.tls === true ? readClientTls(get) : undefined;
  if (tls && "error" in tls) return tls;
  return {
    endpoint: parsed.endpoint,
    ...(tls ? { tls } : {}),
    timeoutMs: Math.round(timeout * 1000),
    debug: get("debug") === true ? (line) => err(`DEBUG ${line}`) : undefined,
  };
}
