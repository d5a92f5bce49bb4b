// Downloads a release's files into /var/lib/flotilla/update/<version>/ and proves them against the
// signed manifest before anything reaches a partition. Each file is streamed to `<file>.gz.part`
// while its compressed bytes are hashed and gunzipped on the fly into a second hash, so a file is
// read from the network once. An interrupted transfer resumes with an HTTP Range request; a server
// that ignores Range gets the whole file again. Only the compressed file is kept on ROOT: the
// writer gunzips it again straight into the partition (ROOT is small; the payload is not).

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { finished, pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import type { Logger } from "../log.js";
import { UpdateError } from "./errors.js";
import { DeadlineError, withDeadline } from "./fetch.js";
import {
  checkFile,
  type Manifest,
  RELEASE_FILES,
  type ReleaseFile,
  type ReleaseFileName,
} from "./manifest.js";

export interface Progress {
  file: ReleaseFileName;
  /** Compressed bytes of the whole release on disk so far, and in all. */
  bytes: number;
  total: number;
}

export interface DownloadOptions {
  log: Logger;
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
  /** Overrides each file's deadline (payloadDeadlineMs), for tests. */
  deadlineMs?: number;
}

/** Transfers tried per file before giving up on network errors (each resumes the last). */
const ATTEMPTS = 5;
/** Wait before the n-th retry: n × this. */
const RETRY_DELAY_MS = 2000;
/**
 * Each file has an overall deadline, retries included: this much, plus its size at the slowest
 * rate we wait for. A slow-drip server ends in an error; the part is kept and resumed next check.
 */
const DEADLINE_BASE_MS = 5 * 60_000;
const DEADLINE_MIN_BYTES_PER_S = 128 * 1024;

export function payloadDeadlineMs(compressedSize: number): number {
  return DEADLINE_BASE_MS + Math.ceil((compressedSize / DEADLINE_MIN_BYTES_PER_S) * 1000);
}

/** The verified compressed files of a release, by name. */
export type Downloaded = Record<ReleaseFileName, string>;

/**
 * Makes `dir` hold every file of the manifest, each checked for compressed size + sha256 and
 * gunzipped size + sha256. `baseURL` is the release directory (`…/channels/stable/1.2.0/`).
 * Throws UpdateError naming the file and what differs; a bad file is deleted so the next check
 * starts it afresh, while a file cut off by the network is kept for resuming.
 */
export async function downloadRelease(
  baseURL: string,
  manifest: Manifest,
  dir: string,
  opts: DownloadOptions,
): Promise<Downloaded> {
  await mkdir(dir, { recursive: true });
  const total = RELEASE_FILES.reduce((n, f) => n + manifest.files[f].compressedSize, 0);
  let before = 0;
  const out = {} as Downloaded;
  for (const name of RELEASE_FILES) {
    const file = manifest.files[name];
    const base = before;
    out[name] = await downloadFile(new URL(file.path, baseURL).href, join(dir, file.path), name, file, {
      ...opts,
      onProgress: (p) => opts.onProgress?.({ file: name, bytes: base + p.bytes, total }),
    });
    before += file.compressedSize;
  }
  return out;
}

/** One file: reuse a complete verified copy, else resume or start `<dest>.part`. Returns dest. */
async function downloadFile(
  url: string,
  dest: string,
  name: ReleaseFileName,
  file: ReleaseFile,
  opts: DownloadOptions,
): Promise<string> {
  const log = opts.log.child({ file: name });
  const progress = (bytes: number) => opts.onProgress?.({ file: name, bytes, total: file.compressedSize });
  if (await exists(dest)) {
    try {
      await verifyFile(name, file, dest);
      progress(file.compressedSize);
      return dest;
    } catch (err) {
      // A kept file that no longer matches (disk trouble, a tampered /var) is fetched again.
      log.warn({ err: String(err) }, "downloaded file no longer verifies; fetching it again");
      await rm(dest, { force: true });
    }
  }
  const part = `${dest}.part`;
  const limitMs = opts.deadlineMs ?? payloadDeadlineMs(file.compressedSize);
  const deadline = withDeadline(limitMs, opts.signal);
  const timed = { ...opts, signal: deadline.signal };
  for (let attempt = 1; ; attempt++) {
    try {
      await transfer(url, part, name, file, timed, log, progress);
      await rename(part, dest);
      return dest;
    } catch (err) {
      if (deadline.expired())
        throw new DeadlineError(
          `${name}: GET ${url}: not complete within ${Math.round(limitMs / 1000)} s (deadline for ${file.compressedSize} bytes); what arrived is kept and resumed at the next check`,
        );
      if (err instanceof UpdateError) {
        // Wrong content is never resumed: the bytes we have are part of the problem.
        await rm(part, { force: true });
        throw err;
      }
      if (opts.signal?.aborted) throw err;
      if (attempt >= ATTEMPTS)
        throw new UpdateError("download", `${name}: GET ${url} failed ${attempt} times: ${errText(err)}`);
      const delay = RETRY_DELAY_MS * attempt;
      log.warn({ err: errText(err), attempt, retryInMs: delay }, "download interrupted; resuming");
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** One HTTP transfer into `part`, resuming from its current length when the server allows. */
async function transfer(
  url: string,
  part: string,
  name: ReleaseFileName,
  file: ReleaseFile,
  opts: DownloadOptions,
  log: Logger,
  progress: (bytes: number) => void,
): Promise<void> {
  let have = (await stat(part).catch(() => undefined))?.size ?? 0;
  if (have > file.compressedSize) have = 0;
  let body: AsyncIterable<Uint8Array> = (async function* () {})();
  if (have < file.compressedSize) {
    const res = await fetch(url, {
      headers: have > 0 ? { Range: `bytes=${have}-` } : {},
      signal: opts.signal,
    });
    if (res.status === 206 && contentRangeStart(res.headers.get("content-range")) === have) {
      log.info({ from: have, total: file.compressedSize }, "resuming download");
    } else if (res.status === 200) {
      if (have > 0) log.info({ had: have }, "server ignored the Range request; downloading the whole file");
      have = 0;
    } else if (res.status === 416 || res.status === 206) {
      // Our partial file does not fit what the server has now: start over on the next attempt.
      await res.body?.cancel();
      await rm(part, { force: true });
      throw new Error(`HTTP ${res.status} for a resume from byte ${have}; restarting the file`);
    } else {
      await res.body?.cancel();
      const err = `${name}: GET ${url}: HTTP ${res.status} ${res.statusText}`;
      // The release is missing or forbidden: retrying will not change that.
      if (res.status >= 400 && res.status < 500) throw new UpdateError("download", err);
      throw new Error(err);
    }
    if (!res.body) throw new Error(`${name}: GET ${url}: empty response`);
    body = res.body;
  }

  const fh = await open(part, have === 0 ? "w" : "a");
  try {
    const check = new FileCheck(name, file);
    if (have > 0)
      for await (const chunk of createReadStream(part, { end: have - 1 })) await check.push(chunk);
    let received = have;
    for await (const chunk of body) {
      received += chunk.length;
      // Stop at once rather than fill ROOT with whatever the server has.
      if (received > file.compressedSize)
        throw new UpdateError(
          "file",
          `file ${file.path}: the server sent more than the manifest's ${file.compressedSize} bytes (oversized)`,
        );
      await fh.write(chunk);
      await check.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      progress(received);
    }
    await fh.sync();
    // A body that ended cleanly but short is the server's file: checkFile calls it truncated.
    await check.finish();
  } finally {
    await fh.close();
  }
}

/** Hashes a file already on disk the same way as one arriving. */
async function verifyFile(name: ReleaseFileName, file: ReleaseFile, path: string): Promise<void> {
  const check = new FileCheck(name, file);
  for await (const chunk of createReadStream(path)) await check.push(chunk as Buffer);
  await check.finish();
}

/**
 * The compressed bytes' size + sha256 and, through a gunzip fed alongside, the content's. The
 * compressed side is always hashed to the end, so a flipped byte is reported as the hash mismatch
 * it is, not as whatever gzip error it happens to cause; the content side stops at the manifest's
 * size (a gzip bomb ends there).
 */
class FileCheck {
  private readonly gzHash = createHash("sha256");
  private readonly rawHash = createHash("sha256");
  private gzBytes = 0;
  private rawBytes = 0;
  private readonly gunzip = createGunzip();
  private failure: Error | undefined;

  constructor(
    private readonly name: ReleaseFileName,
    private readonly file: ReleaseFile,
  ) {
    this.gunzip.on("data", (chunk: Buffer) => {
      this.rawBytes += chunk.length;
      if (this.rawBytes > file.size) {
        this.failure ??= new UpdateError(
          "file",
          `file ${name}: unpacks to more than the manifest's ${file.size} bytes (oversized)`,
        );
        this.gunzip.destroy();
      } else this.rawHash.update(chunk);
    });
    this.gunzip.on("error", (err) => {
      this.failure ??= err;
    });
  }

  async push(chunk: Buffer): Promise<void> {
    this.gzBytes += chunk.length;
    this.gzHash.update(chunk);
    if (this.failure || this.gunzip.destroyed || this.gunzip.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        for (const ev of ["drain", "error", "close"]) this.gunzip.off(ev, done);
        resolve();
      };
      for (const ev of ["drain", "error", "close"]) this.gunzip.on(ev, done);
    });
  }

  async finish(): Promise<void> {
    if (!this.failure && !this.gunzip.destroyed) {
      this.gunzip.end();
      await finished(this.gunzip).catch((err: Error) => {
        this.failure ??= err;
      });
    }
    checkFile(this.name, this.file, "gz", { size: this.gzBytes, sha256: this.gzHash.digest("hex") });
    if (this.failure instanceof UpdateError) throw this.failure;
    if (this.failure)
      throw new UpdateError(
        "file",
        `file ${this.file.path}: matches the manifest but is not valid gzip (${this.failure.message})`,
      );
    checkFile(this.name, this.file, "content", { size: this.rawBytes, sha256: this.rawHash.digest("hex") });
  }
}

/** The uncompressed content of a downloaded (verified) file, for the partition and ESP writers. */
export function unpacked(path: string): AsyncIterable<Buffer> {
  // 1 MiB pieces instead of zlib's 16 KiB: a partition written in fewer, larger writes is ~40% faster.
  const gunzip = createGunzip({ chunkSize: 1 << 20 });
  // pipeline destroys `gunzip` with any read error, so the consumer's loop gets it; the promise
  // itself has nothing more to say.
  pipeline(createReadStream(path), gunzip).catch(() => {});
  return gunzip;
}

function contentRangeStart(header: string | null): number | undefined {
  const m = header ? /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header.trim()) : null;
  return m ? Number(m[1]) : undefined;
}

/** fetch() wraps socket errors in `TypeError: fetch failed` / `terminated`; the cause says what happened. */
function errText(err: unknown): string {
  const e = err as Error & { cause?: unknown };
  return e.cause ? `${e.message} (${errText(e.cause)})` : String(e.message ?? err);
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );
