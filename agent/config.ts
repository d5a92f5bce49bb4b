// Agent configuration from three layers, later wins: a JSON file, FLOTILLA_* environment
// variables, command-line flags. Parsing is pure so every mistake is reported with its origin.

import { readFileSync } from "node:fs";
import { type ApiLimits, DEFAULT_API_LIMITS } from "./api/limits.js";
import { fenceTimingProblem } from "./cluster/fence.js";
import { validateRegistryLocation } from "./containers/registries.js";
import { DEFAULT_DNS_TCP_IDLE_MS, DEFAULT_DNS_TCP_MAX_CONNECTIONS } from "./discovery/server.js";
import { DEFAULT_SINGLE_INSTANCE_GRACE_MS } from "./engine/scheduler.js";
import { MACHINE_ID } from "./model.js";
import { parseVersion } from "./update/decide.js";
import { channelOfURL } from "./update/manifest.js";

export interface AgentConfig {
  etcdEndpoints: string[];
  etcdPrefix: string;
  /** Explicit machine ID; defaults to /etc/machine-id. */
  machineID?: string;
  publicIP?: string;
  metadata: Record<string, string>;
  /** Unix socket path for the fleet API ("" disables it). */
  apiSocket: string;
  /** host:port for the TCP API listener ("" disables it). */
  apiListen: string;
  /** Machine lease TTL: how long a silent machine stays a member. */
  ttlSeconds: number;
  engineIntervalMs: number;
  agentIntervalMs: number;
  /** Never lead the engine (fleet's disable_engine). */
  disableEngine: boolean;
  /** Failed-unit migration: how many moves before giving up, and the first backoff. */
  maxFailureMoves: number;
  failureBackoffMs: number;
  /** Engine: how long a lost machine's SingleInstance units wait before they move (docs/units.md). */
  singleInstanceGraceMs: number;
  /** Machine: how long before its lease's earliest expiry it kills its SingleInstance units. */
  fenceMarginMs: number;
  unitDir: string;
  logLevel: string;
  /** Addresses (host:port) the service-discovery DNS answers on; "public" = the public IP. */
  dnsListen: string[];
  /** API page size (fleet's token_limit). */
  tokenLimit: number;
  /** containers-auth.json(5) for pulls from registries that need credentials. */
  registryAuthFile: string;
  /** Registries podman may reach over plain HTTP (or without verifying TLS): HOST[:PORT][/NAMESPACE]. */
  insecureRegistries: string[];
  /** The OS update channel's base URL (…/channels/stable/); "" turns the updater off. */
  updateChannelURL: string;
  /** Reboot group: its strategy, lock size, window and pause live in etcd (fleetctl update). */
  updateGroup: string;
  /** Channel poll interval; each wait is jittered so a fleet does not poll in step. */
  updateIntervalSeconds: number;
  /** Disk holding the A/B partitions; "" = the disk of PARTLABEL=USR-A. */
  updateDisk: string;
  /** Where the ESP is mounted (systemd-boot's loader entries). */
  espDir: string;
  /** Downloads, state.json and gate-failure.json, on ROOT (shared by both slots). */
  stateDir: string;
  /** TTL of the reboot lock's lease: long enough to survive a reboot and the health gate. */
  rebootLeaseSeconds: number;
  /** How long every health check must pass without interruption before a new slot is blessed. */
  healthSoakSeconds: number;
  /** How long a new slot's checks may keep failing (boot settling) before the gate fails it. */
  healthSettleSeconds: number;
  /** Install exactly this OS version ("" = follow the channel). */
  pinnedVersion: string;
  /** Resource limits of the API and DNS listeners (docs/security.md "Resource limits"). */
  limits: ResourceLimits;
  // Cluster PKI (docs/security.md). One CA, and this machine's certificate, serve three ends: the
  // TCP API (TLS only, clients need a certificate from the CA), calls to other agents (status and
  // journal proxy) and etcd (used when the endpoints are https). PEM files.
  /** The cluster CA: API clients, other agents and etcd must present certificates it issued. */
  tlsCaFile: string;
  /** This machine's certificate (OU=machine; SANs its address and host name) and its key. */
  tlsCertFile: string;
  tlsKeyFile: string;
  /** etcd user and password on top of the certificate, when etcd has auth enabled ("" = none). */
  etcdUsername: string;
  etcdPassword: string;
}

