// The [Container] section of a unit, read into a ContainerSpec, with every problem found on the way.
// Keys and their syntax follow Podman Quadlet (podman-systemd.unit(5)); Network, PublishPort and
// Volume take Docker's syntax. Validation and rendering both read the section through here, so the
// unit the API accepts is exactly the unit the agent can render.

import { isIP } from "node:net";
import type { UnitOption } from "../model.js";
import { unitNameParts } from "../unit/names.js";
import { splitWords } from "./words.js";

export const CONTAINER_SECTION = "Container";

export type PullPolicy = "always" | "missing" | "never";
export const PULL_POLICIES: readonly PullPolicy[] = ["always", "missing", "never"];

export type NetworkMode =
  | { mode: "bridge" }
  | { mode: "host" }
  | { mode: "none" }
  | { mode: "container"; container: string };

export interface PortRange {
  start: number;
  end: number;
}

/** One PublishPort: `[ip:][hostPort:]containerPort[/tcp|udp]`. */
export interface PortMapping {
  hostIP?: string;
  /** Absent: podman picks a free host port. */
  hostPort?: PortRange;
  containerPort: PortRange;
  protocol: "tcp" | "udp";
  /** As written, which is what podman is given. */
  spec: string;
}

export interface ContainerSpec {
  image: string;
  /** The podman container name: ContainerName, or one derived from the unit name. */
  containerName: string;
  /** Command and arguments replacing the image's CMD; undefined keeps the image's. */
  exec?: string[];
  publishPorts: PortMapping[];
  /** Volume values as written (`SOURCE:/path[:OPTIONS]` or `/path`). */
  volumes: string[];
  /** `NAME=VALUE` pairs for the container, in order. */
  environment: string[];
  environmentFiles: string[];
  network: NetworkMode;
  user?: string;
  workingDir?: string;
  pull: PullPolicy;
  podmanArgs: string[];
}

type Key =
  | "Image"
  | "ContainerName"
  | "Exec"
  | "PublishPort"
  | "Volume"
  | "Environment"
  | "EnvironmentFile"
  | "Network"
  | "User"
  | "WorkingDir"
  | "Pull"
  | "PodmanArgs";

export const CONTAINER_KEYS: readonly Key[] = [
  "Image",
  "ContainerName",
  "Exec",
  "PublishPort",
  "Volume",
  "Environment",
  "EnvironmentFile",
  "Network",
  "User",
  "WorkingDir",
  "Pull",
  "PodmanArgs",
];

/** Keys whose values are command-line words (quotes group, C escapes are decoded). */
const SPLIT_KEYS = new Set<Key>(["Exec", "Environment", "EnvironmentFile", "PodmanArgs"]);

/** Keys whose assignments accumulate (Exec is stored like them, and its last one is used). */
const MULTI_VALUED = new Set<Key>([
  "Exec",
  "PublishPort",
  "Volume",
  "Environment",
  "EnvironmentFile",
  "PodmanArgs",
]);

/** podman's rule for container and volume names. */
const PODMAN_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** podman 4.3 `-v` options. */
const VOLUME_OPTIONS = new Set([
  "rw",
  "ro",
  "z",
  "Z",
  "O",
  "U",
  "copy",
  "nocopy",
  "dev",
  "nodev",
  "exec",
  "noexec",
  "suid",
  "nosuid",
  "bind",
  "rbind",
  "shared",
  "rshared",
  "slave",
  "rslave",
  "private",
  "rprivate",
  "unbindable",
  "runbindable",
  "idmap",
]);

/** [Service] settings a container unit depends on, and the values that keep it working. */
const SERVICE_CONSTRAINTS: readonly { key: string; allowed: readonly string[]; why: string }[] = [
  {
    key: "Type",
    allowed: ["notify"],
    why: "the unit is Type=notify so that it is active only once the container runs",
  },
  {
    key: "NotifyAccess",
    allowed: ["all"],
    why: "conmon, not the main process at first, reports the container as started",
  },
  {
    key: "KillMode",
    allowed: ["mixed", "control-group"],
    why: "other modes can leave container processes behind",
  },
];

