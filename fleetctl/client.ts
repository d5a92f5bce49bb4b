// The fleet v1 API client, on the wire as fleetctl's, over node:http.
// Unlike fleet's client, every request is bounded by --request-timeout (fleet's API client had
// none and hung on a silent server), and transport failures name the endpoint and the cause.

import { X509Certificate } from "node:crypto";
import http from "node:http";
import https from "node:https";
import {
  API_PREFIX,
  EXT_PREFIX,
  type WireCommandOutput,
  type WireError,
  type WireMachine,
  type WireMachinePage,
  type WireQuarantine,
  type WireService,
  type WireServiceList,
  type WireUnit,
  type WireUnitOption,
  type WireUnitPage,
  type WireUnitState,
  type WireUnitStatePage,
  type WireUpdateCheck,
  type WireUpdateGroup,
  type WireUpdates,
} from "../agent/api/schema.js";
import type { DesiredState } from "../agent/model.js";
import type { QuarantinedValue } from "../agent/registry/quarantine.js";
import type { GroupConfigChange } from "../agent/update/records.js";
import type { Endpoint } from "./endpoint.js";

/** An HTTP error answer, printed like fleet's generated client (`googleapi: Error 404: …`). */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly apiMessage: string,
  ) {
    super(
      apiMessage === ""
        ? `googleapi: got HTTP response code ${code}`
        : `googleapi: Error ${code}: ${apiMessage}`,
    );
    this.name = "ApiError";
  }
}

/** The endpoint could not be reached or did not answer in time. */
export class TransportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TransportError";
  }
}

export interface JournalOptions {
  lines: number;
  output: string;
}

/** What the commands need from the cluster; `undefined` means 404. */
export interface FleetApi {
  units(): Promise<WireUnit[]>;
  unit(name: string): Promise<WireUnit | undefined>;
  /** PUT with options only: the server resets the desired state to inactive (fleet's CreateUnit). */
  createUnit(name: string, options: WireUnitOption[]): Promise<void>;
  setUnitTargetState(name: string, state: DesiredState): Promise<void>;
  /** Returns false when the unit did not exist. */
  destroyUnit(name: string): Promise<boolean>;
  unitStates(): Promise<WireUnitState[]>;
  unitState(name: string): Promise<WireUnitState | undefined>;
  machines(): Promise<WireMachine[]>;
  /** Flotilla: the live service records, of one service when `service` is given. */
  services(service?: string): Promise<WireService[]>;
  unitStatus(name: string): Promise<WireCommandOutput | undefined>;
  unitJournal(name: string, opts: JournalOptions): Promise<WireCommandOutput | undefined>;
  /** Streams the followed journal to `sink` until the server ends it; false when the unit is unknown. */
  followJournal(name: string, opts: JournalOptions, sink: (chunk: string) => void): Promise<boolean>;
  /** Flotilla: every machine's update status, the reboot groups and the bad versions. */
  updates(): Promise<WireUpdates>;
  /** Flotilla: asks one machine, or all when none is given, to check for an update now. */
  checkUpdates(machineID?: string): Promise<WireUpdateCheck>;
  /** Flotilla: changes the given fields of a reboot group's config. */
  changeUpdateGroup(group: string, change: GroupConfigChange): Promise<WireUpdateGroup>;
  /** Flotilla: frees a holder's reboot slot; false when it held none. */
  releaseHolder(group: string, holder: string): Promise<boolean>;
  /** Flotilla: lets a version be installed again; false when it was not marked bad. */
  clearBadVersion(version: string): Promise<boolean>;
  /** Flotilla: the registry values the agent skips as bad; undefined when the server has no such list. */
  quarantine(): Promise<QuarantinedValue[] | undefined>;
  close(): void;
}

/** PEM contents from --ca-file, --cert-file and --key-file, for an https:// endpoint. */
export interface ClientTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface ClientOptions {
  endpoint: Endpoint;
  timeoutMs: number;
  tls?: ClientTls;
  /** Receives fleet's `HTTP GET …` debug lines. */
  debug?: (line: string) => void;
}

const JSON_HEADERS = { "Content-Type": "application/json" };

function unitPath(name: string): string {
  // encodeURIComponent escapes '@' as %40, like fleet's generated client.
  return `${API_PREFIX}/units/${encodeURIComponent(name)}`;
}

export class HttpFleetApi implements FleetApi {
  private readonly agent: http.Agent;
  private readonly host: string;