// ---- Resource limits: connection caps and timeouts per listener, followed journals.

export interface ResourceLimits {
  api: ApiLimits;
  /** Open DNS-over-TCP connections per DNS address; at the cap the longest-idle one makes room. */
  dnsTcpMaxConnections: number;
  /** A DNS-over-TCP connection must deliver a whole query within this, or it is closed. */
  dnsTcpIdleTimeoutMs: number;
}

export const DEFAULT_LIMITS: ResourceLimits = {
  api: DEFAULT_API_LIMITS,
  dnsTcpMaxConnections: DEFAULT_DNS_TCP_MAX_CONNECTIONS,
  dnsTcpIdleTimeoutMs: DEFAULT_DNS_TCP_IDLE_MS,
};

/** Setting name -> where it goes in `limits`; every one takes a positive integer. */
const LIMIT_SETTINGS: Record<string, (limits: ResourceLimits, n: number) => void> = {
  "api-max-connections": (l, n) => {
    l.api.tcp.maxConnections = n;
  },
  "api-socket-max-connections": (l, n) => {
    l.api.socket.maxConnections = n;
  },
  "api-headers-timeout-ms": (l, n) => {
    l.api.tcp.headersTimeoutMs = n;
    l.api.socket.headersTimeoutMs = n;
  },
  "api-request-timeout-ms": (l, n) => {
    l.api.tcp.requestTimeoutMs = n;
    l.api.socket.requestTimeoutMs = n;
  },
  "api-idle-timeout-ms": (l, n) => {
    l.api.tcp.idleTimeoutMs = n;
    l.api.socket.idleTimeoutMs = n;
  },
  "journal-follow-max": (l, n) => {
    l.api.journalFollows = n;
  },
  "dns-tcp-max-connections": (l, n) => {
    l.dnsTcpMaxConnections = n;
  },
  "dns-tcp-idle-timeout-ms": (l, n) => {
    l.dnsTcpIdleTimeoutMs = n;
  },
};

const LIMIT_SETTERS: Record<string, Setter> = Object.fromEntries(
  Object.entries(LIMIT_SETTINGS).map(([key, set]): [string, Setter] => [
    key,
    (cfg, raw) => {
      const n = Number(raw);
      // Above a million a cap or a timeout is a typo, and Node's timers overflow past 2^31 ms.
      if (!/^\d+$/.test(raw) || n <= 0 || n > 1_000_000_000)
        return `must be a positive integer up to 1000000000, got ${JSON.stringify(raw)}`;
      set(cfg.limits, n);
      return undefined;
    },
  ]),
);

// ---- end of resource limits

export const DEFAULT_CONFIG: AgentConfig = {
  etcdEndpoints: ["http://127.0.0.1:2379"],
  etcdPrefix: "/flotilla/",
  metadata: {},
  apiSocket: "/var/run/fleet.sock",
  apiListen: "",
  ttlSeconds: 5,
  engineIntervalMs: 1000,
  agentIntervalMs: 5000,
  disableEngine: false,
  maxFailureMoves: 3,
  failureBackoffMs: 1000,
  singleInstanceGraceMs: DEFAULT_SINGLE_INSTANCE_GRACE_MS,
  fenceMarginMs: 1000,
  unitDir: "/run/fleet/units",
  logLevel: "info",
  dnsListen: ["public:53", "127.0.0.1:53"],
  registryAuthFile: "/etc/flotilla/registry-auth.json",
  insecureRegistries: [],
  tokenLimit: 100,
  updateChannelURL: "",
  updateGroup: "default",
  updateIntervalSeconds: 3600,
  updateDisk: "",
  espDir: "/efi",
  stateDir: "/var/lib/flotilla/update",
  rebootLeaseSeconds: 900,
  healthSoakSeconds: 60,
  healthSettleSeconds: 600,
  pinnedVersion: "",
  limits: DEFAULT_LIMITS,
  tlsCaFile: "/etc/flotilla/tls/ca.pem",
  tlsCertFile: "/etc/flotilla/tls/machine.pem",
  tlsKeyFile: "/etc/flotilla/tls/machine-key.pem",
  etcdUsername: "",
  etcdPassword: "",
};