export interface ParseResult {
  /** Undefined when there are errors. */
  spec?: ContainerSpec;
  errors: string[];
}

/** Whether the unit has a [Container] section, i.e. whether the agent renders it. */
export function hasContainerSection(options: readonly UnitOption[]): boolean {
  return options.some((option) => option.section === CONTAINER_SECTION);
}

/**
 * Reads the [Container] section of unit `name`. Single-valued keys take their last assignment and
 * list keys accumulate, as in systemd; an empty assignment resets either. In values, %n %N %p %i are
 * the unit's name, name without suffix, prefix and instance, %% is a literal %, and any other % is
 * literal too. Also checks the [Service] settings that a container unit cannot have.
 */
export function parseContainerSection(name: string, options: readonly UnitOption[]): ParseResult {
  const errors: string[] = [];
  const parts = unitNameParts(name);
  const expand = (value: string) => expandSpecifiers(value, parts);
  const problem = (key: string, value: string, message: string) =>
    errors.push(`${name}: [Container] ${key}=${value}: ${message}`);

  for (const option of options) {
    if (option.section !== CONTAINER_SECTION && option.section.toLowerCase() === "container") {
      errors.push(
        `${name}: section [${option.section}] is not [Container] (section names are case-sensitive)`,
      );
      break;
    }
  }
  if (!hasContainerSection(options)) return { errors };
  if (!name.endsWith(".service")) {
    errors.push(`${name}: [Container] is only allowed in a .service unit`);
  }

  const single = new Map<Key, string>();
  const lists = new Map<Key, { value: string; words: string[] }[]>();
  const known = new Set<string>(CONTAINER_KEYS);
  for (const option of options) {
    if (option.section !== CONTAINER_SECTION) continue;
    const key = option.name as Key;
    if (!known.has(key)) {
      const near = CONTAINER_KEYS.find((k) => k.toLowerCase() === option.name.toLowerCase());
      const hint = near ? `did you mean ${near}=?` : `[Container] keys are ${CONTAINER_KEYS.join(", ")}`;
      problem(option.name, option.value, `unknown key (${hint})`);
      continue;
    }
    const value = option.value.trim();
    const { words, unterminatedQuote } = splitWords(value);
    if (unterminatedQuote && SPLIT_KEYS.has(key)) problem(key, option.value, "unterminated quote");
    if (MULTI_VALUED.has(key)) {
      const entries = lists.get(key) ?? [];
      if (value === "") entries.length = 0;
      else entries.push({ value: expand(value), words: words.map(expand) });
      lists.set(key, entries);
    } else {
      single.set(key, expand(value));
    }
  }
  const all = (key: Key) => lists.get(key) ?? [];
  const words = (key: Key) => all(key).flatMap((entry) => entry.words);
  const last = (key: Key) => {
    const value = single.get(key);
    return value === "" ? undefined : value;
  };

  const image = last("Image");
  if (image === undefined) {
    errors.push(
      `${name}: [Container] has no Image= (the image to run, e.g. Image=docker.io/library/busybox)`,
    );
  } else if (/\s/.test(image)) {
    problem("Image", image, "an image reference cannot contain spaces");
  }

  const containerName = last("ContainerName") ?? defaultContainerName(parts);
  if (!PODMAN_NAME.test(containerName)) {
    problem("ContainerName", containerName, nameProblem(containerName));
  }

  const network = parseNetwork(last("Network"), (message) =>
    problem("Network", single.get("Network") ?? "", message),
  );

  const publishPorts: PortMapping[] = [];
  for (const { value } of all("PublishPort")) {
    const parsed = parsePortMapping(value);
    if (typeof parsed === "string") problem("PublishPort", value, parsed);
    else publishPorts.push(parsed);
    if (network !== undefined && network.mode !== "bridge") {
      problem(
        "PublishPort",
        value,
        `ports are published only with Network=bridge, not ${networkText(network)}`,
      );
    }
  }

  const volumes = all("Volume").map((entry) => entry.value);
  for (const volume of volumes) {
    const message = volumeProblem(volume);
    if (message !== undefined) problem("Volume", volume, message);
  }

  for (const { value, words: pairs } of all("Environment")) {
    for (const pair of pairs) {
      if (pair.indexOf("=") < 1) problem("Environment", value, `${JSON.stringify(pair)} is not NAME=VALUE`);
    }
  }
  for (const { value, words: files } of all("EnvironmentFile")) {
    for (const file of files) {
      if (!file.startsWith("/"))
        problem("EnvironmentFile", value, `${JSON.stringify(file)} is not an absolute path`);
    }
  }

  const workingDir = last("WorkingDir");
  if (workingDir !== undefined && !workingDir.startsWith("/")) {
    problem("WorkingDir", workingDir, "the working directory must be an absolute path");
  }

  const pullValue = last("Pull") ?? "missing";
  const pull = PULL_POLICIES.find((policy) => policy === pullValue);
  if (pull === undefined) problem("Pull", pullValue, `the pull policy must be ${PULL_POLICIES.join(", ")}`);

  for (const option of options) {
    if (option.section !== "Service") continue;
    if (option.name === "ExecStart") {
      errors.push(
        `${name}: [Service] ExecStart= cannot be used with [Container]: the agent generates the command that runs the container (put the container's command in Exec=)`,
      );
    }
    const constraint = SERVICE_CONSTRAINTS.find((c) => c.key === option.name);
    if (constraint && !constraint.allowed.includes(option.value.trim())) {
      errors.push(
        `${name}: [Service] ${option.name}=${option.value} cannot be used with [Container]: ${constraint.why} (allowed: ${constraint.allowed.join(", ")})`,
      );
    }
  }

  if (errors.length > 0 || image === undefined || network === undefined || pull === undefined) {
    return { errors };
  }
  const execEntries = all("Exec");
  const spec: ContainerSpec = {
    image,
    containerName,
    publishPorts,
    volumes,
    environment: words("Environment"),
    environmentFiles: words("EnvironmentFile"),
    network,
    pull,
    podmanArgs: words("PodmanArgs"),
  };
  // Exec is single-valued but split into words: the last non-reset assignment is the command.
  if (execEntries.length > 0) spec.exec = execEntries.at(-1)?.words ?? [];
  const user = last("User");
  if (user !== undefined) spec.user = user;
  if (workingDir !== undefined) spec.workingDir = workingDir;
  return { spec, errors };
}