  constructor(private readonly opts: ClientOptions) {
    // No keep-alive: a poll reusing a socket the server just closed would fail for no reason,
    // and a fresh connection to the local socket costs next to nothing.
    const agentOpts = { keepAlive: false, maxSockets: 8 };
    this.agent = isTls(opts.endpoint)
      ? new https.Agent({ ...agentOpts, ...opts.tls })
      : new http.Agent(agentOpts);
    this.host = opts.endpoint.kind === "unix" ? "domain-sock" : hostHeader(opts.endpoint);
  }

  close(): void {
    this.agent.destroy();
  }

  units(): Promise<WireUnit[]> {
    return this.list<WireUnitPage, WireUnit>(`${API_PREFIX}/units`, (p) => p.units);
  }

  unit(name: string): Promise<WireUnit | undefined> {
    return this.getOptional<WireUnit>(`${unitPath(name)}?alt=json`);
  }

  async createUnit(name: string, options: WireUnitOption[]): Promise<void> {
    await this.call("PUT", `${unitPath(name)}?alt=json`, JSON.stringify({ name, options }));
  }

  async setUnitTargetState(name: string, state: DesiredState): Promise<void> {
    await this.call("PUT", `${unitPath(name)}?alt=json`, JSON.stringify({ desiredState: state, name }));
  }