export class ConfigError extends Error {
  constructor(problems: string[]) {
    super(`invalid agent configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

type Setter = (cfg: AgentConfig, raw: string) => string | undefined;

const positiveInt =
  (
    key:
      | "ttlSeconds"
      | "engineIntervalMs"
      | "agentIntervalMs"
      | "failureBackoffMs"
      | "singleInstanceGraceMs"
      | "fenceMarginMs"
      | "tokenLimit"
      | "updateIntervalSeconds"
      | "rebootLeaseSeconds"
      | "healthSettleSeconds",
  ): Setter =>
  (cfg, raw) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n <= 0) return `must be a positive integer, got ${JSON.stringify(raw)}`;
    cfg[key] = n;
    return undefined;
  };

const absolutePath =
  (key: "tlsCaFile" | "tlsCertFile" | "tlsKeyFile"): Setter =>
  (cfg, raw) => {
    if (!raw.startsWith("/")) return `must be an absolute path, got ${JSON.stringify(raw)}`;
    cfg[key] = raw;
    return undefined;
  };

const SETTERS: Record<string, Setter> = {
  "etcd-endpoints": (cfg, raw) => {
    const eps = raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = eps.find((e) => !/^https?:\/\/[^/]+\/?$/.test(e));
    if (eps.length === 0 || bad !== undefined)
      return `must be a comma-separated list of http(s)://host:port URLs, got ${JSON.stringify(raw)}`;
    cfg.etcdEndpoints = eps;
    return undefined;
  },
  "etcd-prefix": (cfg, raw) => {
    if (!raw.startsWith("/") || !raw.endsWith("/")) return `must start and end with "/", got ${raw}`;
    cfg.etcdPrefix = raw;
    return undefined;
  },
  "machine-id": (cfg, raw) => {
    if (!MACHINE_ID.test(raw)) return `must be 32 lowercase hex characters, got ${JSON.stringify(raw)}`;
    cfg.machineID = raw;
    return undefined;
  },
  "public-ip": (cfg, raw) => {
    cfg.publicIP = raw;
    return undefined;
  },
  metadata: (cfg, raw) => {
    const meta: Record<string, string> = {};
    for (const pair of raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean)) {
      const eq = pair.indexOf("=");
      if (eq <= 0) return `must be k=v pairs separated by commas, got ${JSON.stringify(pair)}`;
      meta[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    cfg.metadata = meta;
    return undefined;
  },
  "api-socket": (cfg, raw) => {
    cfg.apiSocket = raw;
    return undefined;
  },
  "api-listen": (cfg, raw) => {
    if (raw !== "" && !/^[^:]*:\d+$/.test(raw)) return `must be host:port, got ${JSON.stringify(raw)}`;
    cfg.apiListen = raw;
    return undefined;
  },
  ttl: positiveInt("ttlSeconds"),
  "engine-interval-ms": positiveInt("engineIntervalMs"),
  "agent-interval-ms": positiveInt("agentIntervalMs"),
  "failure-backoff-ms": positiveInt("failureBackoffMs"),
  "single-instance-grace-ms": positiveInt("singleInstanceGraceMs"),
  "fence-margin-ms": positiveInt("fenceMarginMs"),
  // Tokens carry the limit as a uint16, so a larger page size could not be paged through.
  "token-limit": (cfg, raw) =>
    positiveInt("tokenLimit")(cfg, raw) ?? (cfg.tokenLimit > 65535 ? "must be at most 65535" : undefined),
  "max-failure-moves": (cfg, raw) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0) return `must be a non-negative integer, got ${JSON.stringify(raw)}`;
    cfg.maxFailureMoves = n;
    return undefined;
  },
  "disable-engine": (cfg, raw) => {
    if (!/^(true|false|1|0)$/.test(raw)) return `must be true or false, got ${JSON.stringify(raw)}`;
    cfg.disableEngine = raw === "true" || raw === "1";
    return undefined;
  },
  "dns-listen": (cfg, raw) => {
    const addrs = raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = addrs.find((a) => !/^[^:]+:\d+$/.test(a));
    if (bad !== undefined)
      return `must be host:port addresses separated by commas, got ${JSON.stringify(bad)}`;
    cfg.dnsListen = addrs;
    return undefined;
  },
  "registry-auth-file": (cfg, raw) => {
    cfg.registryAuthFile = raw;
    return undefined;
  },
  "insecure-registries": (cfg, raw) => {
    const locations = raw
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    for (const l of locations) {
      const problem = validateRegistryLocation(l);
      if (problem !== undefined) return problem;
    }
    cfg.insecureRegistries = locations;
    return undefined;
  },
  "unit-dir": (cfg, raw) => {
    cfg.unitDir = raw;
    return undefined;
  },
  "update-channel-url": (cfg, raw) => {
    if (raw !== "" && !/^https?:\/\/[^/]+/.test(raw))
      return `must be an http(s) URL or "", got ${JSON.stringify(raw)}`;
    // Manifests must name the channel they are fetched from: the URL's last segment.
    if (raw !== "" && !channelOfURL(raw))
      return `must end in a channel name (a-z 0-9 . -), e.g. http://updates.example/channels/stable/, got ${JSON.stringify(raw)}`;
    // Release paths are resolved against it: it names a directory.
    cfg.updateChannelURL = raw === "" || raw.endsWith("/") ? raw : `${raw}/`;
    return undefined;
  },
  "update-group": (cfg, raw) => {
    // FleetLock's group syntax, so one group name works for both.
    if (!/^[a-zA-Z0-9.-]+$/.test(raw)) return `must match [a-zA-Z0-9.-]+, got ${JSON.stringify(raw)}`;
    cfg.updateGroup = raw;
    return undefined;
  },
  "update-interval-seconds": positiveInt("updateIntervalSeconds"),
  "update-disk": (cfg, raw) => {
    cfg.updateDisk = raw;
    return undefined;
  },
  "esp-dir": (cfg, raw) => {
    if (!raw.startsWith("/")) return `must be an absolute path, got ${JSON.stringify(raw)}`;
    cfg.espDir = raw;
    return undefined;
  },
  "state-dir": (cfg, raw) => {
    if (!raw.startsWith("/")) return `must be an absolute path, got ${JSON.stringify(raw)}`;
    cfg.stateDir = raw;
    return undefined;
  },
  "reboot-lease-seconds": positiveInt("rebootLeaseSeconds"),
  "health-soak-seconds": (cfg, raw) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0) return `must be a non-negative integer, got ${JSON.stringify(raw)}`;
    cfg.healthSoakSeconds = n;
    return undefined;
  },
  "health-settle-seconds": positiveInt("healthSettleSeconds"),
  "pinned-version": (cfg, raw) => {
    if (raw !== "" && !parseVersion(raw))
      return `must be MAJOR.MINOR.PATCH or "", got ${JSON.stringify(raw)}`;
    cfg.pinnedVersion = raw;
    return undefined;
  },
  "tls-ca-file": absolutePath("tlsCaFile"),
  "tls-cert-file": absolutePath("tlsCertFile"),
  "tls-key-file": absolutePath("tlsKeyFile"),
  "etcd-username": (cfg, raw) => {
    cfg.etcdUsername = raw;
    return undefined;
  },
  "etcd-password": (cfg, raw) => {
    cfg.etcdPassword = raw;
    return undefined;
  },
  "log-level": (cfg, raw) => {
    if (!/^(trace|debug|info|warn|error|fatal)$/.test(raw)) return `unknown log level ${JSON.stringify(raw)}`;
    cfg.logLevel = raw;
    return undefined;
  },
  ...LIMIT_SETTERS,
};

