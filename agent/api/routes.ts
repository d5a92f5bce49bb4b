// Request routing as a pure function of method and path, with fleet's answers for what does not
// route: `/` → 405, unknown paths → 404, a wrong method → 405 (400 on /discovery, as in fleet).

import { ApiError } from "./errors.js";
import { API_PREFIX, EXT_PREFIX, LEGACY_API_PREFIX } from "./schema.js";

export type Route =
  | {
      kind:
        | "listUnits"
        | "listStates"
        | "listMachines"
        | "patchMachines"
        | "discovery"
        | "health"
        | "quarantine"
        | "listServices"
        | "getUpdates"
        | "checkUpdates"
        | "metrics";
    }
  | { kind: "getUnit" | "putUnit" | "deleteUnit" | "getState" | "unitStatus" | "unitJournal"; name: string }
  | { kind: "putUpdateGroup"; group: string }
  | { kind: "releaseHolder"; group: string; holder: string }
  | { kind: "clearBadVersion"; version: string };

/** FleetLock's endpoints (docs/updates.md), relative to the agent's base URL as Zincati's base_url. */
export const FLEETLOCK_PATHS = {
  "/v1/pre-reboot": "pre-reboot",
  "/v1/steady-state": "steady-state",
} as const;
export type FleetLockOp = (typeof FLEETLOCK_PATHS)[keyof typeof FLEETLOCK_PATHS];

/**
 * The FleetLock operation at `path`, if it is one. FleetLock answers in its own error shape
 * (`{kind, value}`), so the server asks this before fleet's routing.
 */
export function fleetLockOp(path: string): FleetLockOp | undefined {
  return Object.hasOwn(FLEETLOCK_PATHS, path)
    ? FLEETLOCK_PATHS[path as keyof typeof FLEETLOCK_PATHS]
    : undefined;
}

const FLEET_PREFIXES = [API_PREFIX, LEGACY_API_PREFIX];

/** Splits a request target into its still-encoded path and its query. */
export function splitTarget(target: string): { path: string; query: URLSearchParams } {
  // Absolute-form targets ("GET http://host/path") are legal HTTP/1.1.
  const rest = target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, "");
  const q = rest.indexOf("?");
  const path = q === -1 ? rest : rest.slice(0, q);
  return { path: path === "" ? "/" : path, query: new URLSearchParams(q === -1 ? "" : rest.slice(q + 1)) };
}

/** The route for `method` on `path` (percent-encoded, as received). Throws 400/404/405. */
export function resolveRoute(method: string, path: string): Route {
  // Prometheus' conventional scrape path (docs/metrics.md).
  if (path === "/metrics") return only(method, ["GET"], { kind: "metrics" });
  if (path === "/") throw methodNotAllowed(`no method is supported on /; the API is under ${API_PREFIX}`, []);
  for (const prefix of FLEET_PREFIXES) {
    if (path === prefix) throw methodNotAllowed(`no method is supported on ${prefix} itself`, []);
    if (path.startsWith(`${prefix}/`)) return fleetRoute(method, segments(path.slice(prefix.length + 1)));
  }
  if (path.startsWith(`${EXT_PREFIX}/`))
    return flotillaRoute(method, segments(path.slice(EXT_PREFIX.length + 1)));
  throw notFound();
}

function fleetRoute(method: string, segs: string[]): Route {
  const [resource, item, ...extra] = segs;
  if (extra.length > 0 || item === "") throw notFound();
  switch (resource) {
    case "units":
      if (item === undefined) return only(method, ["GET"], { kind: "listUnits" });
      if (method === "GET") return { kind: "getUnit", name: item };
      if (method === "PUT") return { kind: "putUnit", name: item };
      if (method === "DELETE") return { kind: "deleteUnit", name: item };
      throw methodNotAllowed("only GET, PUT and DELETE supported against this resource", [
        "GET",
        "PUT",
        "DELETE",
      ]);
    case "state":
      if (item === undefined) return only(method, ["GET"], { kind: "listStates" });
      return only(method, ["GET"], { kind: "getState", name: item });
    case "machines":
      if (item !== undefined) throw notFound();
      if (method === "GET") return { kind: "listMachines" };
      if (method === "PATCH") return { kind: "patchMachines" };
      throw methodNotAllowed("only GET and PATCH supported against this resource", ["GET", "PATCH"]);
    case "discovery":
      if (item !== undefined) throw notFound();
      // fleet answers 400 here, not 405; clients have only ever seen that.
      if (method !== "GET") throw new ApiError(400, "only HTTP GET supported against this resource");
      return { kind: "discovery" };
    default:
      throw notFound();
  }
}

function flotillaRoute(method: string, segs: string[]): Route {
  const [resource, name, action, ...extra] = segs;
  if (resource === "health" && name === undefined) return only(method, ["GET"], { kind: "health" });
  if (resource === "services" && name === undefined) return only(method, ["GET"], { kind: "listServices" });
  if (resource === "quarantine" && name === undefined) return only(method, ["GET"], { kind: "quarantine" });
  if (resource === "units" && name && extra.length === 0) {
    if (action === "status") return only(method, ["GET"], { kind: "unitStatus", name });
    if (action === "journal") return only(method, ["GET"], { kind: "unitJournal", name });
  }
  if (resource === "updates") {
    if (name === undefined) return only(method, ["GET"], { kind: "getUpdates" });
    if (name === "check" && action === undefined) return only(method, ["POST"], { kind: "checkUpdates" });
    if (name === "bad" && action && extra.length === 0)
      return only(method, ["DELETE"], { kind: "clearBadVersion", version: action });
  }
  if (resource === "update-groups" && name) {
    if (action === undefined) return only(method, ["PUT"], { kind: "putUpdateGroup", group: name });
    const [holder, ...more] = extra;
    if (action === "holders" && holder && more.length === 0)
      return only(method, ["DELETE"], { kind: "releaseHolder", group: name, holder });
  }
  throw notFound();
}

function only(method: string, allowed: string[], route: Route): Route {
  if (allowed.includes(method)) return route;
  throw methodNotAllowed(`only ${allowed.join(", ")} supported against this resource`, allowed);
}

function segments(rest: string): string[] {
  return rest.split("/").map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new ApiError(400, `malformed percent-encoding in URL path segment ${JSON.stringify(s)}`);
    }
  });
}

function methodNotAllowed(message: string, allowed: string[]): ApiError {
  return new ApiError(405, message, { Allow: allowed.join(", ") });
}

function notFound(): ApiError {
  return new ApiError(404, "no such resource");
}
