// The fleet v1 HTTP API (fleet's api/ package) plus Flotilla's /flotilla/v1 extensions, served from
// the Registry. Handlers only move data between HTTP and the pure functions in this folder.
//
// Choices where fleet gives none:
// - `Server: fleetd/<version> (flotilla)`: fleet's product token first, so anything reading the
//   header as fleet's still finds `fleetd/<version>`; the comment says which implementation it is.
// - The unix socket is created with mode 0600 (root only): a request on it is trusted as the
//   machine's root (auth.ts), so no group may share it; fleet's socket unit left it at 0666.
// - The TCP listener is TLS only and requires a client certificate from the cluster CA; roles
//   from the certificate are checked before routing (auth.ts, docs/security.md).
// - Error bodies always carry a message; fleet left it empty on 404/405/500.

import { chmod, lstat, unlink } from "node:fs/promises";
import http, { type IncomingMessage, type RequestListener, type ServerResponse } from "node:http";
import https from "node:https";
import net from "node:net";
import { pipeline } from "node:stream/promises";
import { DEFAULT_CONFIG } from "../config.js";
import type { Logger } from "../log.js";
import { refusalLog } from "../refusals.js";
import type { ViewHealth } from "../registry/feed.js";
import type { QuarantinedValue } from "../registry/quarantine.js";
import type { Registry } from "../registry/registry.js";
import { UNIT_MAX_BYTES } from "../unit/index.js";
import type { RebootLock } from "../update/lock.js";
import type { UpdateStore } from "../update/store.js";
import { authorize } from "./auth.js";
import { SystemdCommands, type UnitCommands } from "./commands.js";
import discovery from "./discovery.json" with { type: "json" };
import { ApiError, classifyError, ETCD_UNAVAILABLE, errorBody } from "./errors.js";
import {
  checkFleetLockHead,
  FLEETLOCK_HEADER,
  FleetLockError,
  fleetLockError,
  parseFleetLockBody,
  runFleetLock,
} from "./fleetlock.js";
import { commandTarget, PROXIED_BY_HEADER, parseCommandQuery, proxyGet } from "./flotilla.js";
import { hostUnitCheck } from "./hostunits.js";
import { goJSON, parseJSONBody } from "./json.js";
import { type ApiLimits, clientOf, concurrencyLimit, DEFAULT_API_LIMITS, limitListener } from "./limits.js";
import { filterStates, parseMetadataOps, stateOfUnit, toWireMachine, toWireUnitState } from "./machines.js";
import { pageTokenFromQuery, paginate } from "./pagination.js";
import { type FleetLockOp, fleetLockOp, resolveRoute, splitTarget } from "./routes.js";
import { DEFAULT_PAGE_SIZE, EXT_PREFIX, type WireQuarantine } from "./schema.js";
import { listServices, type ServiceSource } from "./services.js";
import {
  checkUnitPut,
  decideUnitPut,
  indexStates,
  omitEmpty,
  parseUnitBody,
  toWireUnit,
  unitByName,
} from "./units.js";
import {
  checkGroupName,
  checkHolderId,
  checkTarget,
  parseGroupChange,
  toWireGroup,
  toWireUpdates,
} from "./updates.js";

/** Request bodies beyond this are refused with 413. */
export const MAX_BODY_BYTES = 1024 * 1024;
/**
 * A unit's PUT body: room for the largest unit as JSON even when every character is escaped the
 * way Go escapes "<" (six bytes), plus per-option keys. A larger body is refused unread (readBody).
 */
export const UNIT_BODY_MAX_BYTES = 512 * 1024;
export const DEFAULT_SOCKET_MODE = 0o600;
/** How long a proxied status/journal request may stay silent (the command itself times out at 30 s). */
const PROXY_TIMEOUT_MS = 40_000;

/**
 * fleet's schema/v1.json, byte for byte: it is 2-space-indented JSON, which this reproduces
 * whatever the formatter does to the stored copy. `$ENDPOINT` stays literal, as fleet serves it;
 * its generated client substitutes the endpoint itself.
 */
export const DISCOVERY_JSON = `${JSON.stringify(discovery, null, 2)}\n`;

