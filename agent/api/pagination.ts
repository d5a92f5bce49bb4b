// fleet's page tokens (api/pagination.go): base64url, with padding, of two little-endian uint16s
// {Limit, Page}. The server has one page size; a token made for another size is refused.

import { ApiError } from "./errors.js";

export interface PageToken {
  limit: number;
  page: number;
}

export function encodePageToken(token: PageToken): string {
  const buf = Buffer.alloc(4);
  buf.writeUInt16LE(token.limit, 0);
  buf.writeUInt16LE(token.page, 2);
  // Go's base64.URLEncoding keeps the "=" padding that Node's "base64url" drops.
  return buf.toString("base64").replaceAll("+", "-").replaceAll("/", "_");
}

/**
 * The token from a request's `nextPageToken` values (none → page 1). Throws a 400 for several
 * values, undecodable text, a limit other than `limit`, or page 0 — fleet's checks and messages.
 */
export function pageTokenFromQuery(values: string[], limit: number): PageToken {
  if (values.length > 1) throw new ApiError(400, "too many values for page token");
  const raw = values[0];
  if (raw === undefined) return { limit, page: 1 };
  // Strict like Go's URLEncoding.DecodeString: URL alphabet, padded to a multiple of 4.
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(raw) || raw.length % 4 !== 0) {
    throw new ApiError(400, `invalid page token ${JSON.stringify(raw)}: not padded base64url`);
  }
  const buf = Buffer.from(raw, "base64url");
  if (buf.length < 4) throw new ApiError(400, `invalid page token ${JSON.stringify(raw)}: too short`);
  const token = { limit: buf.readUInt16LE(0), page: buf.readUInt16LE(2) };
  if (token.limit !== limit) throw new ApiError(400, `token limit must be ${limit}`);
  if (token.page === 0) throw new ApiError(400, "token page must be greater than zero");
  return token;
}

/**
 * One page of `all`, and the token for the next page. fleet's quirk is kept on purpose: when the
 * page ends exactly at the last item a next token is still returned, and that page is empty.
 * fleetctl and other fleet clients expect it, and it costs them one extra request.
 */
export function paginate<T>(all: readonly T[], token: PageToken): { items: T[]; next?: string } {
  const start = (token.page - 1) * token.limit;
  const stop = token.page * token.limit;
  if (start >= all.length) return { items: [] };
  const items = all.slice(start, Math.min(stop, all.length));
  // Past page 65535 a uint16 cannot name the next page (Go would wrap it to the invalid page 0).
  if (stop > all.length || token.page === 0xffff) return { items };
  return { items, next: encodePageToken({ limit: token.limit, page: token.page + 1 }) };
}