export const CONFIG_KEYS = Object.keys(SETTERS);

const envName = (key: string) => `FLOTILLA_${key.toUpperCase().replaceAll("-", "_")}`;

/**
 * Builds the config. `file` is the parsed JSON file (keys as in CONFIG_KEYS; values strings,
 * numbers, booleans, or arrays/objects for etcd-endpoints/metadata), `env` the process env and
 * `flags` `--key=value` arguments. Throws ConfigError naming every problem and where it came from.
 */
export function resolveConfig(
  file: Record<string, unknown> | undefined,
  env: Record<string, string | undefined>,
  flags: string[],
  fileName = "config file",
): AgentConfig {
  const cfg: AgentConfig = structuredClone(DEFAULT_CONFIG);
  const problems: string[] = [];
  const apply = (origin: string, key: string, raw: string) => {
    const setter = SETTERS[key];
    if (!setter) {
      problems.push(`${origin}: unknown setting`);
      return;
    }
    const err = setter(cfg, raw);
    if (err) problems.push(`${origin}: ${err}`);
  };
  for (const [key, value] of Object.entries(file ?? {})) {
    apply(`${fileName}: "${key}"`, key, fileValueToString(value));
  }
  for (const key of CONFIG_KEYS) {
    const raw = env[envName(key)];
    if (raw !== undefined) apply(`environment ${envName(key)}`, key, raw);
  }
  for (const flag of flags) {
    const m = /^--([a-z-]+)=(.*)$/s.exec(flag);
    if (!m) problems.push(`flag ${flag}: expected --key=value`);
    else apply(`flag --${m[1]}`, m[1] as string, m[2] as string);
  }
  const schemes = new Set(cfg.etcdEndpoints.map((e) => e.slice(0, e.indexOf(":"))));
  if (schemes.size > 1) problems.push("etcd-endpoints: mix http:// and https://; use one scheme for all");
  if (cfg.etcdPassword !== "" && cfg.etcdUsername === "")
    problems.push("etcd-password: set without etcd-username");
  const fenceProblem = fenceTimingProblem({ ttlMs: cfg.ttlSeconds * 1000, marginMs: cfg.fenceMarginMs });
  if (fenceProblem !== undefined) problems.push(fenceProblem);
  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}