  async destroyUnit(name: string): Promise<boolean> {
    try {
      await this.call("DELETE", `${unitPath(name)}?alt=json`);
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.code === 404) return false;
      throw err;
    }
  }

  unitStates(): Promise<WireUnitState[]> {
    return this.list<WireUnitStatePage, WireUnitState>(`${API_PREFIX}/state`, (p) => p.states);
  }

  unitState(name: string): Promise<WireUnitState | undefined> {
    return this.getOptional<WireUnitState>(`${API_PREFIX}/state/${encodeURIComponent(name)}?alt=json`);
  }

  machines(): Promise<WireMachine[]> {
    return this.list<WireMachinePage, WireMachine>(`${API_PREFIX}/machines`, (p) => p.machines);
  }

  async services(service?: string): Promise<WireService[]> {
    const query = service === undefined ? "" : `?service=${encodeURIComponent(service)}`;
    const path = `${EXT_PREFIX}/services${query}`;
    return parseJson<WireServiceList>(await this.call("GET", path), path).services ?? [];
  }

  unitStatus(name: string): Promise<WireCommandOutput | undefined> {
    return this.getOptional<WireCommandOutput>(`${EXT_PREFIX}/units/${encodeURIComponent(name)}/status`);
  }

  unitJournal(name: string, opts: JournalOptions): Promise<WireCommandOutput | undefined> {
    return this.getOptional<WireCommandOutput>(journalPath(name, opts, false));
  }

  async followJournal(name: string, opts: JournalOptions, sink: (chunk: string) => void): Promise<boolean> {
    const path = journalPath(name, opts, true);
    const { res } = await this.send("GET", path, undefined, true);
    res.setEncoding("utf8");
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) {
      let text = "";
      for await (const chunk of res) text += chunk;
      if (status === 404) return false;
      throw apiError(status, text);
    }
    await new Promise<void>((resolve, reject) => {
      res.on("data", (chunk: string) => sink(chunk));
      res.on("end", resolve);
      res.on("error", (err) => reject(this.transportError("GET", path, err)));
    });
    return true;
  }

  async updates(): Promise<WireUpdates> {
    const path = `${EXT_PREFIX}/updates`;
    return parseJson<WireUpdates>(await this.call("GET", path), path);
  }

  async checkUpdates(machineID?: string): Promise<WireUpdateCheck> {
    const path = `${EXT_PREFIX}/updates/check`;
    const body = JSON.stringify(machineID === undefined ? {} : { machineID });
    return parseJson<WireUpdateCheck>(await this.call("POST", path, body), path);
  }

  async changeUpdateGroup(group: string, change: GroupConfigChange): Promise<WireUpdateGroup> {
    const path = `${EXT_PREFIX}/update-groups/${encodeURIComponent(group)}`;
    return parseJson<WireUpdateGroup>(await this.call("PUT", path, JSON.stringify(change)), path);
  }

  releaseHolder(group: string, holder: string): Promise<boolean> {
    return this.deleteOptional(
      `${EXT_PREFIX}/update-groups/${encodeURIComponent(group)}/holders/${encodeURIComponent(holder)}`,
    );
  }

  clearBadVersion(version: string): Promise<boolean> {
    return this.deleteOptional(`${EXT_PREFIX}/updates/bad/${encodeURIComponent(version)}`);
  }

  async quarantine(): Promise<QuarantinedValue[] | undefined> {
    const list = await this.getOptional<WireQuarantine>(`${EXT_PREFIX}/quarantine`);
    if (list === undefined) return undefined;
    // Shown to the operator as text: keep only entries that have a key and a reason.
    const values: unknown = list.values;
    return Array.isArray(values)
      ? values.filter(
          (v): v is QuarantinedValue => typeof v?.key === "string" && typeof v?.reason === "string",
        )
      : [];
  }

  private async deleteOptional(path: string): Promise<boolean> {
    try {
      await this.call("DELETE", path);
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.code === 404) return false;
      throw err;
    }
  }

  /** GET every page, following nextPageToken until there is none (fleet's client/http.go). */
  private async list<P extends { nextPageToken?: string }, T>(
    path: string,
    items: (page: P) => T[] | undefined,
  ): Promise<T[]> {
    const all: T[] = [];
    const seen = new Set<string>();
    let token: string | undefined;
    do {
      const query =
        token === undefined ? "?alt=json" : `?alt=json&nextPageToken=${encodeURIComponent(token)}`;
      const page = parseJson<P>(await this.call("GET", path + query), path);
      all.push(...(items(page) ?? []));
      token = page.nextPageToken || undefined;
      // A server repeating a token would otherwise loop forever.
      if (token !== undefined && seen.has(token)) break;
      if (token !== undefined) seen.add(token);
    } while (token !== undefined);
    return all;
  }

  private async getOptional<T>(path: string): Promise<T | undefined> {
    try {
      return parseJson<T>(await this.call("GET", path), path);
    } catch (err) {
      if (err instanceof ApiError && err.code === 404) return undefined;
      throw err;
    }
  }

  private async call(method: string, path: string, body?: string): Promise<string> {
    const { res, text } = await this.send(method, path, body, false);
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw apiError(status, text);
    return text;
  }

  /**
   * Sends one request. The timeout covers connecting and reading the whole answer; for a
   * streamed answer (`stream`) it stops once the headers have arrived and the body is left unread.
   */
  private send(
    method: string,
    path: string,
    body: string | undefined,
    stream: boolean,
  ): Promise<{ res: http.IncomingMessage; text: string }> {
    const { endpoint, timeoutMs, debug } = this.opts;
    const fullPath = endpoint.kind === "tcp" ? endpoint.basePath + path : path;
    const url = `${isTls(endpoint) ? "https" : "http"}://${this.host}${fullPath}`;
    debug?.(`HTTP ${method} ${url}`);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err instanceof TransportError ? err : this.transportError(method, path, err));
      };
      const req = (isTls(endpoint) ? https : http).request({
        method,
        path: fullPath,
        agent: this.agent,
        headers: {
          Host: this.host,
          "User-Agent": "fleetctl (flotilla)",
          ...(body !== undefined ? JSON_HEADERS : {}),
        },
        ...(endpoint.kind === "unix"
          ? { socketPath: endpoint.socketPath }
          : { host: endpoint.host, port: endpoint.port }),
      });
      const timer = setTimeout(() => {
        const err = new TransportError(
          `fleet API at ${endpoint.display} did not answer ${method} ${path} within ${formatSeconds(timeoutMs)} (--request-timeout)`,
        );
        fail(err);
        req.destroy(err);
      }, timeoutMs);
      req.on("error", fail);
      req.on("response", (res) => {
        debug?.(`HTTP ${method} ${url} ${res.statusCode} ${res.statusMessage ?? ""}`.trimEnd());
        if (stream) {
          settled = true;
          clearTimeout(timer);
          resolve({ res, text: "" });
          return;
        }
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.on("error", fail);
        res.on("aborted", () => fail(new Error("connection closed before the answer was complete")));
        res.on("end", () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ res, text });
        });
      });
      req.end(body);
    });
  }

  private transportError(method: string, path: string, err: Error): TransportError {
    const code = (err as NodeJS.ErrnoException).code;
    const tlsCause = isTls(this.opts.endpoint) ? tlsRefusal(code, this.opts.tls) : undefined;
    const cause =
      tlsCause !== undefined
        ? `${tlsCause} (${code})`
        : code !== undefined && code in ERRNO_TEXT
          ? `${ERRNO_TEXT[code]} (${code})`
          : err.message;
    return new TransportError(
      `cannot reach fleet API at ${this.opts.endpoint.display} (${method} ${path}): ${cause}`,
    );
  }
}

