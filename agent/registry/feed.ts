// Keeps a ClusterView current: list once, paged and at one revision, then watch from the next
// revision. A broken watch resumes from the view's revision; a watch etcd cancels (its revision
// was compacted away) or a list that loses its revision starts over with a fresh list.
// `KvSource` is the port to etcd (etcd-source.ts), so this loop is unit-tested with a fake.

import type { Logger } from "../log.js";
import { RegistryUnavailableError } from "./registry.js";
import type { ClusterView, KvEntry, ViewEvent } from "./view.js";

/**
 * The longest pause between attempts to resume a broken feed. Every read waits on the view while
 * it is broken, so this bounds how long the API answers 503 after etcd is back; an attempt is one
 * one-key read, cheap enough for every agent to make once a second during an outage.
 */
export const RETRY_MAX_MS = 1000;

export interface KvPage {
  /** The revision the page was read at. */
  revision: number;
  entries: KvEntry[];
  /** More keys follow in the range. */
  more: boolean;
}

export interface WatchSink {
  /** etcd accepted the watch. */
  connected(): void;
  /** Changes, in revision order. */
  events(events: ViewEvent[]): void;
  /** Nothing under the watched prefix changed up to `revision`. */
  progress(revision: number): void;
  /** The connection failed; no more calls follow. */
  broken(err: unknown): void;
  /** etcd ended the watch (e.g. its start revision was compacted); no more calls follow. */
  canceled(err: unknown): void;
}

export interface KvSource {
  /**
   * At most `limit` keys of [start, end) at `revision` (0: the current one). Throws
   * CompactedError when `revision` is gone, TooLargeError when the reply would exceed the
   * transport's limit, RegistryUnavailableError when etcd cannot be reached.
   */
  range(req: { start: string; end: string; limit: number; revision: number }): Promise<KvPage>;
  watch(prefix: string, fromRevision: number, sink: WatchSink): { cancel(): Promise<void> };
}

export class CompactedError extends Error {
  override name = "CompactedError";
}
export class TooLargeError extends Error {
  override name = "TooLargeError";
}

export type ViewState = "listing" | "live" | "broken";

export interface ViewHealth {
  state: ViewState;
  /** The etcd revision the view is current to. */
  revision: number;
  /** Epoch ms of the last state change. */
  since: number;
  /** Why the view is not live. */
  error?: string;
  lists: number;
  units: number;
  states: number;
  machines: number;
}

export interface FeedOptions {
  log: Logger;
  /** Keys per list page (default 1 000); halved while a page is too large for one reply. */
  pageSize?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Called with each batch of changes before the view applies them (the view still holds the old values). */
  onEvents?(events: readonly ViewEvent[], view: ClusterView): void;
  /** Called after each (re)list: anything may have changed. */
  onResync?(): void;
  /** Called when the view applies a write this agent made, with the time since etcd acknowledged it. */
  onWriteApplied?(lagMs: number): void;
  /** The clock for write lag (tests); default Date.now. */
  now?(): number;
}

export const DEFAULT_PAGE_SIZE = 1000;
/**
 * Acknowledged writes the feed remembers until the view applies them. Past this (a watch stalled
 * under a write storm) newer writes are not remembered: the oldest decides the lag anyway.
 */
export const MAX_UNAPPLIED_WRITES = 1024;

export class ViewFeed {
  private state: ViewState = "listing";
  private since = Date.now();
  private error: unknown;
  private lists = 0;
  private stopped = false;
  private wake: (() => void) | undefined;
  private watch: { cancel(): Promise<void> } | undefined;
  private running: Promise<void> | undefined;
  /** Waiters for the view to reach a revision or to go live. */
  private waiters: { revision: number; resolve(): void }[] = [];
  /** This agent's writes etcd has acknowledged and the view has not applied yet, oldest first. */
  private unapplied: { revision: number; at: number }[] = [];
  private readonly pageSize: number;
  private readonly now: () => number;

  constructor(
    private readonly source: KvSource,
    private readonly view: ClusterView,
    private readonly prefix: string,
    private readonly opts: FeedOptions,
  ) {
    this.pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.watch?.cancel().catch(() => undefined);
    await this.running;
  }

