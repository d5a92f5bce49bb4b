// Errors the API answers with. Pure code throws ApiError; the server turns it into fleet's error
// body `{"error":{"code":N,"message":"…"}}`.

import { RegistryUnavailableError } from "../registry/registry.js";
import type { WireError } from "./schema.js";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Extra response headers, e.g. Allow on a 405. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** fleet's exact text: fleetctl users and scripts match on it. */
export const ETCD_UNAVAILABLE = "fleet server unable to communicate with etcd";

export function errorBody(status: number, message: string): WireError {
  return { error: { code: status, message } };
}

/** Maps any thrown value to the status and message to answer with; `internal` marks our bugs. */
export function classifyError(err: unknown): {
  status: number;
  message: string;
  headers: Record<string, string>;
  internal: boolean;
} {
  if (err instanceof ApiError) {
    return { status: err.status, message: err.message, headers: err.headers, internal: false };
  }
  if (err instanceof RegistryUnavailableError) {
    return { status: 503, message: `${ETCD_UNAVAILABLE}: ${err.message}`, headers: {}, internal: false };
  }
  const detail = err instanceof Error ? err.message : String(err);
  return { status: 500, message: `internal server error: ${detail}`, headers: {}, internal: true };
}
