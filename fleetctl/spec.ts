// fleetctl's command surface (fleet v1.0's fleetctl): commands, their flags and the
// global flags, plus the pure parts of argument handling (command lookup, flag values, env).

import { DEFAULT_ENDPOINT } from "./endpoint.js";
import {
  DEFAULT_LIST_MACHINES_FIELDS,
  DEFAULT_LIST_SERVICES_FIELDS,
  DEFAULT_LIST_UNIT_FILES_FIELDS,
  DEFAULT_LIST_UNITS_FIELDS,
  fieldKeys,
  LIST_MACHINES_FIELDS,
  LIST_SERVICES_FIELDS,
  LIST_UNIT_FILES_FIELDS,
  LIST_UNITS_FIELDS,
} from "./format.js";
import { DEFAULT_BLOCK_ATTEMPTS } from "./wait.js";

export type FlagType = "bool" | "string" | "int" | "float";
export type FlagValue = string | number | boolean;

export interface FlagSpec {
  name: string;
  type: FlagType;
  default: FlagValue;
  usage: string;
  /** Other names, e.g. `l` for `full`; one-letter names also work as `-l` and `--l`. */
  aliases?: string[];
}

export interface CommandSpec {
  name: string;
  /** Usage line after "fleetctl ". */
  use: string;
  short: string;
  long?: string;
  flags: FlagSpec[];
  /** Commands that run without contacting the API. */
  local?: boolean;
}

const DEPRECATED = "DEPRECATED: do not use this flag.";

export const GLOBAL_FLAGS: FlagSpec[] = [
  { name: "help", type: "bool", default: false, usage: "Print usage information and exit", aliases: ["h"] },
  { name: "debug", type: "bool", default: false, usage: "Print out more debug information to stderr" },
  { name: "version", type: "bool", default: false, usage: "Print the version and exit" },
  {
    name: "driver",
    type: "string",
    default: "API",
    usage: 'Adapter used to execute fleetctl commands. Only "API" is supported.',
  },
  { name: "endpoint", type: "string", default: DEFAULT_ENDPOINT, usage: "Location of the fleet API." },
  {
    name: "request-timeout",
    type: "float",
    default: 3,
    usage: "Amount of time in seconds to allow a single request before considering it failed.",
  },
  {
    name: "etcd-key-prefix",
    type: "string",
    default: "/_coreos.com/fleet/",
    usage: "Keyspace for fleet data in etcd (ignored: only the etcd driver used it)",
  },
  { name: "tunnel", type: "string", default: "", usage: "SSH tunnel to the API (not supported)" },
  { name: "ssh-username", type: "string", default: "core", usage: "Accepted for compatibility; unused" },
  { name: "ssh-timeout", type: "float", default: 10, usage: "Accepted for compatibility; unused" },
  {
    name: "strict-host-key-checking",
    type: "bool",
    default: true,
    usage: "Accepted for compatibility; unused",
  },
  {
    name: "known-hosts-file",
    type: "string",
    default: "~/.fleetctl/known_hosts",
    usage: "Accepted for compatibility; unused",
  },
  {
    name: "ca-file",
    type: "string",
    default: "",
    usage: "Location of the TLS CA file (the cluster CA) for an https:// endpoint.",
  },
  {
    name: "cert-file",
    type: "string",
    default: "",
    usage: "Location of the TLS client certificate (role admin or reader) for an https:// endpoint.",
  },
  { name: "key-file", type: "string", default: "", usage: "Location of the TLS key of --cert-file." },
  { name: "experimental-api", type: "bool", default: true, usage: DEPRECATED },
  { name: "etcd-cafile", type: "string", default: "", usage: DEPRECATED },
  { name: "etcd-certfile", type: "string", default: "", usage: DEPRECATED },
  { name: "etcd-keyfile", type: "string", default: "", usage: DEPRECATED },
];

/** Global flags that take a value, so the command word can be found after `--endpoint X`. */
const GLOBAL_VALUE_FLAGS = new Set(GLOBAL_FLAGS.filter((f) => f.type !== "bool").map((f) => f.name));

const blockAttempts = (what: string): FlagSpec => ({
  name: "block-attempts",
  type: "int",
  default: DEFAULT_BLOCK_ATTEMPTS,
  usage: `Wait until the units are ${what}, performing up to N attempts of 2 s before giving up. 0 waits forever.`,
});
const noBlock = (what: string): FlagSpec => ({
  name: "no-block",
  type: "bool",
  default: false,
  usage: `Do not wait until the units are ${what} before exiting. Always the case for global units.`,
});
const replace: FlagSpec = {
  name: "replace",
  type: "bool",
  default: false,
  usage: "Replace units in the cluster whose local unit file differs.",
};
const sign: FlagSpec = { name: "sign", type: "bool", default: false, usage: "DEPRECATED and ignored" };
const full: FlagSpec = {
  name: "full",
  type: "bool",
  default: false,
  usage: "Do not ellipsize fields on output",
  aliases: ["l"],
};
const noLegend: FlagSpec = {
  name: "no-legend",
  type: "bool",
  default: false,
  usage: "Do not print a legend (column headers)",
};
const sshPort: FlagSpec = {
  name: "ssh-port",
  type: "int",
  default: 22,
  usage: "Accepted for compatibility; unused",
};
const fields = (def: string, valid: Record<string, unknown>): FlagSpec => ({
  name: "fields",
  type: "string",
  default: def,
  usage: `Columns to print. Valid fields are "${fieldKeys(valid)}"`,
});