const ERRNO_TEXT: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ENOENT: "no such socket file",
  EACCES: "permission denied",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "temporary failure in name resolution",
  ECONNRESET: "connection reset by peer",
  EHOSTUNREACH: "no route to host",
  ENETUNREACH: "network is unreachable",
  ENOTSOCK: "not a socket",
  EPIPE: "broken pipe",
};

function isTls(endpoint: Endpoint): boolean {
  return endpoint.kind === "tcp" && endpoint.tls === true;
}

const GIVE_CERT = "give --cert-file and --key-file (or FLEETCTL_CERT_FILE and FLEETCTL_KEY_FILE)";

/**
 * Why a TLS connection failed, in words: the server's alert when it refused our certificate,
 * or what was wrong with its own. Undefined for errors that are not about TLS.
 */
function tlsRefusal(code: string | undefined, tls: ClientTls | undefined): string | undefined {
  const noCert = tls?.cert === undefined;
  switch (code) {
    case "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED":
    case "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE":
      return noCert
        ? `the API requires a client certificate: ${GIVE_CERT}`
        : "the API refused the TLS handshake";
    case "ECONNRESET":
    case "EPIPE":
      // Under TLS 1.3 the server checks our certificate after we have sent the request, and its
      // close can overtake its alert. Whatever our own certificate says is then the best reason.
      return noCert
        ? `the API closed the connection: it requires a client certificate; ${GIVE_CERT}`
        : ownCertificateProblem(tls);
    case "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA":
      return "the API refused the client certificate: it was not issued by the cluster's CA";
    case "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED":
      return "the API refused the client certificate: it has expired (or is not yet valid)";
    case "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE":
    case "ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE":
    case "ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR":
      return "the API refused the client certificate";
    case "CERT_HAS_EXPIRED":
      return "the API's certificate has expired";
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_SIGNATURE_FAILURE":
      return tls?.ca === undefined
        ? "the API's certificate is not trusted: give the cluster CA with --ca-file (or FLEETCTL_CA_FILE)"
        : "the API's certificate was not issued by the CA in --ca-file";
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return "the API's certificate does not name the host in --endpoint";
    default:
      return undefined;
  }
}

/** Why the server would refuse our certificate, judged locally: expired, or not from --ca-file. */
function ownCertificateProblem(tls: ClientTls): string | undefined {
  try {
    const cert = new X509Certificate(tls.cert as Buffer);
    const now = Date.now();
    if (Date.parse(cert.validTo) < now) {
      return `the API refused the client certificate: it has expired (not after ${cert.validTo})`;
    }
    if (Date.parse(cert.validFrom) > now) {
      return `the API refused the client certificate: it is not valid before ${cert.validFrom}`;
    }
    if (tls.ca !== undefined && !cert.verify(new X509Certificate(tls.ca).publicKey)) {
      return "the API refused the client certificate: it was not issued by the cluster's CA (--ca-file)";
    }
  } catch {
    // Not a PEM certificate: the TLS layer will have said so already.
  }
  return "the API closed the connection during the TLS handshake: it may have refused the client certificate";
}

function journalPath(name: string, opts: JournalOptions, follow: boolean): string {
  const query = `lines=${opts.lines}&output=${encodeURIComponent(opts.output)}${follow ? "&follow=1" : ""}`;
  return `${EXT_PREFIX}/units/${encodeURIComponent(name)}/journal?${query}`;
}

function hostHeader(endpoint: Extract<Endpoint, { kind: "tcp" }>): string {
  const host = endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host;
  return endpoint.port === 80 ? host : `${host}:${endpoint.port}`;
}

function apiError(status: number, body: string): ApiError {
  try {
    const parsed = JSON.parse(body) as Partial<WireError>;
    if (parsed.error && typeof parsed.error.message === "string") {
      return new ApiError(status, parsed.error.message);
    }
  } catch {
    // Not fleet's error JSON: report the status alone.
  }
  return new ApiError(status, "");
}

function parseJson<T>(text: string, path: string): T {
  try {
    return (text === "" ? {} : JSON.parse(text)) as T;
  } catch {
    throw new Error(`invalid JSON in answer to ${path}`);
  }
}

function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))}s`;
}