export interface ApiDeps {
  registry: Registry;
  /** Flotilla's version, shown in the Server header and /flotilla/v1/health. */
  version: string;
  log: Logger;
  /** False until the agent has registered with etcd; until then every request gets 503. */
  isReady: () => boolean;
  /** This machine: status/journal for units placed here run locally, others are proxied. */
  machineID: string;
  /** Runs systemctl/journalctl for the extension routes; defaults to the real programs. */
  commands?: UnitCommands;
  /** fleet's token_limit (default 100); page tokens carry it and are refused if it differs. */
  pageSize?: number;
  maxBodyBytes?: number;
  /** The state of the agent's watch-fed registry view, reported by /flotilla/v1/health. */
  registryHealth?: () => ViewHealth;
  /** Registry values skipped as bad (GET /flotilla/v1/quarantine, a count in health); absent: none. */
  quarantine?: () => QuarantinedValue[];
  /** The agent's watch-fed service records (GET /flotilla/v1/services); absent: 503. */
  services?: ServiceSource;
  /** The reboot semaphore and update records, for FleetLock and /flotilla/v1/update*; absent: 503. */
  updates?: { lock: RebootLock; store: UpdateStore };
  /**
   * The file of the OS's own unit that a cluster unit of this name would shadow, or undefined
   * (hostunits.ts); such a name is refused. Absent: the real check with the default unit dir.
   */
  isHostUnit?: (name: string) => Promise<string | undefined>;
  /** Connection caps, timeouts and the journal follow cap; absent: DEFAULT_API_LIMITS. */
  limits?: ApiLimits;
  /** This machine's certificate, key and the cluster CA, for proxying to other agents (https). */
  tls?: TlsMaterial;
  /** GET /metrics in Prometheus' text format (agent/metrics.ts); absent: 404 as any unknown path. */
  metrics?: { contentType: string; scrape(): Promise<string> };
}

/** PEM contents: the cluster CA and this machine's certificate and key. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface ListenOptions {
  /** Unix socket path; a stale socket file left by a dead process is replaced. */
  socketPath?: string;
  socketMode?: number;
  /** TCP `host:port` (`:port` for all interfaces, port 0 for any free one); needs `tls`. */
  tcp?: string;
  /** The TCP listener's certificate and key, and the CA its clients' certificates must come from. */
  tls?: TlsMaterial;
}

export interface ListenAddresses {
  socketPath?: string;
  tcp?: { host: string; port: number };
}

export interface ApiServer {
  /** The request handler, for embedding in another node:http server. */
  handler: RequestListener;
  listen(opts: ListenOptions): Promise<ListenAddresses>;
  /** Stops listening, ends open connections (including followed journals) and removes the socket. */
  close(): Promise<void>;
}