/** Quadlet's default: `systemd-NAME`, or `systemd-PREFIX_INSTANCE` (podman names allow no "@"). */
function defaultContainerName(parts: ReturnType<typeof unitNameParts>): string {
  const base = parts.base.includes("@") ? `${parts.prefix}_${parts.instance}` : parts.base;
  return `systemd-${base.replace(/[^a-zA-Z0-9_.-]/g, "_")}`;
}

function nameProblem(name: string): string {
  return `${JSON.stringify(name)} is not a valid container name (letters, digits, _ . -, starting with a letter or digit)`;
}

function expandSpecifiers(value: string, parts: ReturnType<typeof unitNameParts>): string {
  const expansions: Record<string, string> = {
    "%": "%",
    n: parts.full,
    N: parts.base,
    p: parts.prefix,
    i: parts.instance,
  };
  return value.replace(/%(.?)/gs, (match, letter: string) => expansions[letter] ?? match);
}

function parseNetwork(
  value: string | undefined,
  problem: (message: string) => void,
): NetworkMode | undefined {
  if (value === undefined || value === "bridge") return { mode: "bridge" };
  if (value === "host" || value === "none") return { mode: value };
  if (value.startsWith("container:")) {
    const container = value.slice("container:".length);
    if (container === "") {
      problem("container: needs the name of the container whose network to join (container:NAME)");
      return undefined;
    }
    if (!PODMAN_NAME.test(container)) {
      problem(nameProblem(container));
      return undefined;
    }
    return { mode: "container", container };
  }
  problem(`unknown network mode ${JSON.stringify(value)} (use bridge, host, none or container:NAME)`);
  return undefined;
}