/** The PEM contents of the cluster PKI files, read when the TCP API or an https etcd needs them. */
export interface TlsFiles {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Reads tls-ca-file, tls-cert-file and tls-key-file; a missing one is a ConfigError naming it and why. */
export function readTlsFiles(cfg: AgentConfig, neededBy: string): TlsFiles {
  const problems: string[] = [];
  const read = (key: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      problems.push(`${key} ${path} (needed by ${neededBy}): ${(err as Error).message}`);
      return Buffer.alloc(0);
    }
  };
  const files = {
    ca: read("tls-ca-file", cfg.tlsCaFile),
    cert: read("tls-cert-file", cfg.tlsCertFile),
    key: read("tls-key-file", cfg.tlsKeyFile),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return files;
}

/** The etcd client's security from the config: the PKI files (read by readTlsFiles) and user. */
export function etcdSecurity(cfg: AgentConfig, tls: TlsFiles | undefined) {
  return {
    ...(tls ? { tls } : {}),
    ...(cfg.etcdUsername ? { username: cfg.etcdUsername, password: cfg.etcdPassword } : {}),
  };
}

/** What needs the PKI files under `cfg`, or undefined when nothing does (socket-only, http etcd). */
export function tlsNeededBy(cfg: AgentConfig): string | undefined {
  const needs = [
    ...(cfg.apiListen !== "" ? ["the TCP API (api-listen)"] : []),
    ...(cfg.etcdEndpoints.some((e) => e.startsWith("https:")) ? ["etcd over https"] : []),
  ];
  return needs.length > 0 ? needs.join(" and ") : undefined;
}

function fileValueToString(value: unknown): string {
  if (Array.isArray(value)) return value.join(",");
  if (value !== null && typeof value === "object")
    return Object.entries(value)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(",");
  return String(value);
}

/** Reads the JSON config file; a missing file is fine, a malformed one is an error. */
export function readConfigFile(path: string): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new ConfigError([`${path}: ${(err as Error).message}`]);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
      throw new Error("top level must be a JSON object");
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError([`${path}: ${(err as Error).message}`]);
  }
}