  health(): ViewHealth {
    return {
      state: this.state,
      revision: this.view.revision,
      since: this.since,
      ...(this.state !== "live" && this.error !== undefined ? { error: describe(this.error) } : {}),
      lists: this.lists,
      ...this.view.size(),
    };
  }

  /**
   * Notes that etcd acknowledged a write of this agent under the prefix at `revision`: the watch
   * lag is the time from now until the view applies it (etcd's events carry no time, so only
   * this agent's own writes can be timed).
   */
  written(revision: number): void {
    if (revision <= this.view.revision) {
      this.opts.onWriteApplied?.(0);
      return;
    }
    if (this.unapplied.length >= MAX_UNAPPLIED_WRITES) return;
    this.unapplied.push({ revision, at: this.now() });
  }

  /** Milliseconds since etcd acknowledged the oldest write of this agent the view has not applied; 0: none. */
  unappliedWriteAgeMs(): number {
    const oldest = this.unapplied.reduce((min, w) => Math.min(min, w.at), Number.POSITIVE_INFINITY);
    return oldest === Number.POSITIVE_INFINITY ? 0 : this.now() - oldest;
  }

  /** Resolves once the view has been listed and is live (never while etcd is unreachable). */
  ready(): Promise<void> {
    return this.state === "live" ? Promise.resolve() : this.waitFor(Number.MAX_SAFE_INTEGER, true);
  }