function networkText(network: NetworkMode): string {
  return network.mode === "container" ? `container:${network.container}` : network.mode;
}

const PORT_SYNTAX = "expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]";

/** A PortMapping, or what is wrong with `spec`. */
export function parsePortMapping(spec: string): PortMapping | string {
  let rest = spec;
  let protocol: "tcp" | "udp" = "tcp";
  const slash = rest.lastIndexOf("/");
  if (slash !== -1) {
    const proto = rest.slice(slash + 1);
    if (proto !== "tcp" && proto !== "udp") return `protocol ${JSON.stringify(proto)} is not tcp or udp`;
    protocol = proto;
    rest = rest.slice(0, slash);
  }
  let hostIP: string | undefined;
  if (rest.startsWith("[")) {
    // [IPv6]:hostPort:containerPort
    const close = rest.indexOf("]:");
    if (close === -1) return PORT_SYNTAX;
    hostIP = rest.slice(1, close);
    if (isIP(hostIP) !== 6) return `${JSON.stringify(hostIP)} is not an IPv6 address`;
    rest = rest.slice(close + 2);
    if (rest.split(":").length !== 2) return PORT_SYNTAX;
  }
  const fields = rest.split(":");
  if (fields.length === 3) {
    hostIP = fields.shift();
    if (hostIP === undefined || isIP(hostIP) !== 4) return `${JSON.stringify(hostIP)} is not an IPv4 address`;
  }
  if (fields.length > 2) return PORT_SYNTAX;
  const containerField = fields.pop() ?? "";
  const hostField = fields.pop();
  const containerPort = parsePortRange(containerField, "container port");
  if (typeof containerPort === "string") return containerPort;
  const mapping: PortMapping = { containerPort, protocol, spec };
  if (hostIP !== undefined) mapping.hostIP = hostIP;
  if (hostField !== undefined && hostField !== "") {
    const hostPort = parsePortRange(hostField, "host port");
    if (typeof hostPort === "string") return hostPort;
    if (hostPort.end - hostPort.start !== containerPort.end - containerPort.start) {
      return `host ports ${hostField} and container ports ${containerField} are ranges of different lengths`;
    }
    mapping.hostPort = hostPort;
  } else if (hostField === "" && hostIP === undefined) {
    return PORT_SYNTAX;
  }
  return mapping;
}

function parsePortRange(text: string, what: string): PortRange | string {
  const match = /^(\d+)(?:-(\d+))?$/.exec(text);
  if (!match) return `${what} ${JSON.stringify(text)} is not a port number or START-END range`;
  const start = Number(match[1]);
  const end = match[2] === undefined ? start : Number(match[2]);
  for (const port of [start, end]) {
    if (port < 1 || port > 65535) return `${what} ${port} is outside 1-65535`;
  }
  if (end < start) return `${what} range ${text} ends before it starts`;
  return { start, end };
}

/** What is wrong with a Volume value, or undefined. */
function volumeProblem(volume: string): string | undefined {
  const fields = volume.split(":");
  if (fields.length > 3) return "expected SOURCE:/PATH[:OPTIONS] or /PATH";
  const [first = "", second, options] = fields;
  const source = second === undefined ? undefined : first;
  const target = second ?? first;
  if (source !== undefined && !source.startsWith("/") && !PODMAN_NAME.test(source)) {
    return `source ${JSON.stringify(source)} is neither an absolute host path nor a volume name (letters, digits, _ . -)`;
  }
  if (!target.startsWith("/")) return `container path ${JSON.stringify(target)} must be absolute`;
  for (const option of options === undefined ? [] : options.split(",")) {
    if (!VOLUME_OPTIONS.has(option) && !option.startsWith("idmap=")) {
      return `unknown volume option ${JSON.stringify(option)}`;
    }
  }
  return undefined;
}