export const COMMANDS: CommandSpec[] = [
  {
    name: "cat",
    use: "cat UNIT",
    short: "Output the contents of a submitted unit",
    long: "Prints the unit file stored in the cluster, as fleet serializes it.",
    flags: [],
  },
  {
    name: "destroy",
    use: "destroy UNIT...",
    short: "Destroy one or more units in the cluster",
    long: "Removes units from the cluster entirely; they are stopped and unloaded first.",
    flags: [blockAttempts("destroyed"), noBlock("destroyed")],
  },
  {
    name: "fd-forward",
    use: "fd-forward SOCKET",
    short: "Proxy stdin and stdout to a unix socket (not supported by Flotilla)",
    flags: [],
    local: true,
  },
  { name: "help", use: "help [COMMAND]", short: "Help about any command", flags: [], local: true },
  {
    name: "journal",
    use: "journal [--lines=N] [-f|--follow] [--output=STRING] UNIT",
    short: "Print the journal of a unit in the cluster to stdout",
    long: "Prints the journal of a unit from the machine it runs on. Does not work with global units.",
    flags: [
      {
        name: "lines",
        type: "int",
        default: 10,
        usage: "Number of recent log lines to return",
        aliases: ["n"],
      },
      {
        name: "follow",
        type: "bool",
        default: false,
        usage: "Continuously print new entries as they are appended to the journal.",
        aliases: ["f"],
      },
      { name: "output", type: "string", default: "short", usage: "Output mode, as journalctl --output." },
      { name: "sudo", type: "bool", default: false, usage: "Accepted for compatibility; unused" },
      sshPort,
    ],
  },
  {
    name: "list-machines",
    use: "list-machines [-l|--full] [--no-legend] [--fields]",
    short: "Enumerate the current hosts in the cluster",
    long: "Lists the machines currently active in the cluster.",
    flags: [full, noLegend, fields(DEFAULT_LIST_MACHINES_FIELDS, LIST_MACHINES_FIELDS)],
  },
  {
    name: "list-services",
    use: "list-services [-l|--full] [--no-legend] [--fields] [-w|--watch] [SERVICE]",
    short: "List the service records of active units (Flotilla)",
    long:
      "Lists the discovery records of active units, as their agents publish them and DNS answers " +
      "NAME.service.flotilla: one line per instance, sorted by service, machine and unit. " +
      "With --watch, prints the table again whenever it changes, until interrupted.",
    flags: [
      full,
      noLegend,
      fields(DEFAULT_LIST_SERVICES_FIELDS, LIST_SERVICES_FIELDS),
      {
        name: "watch",
        type: "bool",
        default: false,
        usage: "Keep polling (every second) and print the table again when it changes",
        aliases: ["w"],
      },
    ],
  },
  {
    name: "list-unit-files",
    use: "list-unit-files [-l|--full] [--no-legend] [--fields]",
    short: "List the units that exist in the cluster.",
    long: "Lists every unit in the cluster, whether or not it is loaded on a machine.",
    flags: [full, noLegend, fields(DEFAULT_LIST_UNIT_FILES_FIELDS, LIST_UNIT_FILES_FIELDS)],
  },
  {
    name: "list-units",
    use: "list-units [-l|--full] [--no-legend] [--fields]",
    short: "List the current state of units in the cluster",
    long: "Lists the systemd state of every unit loaded on a machine.",
    flags: [full, noLegend, fields(DEFAULT_LIST_UNITS_FIELDS, LIST_UNITS_FIELDS)],
  },
  {
    name: "load",
    use: "load [--no-block|--block-attempts=N] UNIT...",
    short: "Schedule one or more units in the cluster, first submitting them if necessary.",
    long: "Loads units into systemd on their machines without starting them.",
    flags: [sign, blockAttempts("loaded"), noBlock("loaded"), replace],
  },
  {
    name: "restart",
    use: "restart [--block-attempts=N] UNIT...",
    short: "Restart one or more units in the cluster.",
    long: "Stops then starts units; a loaded unit is only started.",
    flags: [blockAttempts("restarted")],
  },
  {
    name: "ssh",
    use: "ssh {MACHINE|UNIT} [COMMAND...]",
    short: "Open interactive shell on a machine in the cluster (not supported by Flotilla)",
    flags: [],
    local: true,
  },
  {
    name: "start",
    use: "start [--no-block|--block-attempts=N] UNIT...",
    short:
      "Instruct systemd to start one or more units in the cluster, first submitting and loading if necessary.",
    long: "Starts units, waiting until they are launched and systemd reports them active.",
    flags: [sign, blockAttempts("launched"), noBlock("launched"), replace],
  },
  {
    name: "status",
    use: "status UNIT...",
    short: "Output the status of one or more units in the cluster",
    long: "Prints `systemctl status` of units from the machines they run on.",
    flags: [sshPort],
  },
  {
    name: "stop",
    use: "stop [--no-block|--block-attempts=N] UNIT...",
    short: "Instruct systemd to stop one or more units in the cluster.",
    long: "Stops units but keeps them loaded, so they can be started again.",
    flags: [blockAttempts("stopped"), noBlock("stopped")],
  },
  {
    name: "submit",
    use: "submit UNIT...",
    short: "Upload one or more units to the cluster without starting them",
    long: "Uploads unit files; a unit already in the cluster is left alone unless --replace is given.",
    flags: [sign, replace, blockAttempts("submitted")],
  },
  {
    name: "unload",
    use: "unload [--no-block|--block-attempts=N] UNIT...",
    short: "Unschedule one or more units in the cluster.",
    flags: [blockAttempts("inactive"), noBlock("inactive")],
  },
  {
    name: "update",
    use: "update {check [MACHINE] | pause GROUP | resume GROUP | lock-size GROUP N | release GROUP HOLDER | clear-bad VERSION}",
    short:
      "Steer OS updates: check now, pause or resume a group, lock size, stuck holders, bad versions (Flotilla)",
    long:
      "check asks MACHINE (a machine ID or unique prefix), or every machine, to look for an update now. " +
      "pause and resume stop and restart a group's rollout. lock-size sets how many machines of a group " +
      "may reboot at once. release frees the reboot slot of a stuck HOLDER (a dead holder's slot also " +
      "frees itself when its lease expires). clear-bad lets a VERSION that a machine rolled back from " +
      "be installed again.",
    flags: [],
  },
  {
    name: "update-status",
    use: "update-status [-l|--full] [--no-legend]",
    short: "Show each machine's OS version, slot and update state (Flotilla)",
    long:
      "Lists every machine's OS version, boot slot, update state, last check and last rollback, " +
      "then the reboot groups (strategy, slots in use, pause, window, lock holders) and the versions " +
      "marked bad. With --no-legend only the machines are listed, without headers.",
    flags: [full, noLegend],
  },
  { name: "verify", use: "verify UNIT", short: "DEPRECATED - No longer works", flags: [], local: true },
  { name: "version", use: "version", short: "Print the version and exit", flags: [], local: true },
];