export function createApiServer(deps: ApiDeps): ApiServer {
  const pageSize = deps.pageSize ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 0xffff) {
    throw new Error(`page size must be an integer from 1 to 65535, got ${pageSize}`);
  }
  const maxBodyBytes = deps.maxBodyBytes ?? MAX_BODY_BYTES;
  const commands = deps.commands ?? new SystemdCommands();
  const serverHeader = `fleetd/${deps.version} (flotilla)`;
  const { registry, log } = deps;
  const limits = deps.limits ?? DEFAULT_API_LIMITS;
  const isHostUnit = deps.isHostUnit ?? hostUnitCheck(DEFAULT_CONFIG.unitDir);
  const refused = refusalLog(log);
  const follows = concurrencyLimit(limits.journalFollows);

  async function dispatch(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams) {
    // Metrics answer before the agent is ready too: the process metrics say why it is not.
    if (!deps.isReady() && path !== "/metrics") throw new ApiError(503, ETCD_UNAVAILABLE);
    const route = resolveRoute(req.method ?? "", path);
    switch (route.kind) {
      case "metrics":
        return sendMetrics(res);
      case "listUnits": {
        const token = pageTokenFromQuery(query.getAll("nextPageToken"), pageSize);
        const snap = await registry.snapshot();
        const stateOf = indexStates(snap.states);
        const page = paginate(snap.units, token);
        const units = page.items.map((u) => toWireUnit(u, snap, stateOf));
        return sendJSON(res, 200, omitEmpty({ nextPageToken: page.next, units }));
      }
      case "getUnit": {
        const snap = await registry.snapshot();
        const unit = unitByName(snap, route.name);
        if (!unit) throw new ApiError(404, "unit does not exist");
        return sendJSON(res, 200, toWireUnit(unit, snap, indexStates(snap.states)));
      }
      case "putUnit": {
        requireJSON(req, true);
        const text = await readBody(
          req,
          Math.min(maxBodyBytes, UNIT_BODY_MAX_BYTES),
          ` for a unit (a unit file may have at most ${UNIT_MAX_BYTES} bytes)`,
        );
        const body = parseUnitBody(parseJSONBody(text));
        checkUnitPut(route.name, body);
        const hostFile = await isHostUnit(route.name);
        if (hostFile !== undefined) {
          throw new ApiError(
            409,
            `unit name ${route.name} is taken by this machine's OS (${hostFile}): a cluster unit of that name would replace the OS's unit; choose another name`,
          );
        }
        const put = decideUnitPut(route.name, body, await registry.getUnit(route.name));
        if (put.kind === "setDesiredState") {
          if (!(await registry.setDesiredState(route.name, put.desiredState))) {
            throw new ApiError(404, "unit does not exist");
          }
          return sendEmpty(res, 204);
        }
        for (const warning of put.warnings) log.warn({ unit: route.name }, warning);
        await registry.putUnit(put.unit);
        log.info(
          { unit: route.name, hash: put.unit.hash, desiredState: put.unit.desiredState },
          `unit ${put.kind}d`,
        );
        return sendEmpty(res, 201);
      }
      case "deleteUnit":
        if (!(await registry.destroyUnit(route.name))) throw new ApiError(404, "unit does not exist");
        log.info({ unit: route.name }, "unit destroyed");
        return sendEmpty(res, 204);
      case "listStates": {
        const token = pageTokenFromQuery(query.getAll("nextPageToken"), pageSize);
        const snap = await registry.snapshot();
        const filter = { machineID: query.get("machineID") ?? "", unitName: query.get("unitName") ?? "" };
        const page = paginate(filterStates(snap.states, filter), token);
        return sendJSON(
          res,
          200,
          omitEmpty({ nextPageToken: page.next, states: page.items.map(toWireUnitState) }),
        );
      }
      case "getState": {
        const state = stateOfUnit(route.name, await registry.snapshot());
        if (!state) throw new ApiError(404, "unit state does not exist");
        return sendJSON(res, 200, toWireUnitState(state));
      }
      case "listMachines": {
        const token = pageTokenFromQuery(query.getAll("nextPageToken"), pageSize);
        const page = paginate(await registry.listMachines(), token);
        return sendJSON(
          res,
          200,
          omitEmpty({ machines: page.items.map(toWireMachine), nextPageToken: page.next }),
        );
      }
      case "patchMachines": {
        // fleet never checked the type here, and its own tests send none; a wrong one is refused.
        requireJSON(req, false);
        const changes = parseMetadataOps(parseJSONBody(await readBody(req, maxBodyBytes)));
        for (const c of changes) await registry.setMachineMetadata(c.machineID, c.key, c.value);
        if (changes.length > 0) log.info({ changes }, "machine metadata changed");
        // fleet answers this 204 with a JSON Content-Type, and its functional tests check for it.
        res.writeHead(204, { "Content-Type": "application/json" });
        res.end();
        return;
      }
      case "discovery":
        res.writeHead(200, {
          "Content-Type": "application/json",
          "Content-Length": Buffer.byteLength(DISCOVERY_JSON),
        });
        res.end(DISCOVERY_JSON);
        return;
      case "health": {
        // Not ok while the registry view is not live (watch broken, list failing): reads would be stale.
        const view = deps.registryHealth?.();
        const ok = view === undefined || view.state === "live";
        // Quarantined values do not make the agent unhealthy: they are skipped, and counted here.
        const quarantined = deps.quarantine?.().length;
        return sendJSON(res, ok ? 200 : 503, {
          machineID: deps.machineID,
          ok,
          version: deps.version,
          view,
          quarantined,
        });
      }
      case "quarantine":
        return sendJSON(res, 200, { values: deps.quarantine?.() ?? [] } satisfies WireQuarantine);
      case "listServices":
        if (!deps.services) throw new ApiError(503, "service discovery is not running on this agent");
        return sendJSON(res, 200, listServices(deps.services, query));
      case "unitStatus":
      case "unitJournal":
        return unitCommand(req, res, route.kind, route.name, query);
      case "getUpdates": {
        const { store } = updatesOrFail();
        const [overview, machines] = await Promise.all([store.overview(), registry.listMachines()]);
        return sendJSON(res, 200, toWireUpdates(overview, machines));
      }
      case "checkUpdates": {
        const { store } = updatesOrFail();
        requireJSON(req, false);
        const text = await readBody(req, maxBodyBytes);
        const body = text.trim() === "" ? undefined : parseJSONBody(text);
        const [overview, machines] = await Promise.all([store.overview(), registry.listMachines()]);
        const known = new Set([...machines.map((m) => m.id), ...overview.statuses.map((s) => s.machineId)]);
        const target = checkTarget(body, known);
        const { nonce } = await store.requestCheck(target);
        log.info({ target, nonce }, "update check requested");
        return sendJSON(res, 200, { target, nonce });
      }
      case "putUpdateGroup": {
        const { store, lock } = updatesOrFail();
        checkGroupName(route.group);
        requireJSON(req, true);
        const change = parseGroupChange(parseJSONBody(await readBody(req, maxBodyBytes)));
        const config = await store.changeGroupConfig(route.group, change);
        log.info({ group: route.group, change, config }, "update group changed");
        const { holders } = await lock.view(route.group);
        return sendJSON(res, 200, toWireGroup(route.group, config, holders));
      }
      case "releaseHolder": {
        const { lock } = updatesOrFail();
        checkGroupName(route.group);
        checkHolderId(route.holder);
        if (!(await lock.release(route.group, route.holder))) {
          throw new ApiError(404, `group ${route.group} has no lock holder ${route.holder}`);
        }
        log.info({ group: route.group, holder: route.holder }, "reboot lock released by the API");
        return sendEmpty(res, 204);
      }
      case "clearBadVersion": {
        const { store } = updatesOrFail();
        if (!(await store.clearBad(route.version))) {
          throw new ApiError(404, `version ${route.version} is not marked bad`);
        }
        log.info({ version: route.version }, "bad version cleared");
        return sendEmpty(res, 204);
      }
    }
  }

  async function sendMetrics(res: ServerResponse) {
    // As any unknown path: an API server without metrics (tests, tools) has no such resource.
    if (!deps.metrics) throw new ApiError(404, "no such resource");
    const text = await deps.metrics.scrape();
    res.writeHead(200, {
      "Content-Type": deps.metrics.contentType,
      "Content-Length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  function updatesOrFail(): NonNullable<ApiDeps["updates"]> {
    if (!deps.updates) throw new ApiError(503, "the updater is not running on this agent");
    return deps.updates;
  }

  /** FleetLock: its own checks and `{kind, value}` errors; 200 with an empty body on success. */
  async function fleetLock(req: IncomingMessage, res: ServerResponse, op: FleetLockOp) {
    try {
      checkFleetLockHead(req.method ?? "", req.headers[FLEETLOCK_HEADER]);
      const params = parseFleetLockBody(await readBody(req, maxBodyBytes));
      if (!deps.isReady()) throw new FleetLockError(503, "etcd_unavailable", ETCD_UNAVAILABLE);
      if (!deps.updates) {
        throw new FleetLockError(503, "lock_unavailable", "the reboot lock is not running on this agent");
      }
      await runFleetLock(op, params, deps.updates.lock);
      log.info({ op, ...params }, "FleetLock");
      res.writeHead(200, { "Content-Length": 0 });
      res.end();
    } catch (err) {
      const { status, body, headers, internal } = fleetLockError(err);
      if (internal) log.error({ err, url: req.url }, "FleetLock request failed");
      // A client that sent a body we did not read would otherwise see its request cut off.
      if (!req.complete) req.resume();
      for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
      sendJSON(res, status, body);
    }
  }

  async function unitCommand(
    req: IncomingMessage,
    res: ServerResponse,
    kind: "unitStatus" | "unitJournal",
    name: string,
    query: URLSearchParams,
  ) {
    const q = parseCommandQuery(query);
    const target = commandTarget(name, await registry.snapshot(), deps.machineID, q.machineID);
    if (target.machine) {
      const from = req.headers[PROXIED_BY_HEADER];
      if (from !== undefined) {
        throw new ApiError(
          502,
          `machine ${from} sent this here, but unit ${name} runs on ${target.machineID}`,
        );
      }
      query.set("machineID", target.machineID);
      const path = `${EXT_PREFIX}/units/${encodeURIComponent(name)}/${kind === "unitStatus" ? "status" : "journal"}`;
      await proxyGet(
        res,
        target.machine.apiURL,
        `${path}?${query}`,
        { [PROXIED_BY_HEADER]: deps.machineID },
        kind === "unitJournal" && q.follow ? 0 : PROXY_TIMEOUT_MS,
        deps.tls,
      );
      return;
    }
    const opts = { lines: q.lines, output: q.output };
    if (kind === "unitStatus") return sendJSON(res, 200, await commands.status(name));
    if (!q.follow) return sendJSON(res, 200, await commands.journal(name, opts));
    const release = follows.acquire();
    if (release === undefined) {
      refused(
        "journal follows",
        { client: clientOf(req.socket), unit: name },
        `journal follow refused: ${limits.journalFollows} journals are already followed on this machine`,
      );
      throw new ApiError(
        429,
        `too many followed journals on this machine: ${limits.journalFollows} at once; try again later, or read it without following`,
        { "Retry-After": "5" },
      );
    }
    const stop = new AbortController();
    res.on("close", () => {
      release();
      stop.abort();
    });
    const stream = commands.followJournal(name, opts, stop.signal);
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache" });
    res.flushHeaders();
    // A client that goes away ends the pipeline early; that is how a follow normally ends.
    await pipeline(stream, res).catch(() => undefined);
  }

  const handler: RequestListener = (req, res) => {
    const started = Date.now();
    res.setHeader("Server", serverHeader);
    const { path, query } = splitTarget(req.url ?? "/");
    const op = fleetLockOp(path);
    Promise.resolve()
      .then(() => {
        authorize(req, path);
        return op ? fleetLock(req, res, op) : dispatch(req, res, path, query);
      })
      .catch((err: unknown) => {
        const { status, message, headers, internal } = classifyError(err);
        if (internal) log.error({ err, method: req.method, url: req.url }, "request failed");
        else if (status === 503)
          log.error(
            { method: req.method, url: req.url, error: message },
            "request failed: registry unavailable",
          );
        else if (status === 413)
          refused(
            "oversized requests",
            { client: clientOf(req.socket), method: req.method, url: req.url },
            `request refused: ${message}`,
          );
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (err instanceof BodyTooLarge) {
          refuseUnread(req, res, status, { Server: serverHeader, ...headers }, errorBody(status, message));
          return;
        }
        for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
        sendJSON(res, status, errorBody(status, message));
      })
      .finally(() => {
        log.debug(
          { method: req.method, url: req.url, status: res.statusCode, ms: Date.now() - started },
          "http",
        );
      });
  };

  const servers: http.Server[] = [];
  let socketPath: string | undefined;

  return {
    handler,
    async listen(opts) {
      const bound: ListenAddresses = {};
      if (opts.socketPath) {
        await removeStaleSocket(opts.socketPath);
        const server = http.createServer(handler);
        limitListener(server, "unix socket", limits.socket, refused);
        servers.push(server);
        await listenOn(server, { path: opts.socketPath });
        socketPath = opts.socketPath;
        // Between listen and chmod the socket has the umask's mode (0755 by default), which lets
        // no one else connect: connecting needs write permission.
        await chmod(opts.socketPath, opts.socketMode ?? DEFAULT_SOCKET_MODE);
        bound.socketPath = opts.socketPath;
        log.info({ socket: opts.socketPath }, "fleet API listening on unix socket");
      }
      if (opts.tcp) {
        const { host, port } = parseHostPort(opts.tcp);
        if (!opts.tls)
          throw new Error("the TCP API is TLS only: it needs the cluster CA, a certificate and a key");
        const server = https.createServer(
          {
            ...opts.tls,
            requestCert: true,
            rejectUnauthorized: true,
            minVersion: "TLSv1.2",
            // A connection that never completes its handshake holds a slot of the listener's cap
            // like an idle one: it gets as long as a request's headers, not Node's 120 s.
            handshakeTimeout: limits.tcp.headersTimeoutMs,
          },
          handler,
        );
        // Refused handshakes (no certificate, another CA, expired) are the client's problem; the
        // client sees the TLS alert. Debug level, so a scan does not flood the log.
        server.on("tlsClientError", (err, socket) =>
          log.debug({ client: socket.remoteAddress, error: err.message }, "TLS handshake refused"),
        );
        limitListener(server, "TCP", limits.tcp, refused);
        servers.push(server);
        await listenOn(server, host === "" ? { port } : { host, port });
        const addr = server.address() as net.AddressInfo;
        bound.tcp = { host: addr.address, port: addr.port };
        log.info(bound.tcp, "fleet API listening on TCP (TLS, client certificates required)");
      }
      return bound;
    },
    async close() {
      await Promise.all(
        servers.splice(0).map(
          (server) =>
            new Promise<void>((resolve) => {
              server.close(() => resolve());
              server.closeAllConnections();
            }),
        ),
      );
      if (socketPath) await unlink(socketPath).catch(() => undefined);
      socketPath = undefined;
    },
  };
}

function sendJSON(res: ServerResponse, status: number, body: unknown): void {
  const text = goJSON(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function sendEmpty(res: ServerResponse, status: 201 | 204): void {
  res.writeHead(status);
  res.end();
}

/** fleet's validateContentType: exactly application/json (parameters allowed). */
function requireJSON(req: IncomingMessage, required: boolean): void {
  const type = req.headers["content-type"];
  if (type === undefined) {
    if (required) throw new ApiError(415, "expected 1 Content-Type, got 0");
    return;
  }
  if ((type.split(";")[0] ?? "").trim().toLowerCase() !== "application/json") {
    throw new ApiError(415, "only acceptable Content-Type is application/json");
  }
}

/**
 * The body as UTF-8, refused with 413 past `limit` bytes without reading the rest: a declared
 * Content-Length over the limit is refused from the header before a byte of the body is read,
 * and a chunked body is counted as it arrives and left unread the moment it passes the limit.
 * The answer closes the connection. Reading and dropping the rest instead cost the agent ~20 MB
 * of RSS per 1 000 refused 1 MB bodies: every TLS record read becomes a buffer that only a later
 * garbage collection frees, and the C allocator keeps the pages (bench/refused-puts.ts).
 */
function readBody(req: IncomingMessage, limit: number, what = ""): Promise<string> {
  const tooLarge = () => new BodyTooLarge(`request body is larger than the limit of ${limit} bytes${what}`);
  if (Number(req.headers["content-length"]) > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      chunks.length = 0;
      req.off("data", onData);
      req.pause();
      reject(tooLarge());
    };
    req.on("data", onData);
    req.on("end", () => resolve(Buffer.concat(chunks, size).toString("utf8")));
    req.on("error", reject);
  });
}

/** A body refused by readBody, with the rest of it left unread: answered by refuseUnread. */
class BodyTooLarge extends ApiError {
  constructor(message: string) {
    super(413, message, { Connection: "close" });
  }
}

/**
 * How long a connection whose request body was refused unread is kept open after the answer
 * (Go's net/http does the same, for 500 ms): closing it at once, with the body unread, sends a
 * TCP reset that can destroy the answer before the client reads it (531 of 1 000 refused 1 MB
 * PUTs lost it over a machine's veth). The reset follows the answer on the same path, so this
 * only has to cover the client reading what has already arrived; each such connection holds
 * ~200 KB (TLS buffers) meanwhile, so the wait is short and their number is capped.
 */
const LINGER_MS = 100;
/** Connections lingering at once; past this a refused connection is closed at once. */
const MAX_LINGERING = 32;
const lingering = concurrencyLimit(MAX_LINGERING);

/**
 * Answers a request whose body is left unread, then half-closes the connection and closes it
 * LINGER_MS later, never reading the rest. The answer is written on the socket itself: answered
 * through `res`, Node would read ("dump") the rest of the body once the answer ends and close the
 * connection at once.
 */
function refuseUnread(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: unknown,
): void {
  const socket = req.socket;
  socket.pause();
  res.statusCode = status;
  const text = goJSON(body);
  const head = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}`,
    ...Object.entries({
      ...headers,
      "Content-Type": "application/json",
      "Content-Length": String(Buffer.byteLength(text)),
      Connection: "close",
    }).map(([k, v]) => `${k}: ${v}`),
  ];
  const release = lingering.acquire();
  socket.end(`${head.join("\r\n")}\r\n\r\n${text}`, () => {
    if (release === undefined) socket.destroy();
  });
  if (release === undefined) return;
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once("close", () => {
    clearTimeout(timer);
    release();
  });
}

function parseHostPort(text: string): { host: string; port: number } {
  const colon = text.lastIndexOf(":");
  const port = Number(text.slice(colon + 1));
  if (colon === -1 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid TCP listen address ${JSON.stringify(text)}: expected host:port`);
  }
  return { host: text.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port };
}

function listenOn(server: http.Server, opts: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/**
 * A socket file left behind by a process that died is removed; one that still answers belongs
 * to a running server and is left alone (listen then fails), as is anything that is not a socket.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const refused = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(false);
    });
    probe.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
  if (!refused) throw new Error(`another server is already listening on ${path}`);
  await unlink(path);
}