  /**
   * Checks that the view is live, and waits (at most `waitMs`) until it holds `minRevision`, the
   * revision of this agent's own last write, so a read after a write sees it. Throws
   * RegistryUnavailableError while the view is not live because etcd cannot be reached, and an
   * Error naming the cause when it is not live for another reason.
   */
  async current(minRevision: number, waitMs: number): Promise<void> {
    if (this.state === "live" && this.view.revision < minRevision) {
      const waiter = { revision: minRevision, resolve: () => {} };
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        waiter.resolve = resolve;
        this.waiters.push(waiter);
        timer = setTimeout(resolve, waitMs);
      });
      clearTimeout(timer);
      this.waiters = this.waiters.filter((w) => w !== waiter);
    }
    if (this.state === "live") return;
    const why = `registry view ${this.state} since ${new Date(this.since).toISOString()}`;
    if (this.error === undefined) throw new Error(`${why}: not listed yet`);
    if (this.error instanceof RegistryUnavailableError)
      throw new RegistryUnavailableError(new Error(`${why}: ${this.error.message}`));
    throw new Error(`${why}: ${describe(this.error)}`);
  }

  private waitFor(revision: number, live: boolean): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push({ revision: live ? -1 : revision, resolve });
    });
  }

  private notify(): void {
    if (this.unapplied.some((w) => w.revision <= this.view.revision)) {
      const at = this.now();
      this.unapplied = this.unapplied.filter((w) => {
        if (w.revision > this.view.revision) return true;
        this.opts.onWriteApplied?.(at - w.at);
        return false;
      });
    }
    const live = this.state === "live";
    this.waiters = this.waiters.filter((w) => {
      const done = live && (w.revision === -1 || this.view.revision >= w.revision);
      if (done) w.resolve();
      return !done;
    });
  }

  private setState(state: ViewState, error?: unknown): void {
    if (state !== this.state) this.since = Date.now();
    this.state = state;
    if (error !== undefined) this.error = error;
    if (state === "live") this.error = undefined;
    this.notify();
  }

  private async run(): Promise<void> {
    const { log } = this.opts;
    let needList = true;
    let failures = 0;
    while (!this.stopped) {
      try {
        if (needList) {
          this.setState("listing");
          await this.list();
          needList = false;
          this.opts.onResync?.();
        } else if (!(await this.canResume())) {
          log.error({ revision: this.view.revision }, "the view's revision was compacted away; relisting");
          needList = true;
          continue;
        }
        const end = await this.watchOnce(() => {
          if (failures > 0) log.info({ revision: this.view.revision }, "etcd watch live again");
          failures = 0;
        });
        if (this.stopped) return;
        if (end.kind === "canceled") {
          needList = true;
          log.error(
            { err: describe(end.err), revision: this.view.revision },
            "etcd canceled the registry watch (revision compacted?); relisting",
          );
        } else {
          if (failures === 0 || failures % 10 === 0)
            log.error(
              { err: describe(end.err), revision: this.view.revision, attempt: failures + 1 },
              "etcd registry watch broken; resuming from the view's revision",
            );
        }
      } catch (err) {
        if (this.stopped) return;
        this.setState(this.lists === 0 ? "listing" : "broken", err);
        if (failures === 0 || failures % 10 === 0)
          log.error({ err: describe(err), attempt: failures + 1 }, "cannot list the registry; retrying");
      }
      failures++;
      await this.pause(
        Math.min(
          (this.opts.retryMinMs ?? 200) * 2 ** Math.min(failures - 1, 10),
          this.opts.retryMaxMs ?? RETRY_MAX_MS,
        ),
      );
    }
  }

  /**
   * Whether etcd still has the view's revision. etcd accepts a watch from a compacted revision and
   * cancels it only a moment later, a moment in which the stale view would count as live; one
   * one-key read at that revision settles it before watching.
   */
  private async canResume(): Promise<boolean> {
    try {
      await this.source.range({
        start: this.prefix,
        end: prefixEnd(this.prefix),
        limit: 1,
        revision: this.view.revision,
      });
      return true;
    } catch (err) {
      if (err instanceof CompactedError) return false;
      throw err;
    }
  }

  /** Lists every kept prefix at one revision, then loads the view. */
  private async list(): Promise<void> {
    const started = Date.now();
    for (;;) {
      let revision = 0;
      const entries: KvEntry[] = [];
      let pages = 0;
      try {
        for (const prefix of this.view.prefixes()) {
          let start = prefix;
          const end = prefixEnd(prefix);
          let limit = this.pageSize;
          for (;;) {
            let page: KvPage;
            try {
              page = await this.source.range({ start, end, limit, revision });
            } catch (err) {
              if (err instanceof TooLargeError && limit > 1) {
                limit = Math.max(1, Math.floor(limit / 2));
                continue;
              }
              throw err;
            }
            pages++;
            if (revision === 0) revision = page.revision;
            entries.push(...page.entries);
            const last = page.entries[page.entries.length - 1];
            if (!page.more || last === undefined) break;
            start = `${last.key}\0`;
          }
        }
      } catch (err) {
        // The revision the first page was read at was compacted before the last page: start over.
        if (err instanceof CompactedError) continue;
        throw err;
      }
      this.view.load(entries, revision);
      this.lists++;
      this.opts.log.info(
        { revision, keys: entries.length, pages, ms: Date.now() - started, ...this.view.size() },
        "registry listed",
      );
      return;
    }
  }

  /** Watches from the view's revision until the watch breaks or is canceled. */
  private watchOnce(onConnected: () => void): Promise<{ kind: "broken" | "canceled"; err: unknown }> {
    return new Promise((resolve) => {
      let ended = false;
      const end = (kind: "broken" | "canceled", err: unknown) => {
        if (ended) return;
        ended = true;
        this.wake = undefined;
        // At once, so reads fail from this moment on, not after the loop next runs.
        if (!this.stopped) this.setState("broken", err);
        resolve({ kind, err });
      };
      this.wake = () => end("broken", new Error("stopped"));
      this.watch = this.source.watch(this.prefix, this.view.revision + 1, {
        connected: () => {
          if (ended) return;
          this.setState("live");
          onConnected();
        },
        events: (events) => {
          if (ended || events.length === 0) return;
          this.opts.onEvents?.(events, this.view);
          this.view.apply(events);
          this.notify();
        },
        progress: (revision) => {
          if (ended) return;
          this.view.advance(revision);
          this.notify();
        },
        broken: (err) => end("broken", err),
        canceled: (err) => end("canceled", err),
      });
    });
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** The first key after every key that starts with `prefix`. */
export function prefixEnd(prefix: string): string {
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
