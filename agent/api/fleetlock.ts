// FleetLock (docs/updates.md; Zincati's docs/development/fleetlock/protocol.md) served from the
// reboot semaphore, so Zincati-style clients share the slots with Flotilla's own updaters.
// `POST /v1/pre-reboot` is RecursiveLock and `POST /v1/steady-state` is UnlockIfHeld for the
// holder `client_params.id` in group `client_params.group`. 200 means success; every failure is a
// 4xx/5xx with `{kind, value}`, `kind` from the small fixed set below.
//
// Choices where the protocol leaves room:
// - Kinds follow Airlock where it has one (`invalid_client_identity` also covers a missing
//   header and a malformed body, as Airlock's does), so dashboards built on it keep working.
// - A full semaphore is 409 `failed_lock_semaphore_full` (the protocol's own example kind), not
//   Airlock's 500: nothing failed, the client is simply early. A paused group is 409 too.
// - Any group is accepted and gets the default config (one slot) until configured, where Airlock
//   answers `unknown_group` for groups missing from its config file.

import { RegistryUnavailableError } from "../registry/registry.js";
import type { RebootLock } from "../update/lock.js";
import { groupProblem, holderProblem } from "../update/records.js";
import { ApiError } from "./errors.js";
import { isObject } from "./json.js";
import type { FleetLockOp } from "./routes.js";

export const FLEETLOCK_HEADER = "fleet-lock-protocol";

export type FleetLockKind =
  | "invalid_client_identity"
  | "method_not_allowed"
  | "request_too_large"
  | "failed_lock_semaphore_full"
  | "failed_lock_group_paused"
  | "etcd_unavailable"
  | "lock_unavailable"
  | "internal_error";

export class FleetLockError extends Error {
  constructor(
    readonly status: number,
    readonly kind: FleetLockKind,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "FleetLockError";
  }
}

export interface FleetLockParams {
  id: string;
  group: string;
}

/** Checks method and header before the body is read: a redirected request is refused unread. */
export function checkFleetLockHead(method: string, header: string | string[] | undefined): void {
  if (method !== "POST") {
    throw new FleetLockError(405, "method_not_allowed", `only POST is supported, got ${method}`, {
      Allow: "POST",
    });
  }
  if (header !== "true") {
    throw new FleetLockError(
      400,
      "invalid_client_identity",
      `missing or wrong "${FLEETLOCK_HEADER}" header: it must be "true"` +
        (header === undefined ? "" : `, got ${JSON.stringify(header)}`),
    );
  }
}

/** `{"client_params":{"id":"…","group":"…"}}`, each problem named by its field. */
export function parseFleetLockBody(text: string): FleetLockParams {
  const bad = (message: string) => new FleetLockError(400, "invalid_client_identity", message);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw bad('body must be JSON: {"client_params":{"id":"…","group":"…"}}');
  }
  const params = isObject(body) ? body.client_params : undefined;
  if (!isObject(params)) throw bad("client_params: missing or not an object");
  const { id, group } = params;
  if (typeof id !== "string") throw bad("client_params.id: missing or not a string");
  if (typeof group !== "string") throw bad("client_params.group: missing or not a string");
  const idProblem = holderProblem(id);
  if (idProblem) throw bad(`client_params.id: ${idProblem}`);
  const gProblem = groupProblem(group);
  if (gProblem) throw bad(`client_params.group: ${gProblem}`);
  return { id, group };
}

/** Runs the operation; resolves on success (answer 200), throws FleetLockError otherwise. */
export async function runFleetLock(
  op: FleetLockOp,
  params: FleetLockParams,
  lock: RebootLock,
): Promise<void> {
  if (op === "steady-state") {
    await lock.release(params.group, params.id);
    return;
  }
  const result = await lock.acquire(params.group, params.id);
  if (result.acquired) return;
  if (result.reason === "paused") {
    throw new FleetLockError(
      409,
      "failed_lock_group_paused",
      `reboots of group ${params.group} are paused (fleetctl update resume ${params.group})`,
    );
  }
  throw new FleetLockError(
    409,
    "failed_lock_semaphore_full",
    `semaphore currently full, all ${result.maxHolders} slot(s) of group ${params.group} are locked already (held by ${result.holders.join(", ")})`,
  );
}

/** Any thrown value as FleetLock's error answer; `internal` marks our bugs, for the log. */
export function fleetLockError(err: unknown): {
  status: number;
  body: { kind: FleetLockKind; value: string };
  headers: Record<string, string>;
  internal: boolean;
} {
  const answer = (status: number, kind: FleetLockKind, value: string, headers = {}, internal = false) => ({
    status,
    body: { kind, value },
    headers,
    internal,
  });
  if (err instanceof FleetLockError) return answer(err.status, err.kind, err.message, err.headers);
  if (err instanceof RegistryUnavailableError) return answer(503, "etcd_unavailable", err.message);
  // The server's body reader refuses oversized bodies with a 413 ApiError.
  if (err instanceof ApiError && err.status === 413)
    return answer(413, "request_too_large", err.message, err.headers);
  if (err instanceof ApiError && err.status === 503) return answer(503, "etcd_unavailable", err.message);
  const detail = err instanceof Error ? err.message : String(err);
  return answer(500, "internal_error", `internal server error: ${detail}`, {}, true);
}