/** cobra's prefix matching: an exact name wins, else a unique prefix; ambiguity is "unknown". */
export function findCommand(word: string): CommandSpec | undefined {
  const exact = COMMANDS.find((c) => c.name === word);
  if (exact) return exact;
  const matches = COMMANDS.filter((c) => c.name.startsWith(word));
  return matches.length === 1 ? matches[0] : undefined;
}

/** Index of the command word: the first argument that is neither a flag nor a global flag's value. */
export function findCommandIndex(argv: readonly string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--") return i + 1 < argv.length ? i + 1 : -1;
    if (a.startsWith("-") && a !== "-") {
      const name = a.replace(/^--?/, "");
      if (!name.includes("=") && GLOBAL_VALUE_FLAGS.has(name)) i++;
      continue;
    }
    return i;
  }
  return -1;
}

/** Converts a raw flag value like pflag's Set; returns pflag's error text on a bad value. */
export function convertFlag(spec: FlagSpec, raw: string | boolean): FlagValue | { error: string } {
  const bad = (fn: string): { error: string } => ({
    error: `invalid argument ${JSON.stringify(String(raw))} for "--${spec.name}" flag: strconv.${fn}: parsing ${JSON.stringify(String(raw))}: invalid syntax`,
  });
  switch (spec.type) {
    case "bool": {
      if (typeof raw === "boolean") return raw;
      const b = parseGoBool(raw);
      return b === undefined ? bad("ParseBool") : b;
    }
    case "int":
      return typeof raw === "string" && /^[+-]?\d+$/.test(raw) ? Number.parseInt(raw, 10) : bad("ParseInt");
    case "float": {
      const n = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : Number.NaN;
      return Number.isFinite(n) ? n : bad("ParseFloat");
    }
    case "string":
      return String(raw === true ? "" : raw);
  }
}

/** Go's strconv.ParseBool. */
export function parseGoBool(s: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(s)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(s)) return false;
  return undefined;
}

/**
 * Fills global flags not given on the command line from FLEETCTL_<NAME> (dashes become
 * underscores), like fleet's getFlagsFromEnv: empty or unparsable values are ignored.
 */
export function globalsFromEnv(
  given: Record<string, FlagValue>,
  env: Record<string, string | undefined>,
): Record<string, FlagValue> {
  const out: Record<string, FlagValue> = { ...given };
  for (const spec of GLOBAL_FLAGS) {
    if (Object.hasOwn(given, spec.name)) continue;
    const raw = env[`FLEETCTL_${spec.name.toUpperCase().replace(/-/g, "_")}`];
    if (raw === undefined || raw === "") continue;
    const v = convertFlag(spec, raw);
    if (typeof v !== "object") out[spec.name] = v;
  }
  return out;
}
