// Bounded reads from the update channel. The channel is untrusted until a signature says otherwise,
// and even a signed channel's server may be broken: a manifest is read whole into memory, so it is
// capped in size, and every request has an overall deadline, so an endless or slow-drip answer
// ends in an error the operator sees instead of a grown or hung updater.

import { UpdateError } from "./errors.js";

/** A manifest is a few KiB; anything near this is not one. */
export const MANIFEST_MAX_BYTES = 1024 * 1024;
/** The whole manifest request, headers to last byte. */
export const MANIFEST_DEADLINE_MS = 60_000;

export interface BoundedFetch {
  maxBytes: number;
  deadlineMs: number;
  signal?: AbortSignal;
}

/** An abort for running out of time, told apart from the caller's own abort (agent stopping). */
export class DeadlineError extends UpdateError {
  constructor(message: string) {
    super("deadline", message);
    this.name = "DeadlineError";
  }
}

/** A signal that fires on the caller's abort or after `ms`, and whether the deadline was what fired. */
export function withDeadline(
  ms: number,
  signal?: AbortSignal,
): { signal: AbortSignal; expired: () => boolean } {
  const timeout = AbortSignal.timeout(ms);
  return {
    signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    expired: () => timeout.aborted,
  };
}

/**
 * GET `url` into memory, at most `maxBytes` and within `deadlineMs` overall. Throws UpdateError:
 * HTTP status, size cap (declared or streamed) or DeadlineError; network errors as they come.
 */
export async function fetchBounded(url: string, o: BoundedFetch): Promise<Buffer> {
  const deadline = withDeadline(o.deadlineMs, o.signal);
  const over = () =>
    new UpdateError(
      "size",
      `GET ${url}: the answer is larger than ${o.maxBytes} bytes (size cap); not a manifest`,
    );
  try {
    const res = await fetch(url, { signal: deadline.signal });
    if (!res.ok) {
      await res.body?.cancel();
      throw new UpdateError("http", `GET ${url}: HTTP ${res.status} ${res.statusText}`);
    }
    const declared = Number(res.headers.get("content-length") ?? Number.NaN);
    if (declared > o.maxBytes) {
      await res.body?.cancel();
      throw over();
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body ?? []) {
      size += chunk.length;
      if (size > o.maxBytes) throw over();
      chunks.push(Buffer.from(chunk));
    }
    return Buffer.concat(chunks);
  } catch (err) {
    // The body loop's early exit cancels the stream; an abort shows as AbortError/TimeoutError.
    if (deadline.expired() && !(err instanceof UpdateError))
      throw new DeadlineError(
        `GET ${url}: no complete answer within ${o.deadlineMs / 1000} s (deadline); the server is too slow or never ends its answer`,
      );
    throw err;
  }
}
