// The view's feed against an in-memory stand-in for etcd's MVCC store: paged lists at one
// revision, watch loss and resume from the view's revision, compaction and relist.

import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import {
  CompactedError,
  type KvPage,
  type KvSource,
  TooLargeError,
  ViewFeed,
  type WatchSink,
} from "../../agent/registry/feed.js";
import { Keys } from "../../agent/registry/keys.js";
import { RegistryUnavailableError } from "../../agent/registry/registry.js";
import { ClusterView, type ViewEvent } from "../../agent/registry/view.js";

/** etcd's keyspace as far as the feed can tell: revisions, history, compaction, a connection. */
class FakeEtcd implements KvSource {
  revision = 1;
  compacted = 0;
  down = false;
  /** Largest reply a range may return, in keys (stands for gRPC's 4 MiB). */
  maxReplyKeys = Number.POSITIVE_INFINITY;
  readonly ranges: { start: string; limit: number; revision: number }[] = [];
  watchesStarted: number[] = [];
  private history: ViewEvent[] = [];
  private watches = new Set<{ prefix: string; sink: WatchSink; next: number }>();

  put(key: string, value: unknown): number {
    this.revision++;
    this.emit({ type: "put", key, value: JSON.stringify(value), revision: this.revision });
    return this.revision;
  }

  del(key: string): number {
    this.revision++;
    this.emit({ type: "delete", key, revision: this.revision });
    return this.revision;
  }

  compact(): void {
    this.compacted = this.revision;
  }

  /** The connection drops: every watch breaks, calls fail until `up()`. */
  cut(): void {
    this.down = true;
    for (const w of [...this.watches]) {
      this.watches.delete(w);
      w.sink.broken(new RegistryUnavailableError(new Error("14 UNAVAILABLE: connection refused")));
    }
  }

  up(): void {
    this.down = false;
  }

  /** etcd ends every watch (as it does for a watch whose revision it compacted away). */
  cancelWatches(): void {
    for (const w of [...this.watches]) {
      this.watches.delete(w);
      w.sink.canceled(new Error("Watcher canceled: mvcc: required revision has been compacted"));
    }
  }

  async range(req: { start: string; end: string; limit: number; revision: number }): Promise<KvPage> {
    this.ranges.push({ start: req.start, limit: req.limit, revision: req.revision });
    if (this.down) throw new RegistryUnavailableError(new Error("14 UNAVAILABLE: connection refused"));
    const at = req.revision || this.revision;
    if (at < this.compacted) throw new CompactedError("mvcc: required revision has been compacted");
    const state = new Map<string, string>();
    for (const ev of this.history) {
      if (ev.revision > at) break;
      if (ev.type === "put") state.set(ev.key, ev.value);
      else state.delete(ev.key);
    }
    const inRange = [...state.entries()]
      .filter(([k]) => k >= req.start && k < req.end)
      .sort(([a], [b]) => (a < b ? -1 : 1));
    const page = inRange.slice(0, req.limit);
    if (page.length > this.maxReplyKeys) throw new TooLargeError("8 RESOURCE_EXHAUSTED: message too large");
    return {
      revision: at,
      entries: page.map(([key, value]) => ({ key, value })),
      more: inRange.length > page.length,
    };
  }

  watch(prefix: string, fromRevision: number, sink: WatchSink): { cancel(): Promise<void> } {
    this.watchesStarted.push(fromRevision);
    const w = { prefix, sink, next: fromRevision };
    queueMicrotask(() => {
      if (this.down) return sink.broken(new RegistryUnavailableError(new Error("connection refused")));
      if (fromRevision <= this.compacted)
        return sink.canceled(new Error("Watcher canceled: required revision has been compacted"));
      this.watches.add(w);
      sink.connected();
      const missed = this.history.filter((e) => e.revision >= fromRevision && e.key.startsWith(prefix));
      if (missed.length > 0) sink.events(missed);
    });
    return {
      cancel: async () => {
        this.watches.delete(w);
      },
    };
  }

  /** While set, live events wait (a slow watch); `release` delivers them. */
  hold = false;
  private held: ViewEvent[] = [];

  release(): void {
    this.hold = false;
    const evs = this.held.splice(0);
    for (const w of this.watches) w.sink.events(evs.filter((e) => e.key.startsWith(w.prefix)));
  }

  private emit(ev: ViewEvent): void {
    this.history.push(ev);
    if (this.hold) this.held.push(ev);
    else for (const w of this.watches) if (ev.key.startsWith(w.prefix)) w.sink.events([ev]);
  }
}

const keys = new Keys("/t/");
const log = pino({ level: "silent" });
const unit = (name: string, desiredState = "launched") => ({ name, options: [], hash: "h", desiredState });
const until = async (what: string, cond: () => boolean) => {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
};

const feeds: ViewFeed[] = [];
afterEach(async () => {
  for (const f of feeds.splice(0)) await f.stop();
});

function start(etcd: FakeEtcd, pageSize = 1000) {
  const view = new ClusterView(keys);
  const batches: ViewEvent[][] = [];
  let resyncs = 0;
  const feed = new ViewFeed(etcd, view, keys.prefix, {
    log,
    pageSize,
    retryMinMs: 1,
    retryMaxMs: 5,
    onEvents: (events) => batches.push([...events]),
    onResync: () => resyncs++,
  });
  feeds.push(feed);
  feed.start();
  return { view, feed, batches, resyncs: () => resyncs };
}

describe("the registry feed", () => {
  it("lists in pages at one revision, then watches from the next", async () => {
    const etcd = new FakeEtcd();
    for (let i = 0; i < 25; i++) {
      const name = `u${String(i).padStart(2, "0")}.service`;
      etcd.put(keys.unit(name), unit(name));
    }
    const listedAt = etcd.revision;
    const { view, feed } = start(etcd, 10);
    await feed.ready();
    expect(view.snapshot().units).toHaveLength(25);
    expect(view.quarantine.list()).toEqual([]);
    const unitPages = etcd.ranges.filter((r) => r.start.startsWith(keys.units()));
    expect(unitPages.map((r) => r.limit)).toEqual([10, 10, 10]);
    // Every page after the first is read at the first page's revision.
    expect(etcd.ranges.slice(1).every((r) => r.revision === listedAt)).toBe(true);
    expect(etcd.watchesStarted).toEqual([listedAt + 1]);

    const rev = etcd.put(keys.unit("new.service"), unit("new.service"));
    await until("the new unit", () => view.unit("new.service") !== undefined);
    expect(view.revision).toBe(rev);
    expect(feed.health()).toMatchObject({ state: "live", revision: rev, units: 26, lists: 1 });
  });

  it("halves a page that is too large for one reply", async () => {
    const etcd = new FakeEtcd();
    for (let i = 0; i < 9; i++) etcd.put(keys.unit(`u${i}.service`), unit(`u${i}.service`));
    etcd.maxReplyKeys = 3;
    const { view, feed } = start(etcd, 8);
    await feed.ready();
    expect(view.size().units).toBe(9);
    const limits = etcd.ranges.filter((r) => r.start.startsWith(keys.units())).map((r) => r.limit);
    expect(limits.slice(0, 3)).toEqual([8, 4, 2]);
  });

  it("resumes a broken watch from the view's revision, missing nothing and listing once", async () => {
    const etcd = new FakeEtcd();
    etcd.put(keys.unit("a.service"), unit("a.service"));
    const { view, feed, resyncs } = start(etcd);
    await feed.ready();
    const before = view.revision;

    etcd.cut();
    expect(feed.health().state).toBe("broken");
    expect(feed.health().error).toMatch(/UNAVAILABLE/);
    await expect(feed.current(0, 10)).rejects.toBeInstanceOf(RegistryUnavailableError);
    // Changes made while this agent is cut off (by other agents, through another connection).
    etcd.down = false;
    etcd.put(keys.unit("b.service"), unit("b.service"));
    etcd.del(keys.unit("a.service"));
    etcd.down = true;
    await new Promise((r) => setTimeout(r, 20));
    etcd.up();

    await until("the view to catch up", () => view.unit("b.service") !== undefined);
    expect(view.unit("a.service")).toBeUndefined();
    expect(feed.health().state).toBe("live");
    expect(etcd.watchesStarted[0]).toBe(before + 1);
    expect(etcd.watchesStarted.at(-1)).toBe(before + 1);
    expect(feed.health().lists).toBe(1);
    expect(resyncs()).toBe(1);
  });

  it("relists when the watch's revision was compacted away", async () => {
    const etcd = new FakeEtcd();
    etcd.put(keys.unit("a.service"), unit("a.service"));
    const { view, feed, resyncs } = start(etcd);
    await feed.ready();

    etcd.cut();
    etcd.down = false;
    etcd.put(keys.unit("b.service"), unit("b.service"));
    etcd.del(keys.unit("a.service"));
    etcd.put(keys.state("b.service", "m1"), {
      name: "b.service",
      machineID: "m1",
      hash: "h",
      loadState: "loaded",
      activeState: "active",
      subState: "running",
    });
    etcd.compact();
    etcd.down = true;
    etcd.up();

    await until("a relist", () => feed.health().lists === 2 && feed.health().state === "live");
    expect(view.unit("a.service")).toBeUndefined();
    expect(view.unit("b.service")).toBeDefined();
    expect(view.statesOf("b.service").map((s) => s.machineID)).toEqual(["m1"]);
    expect(view.revision).toBe(etcd.revision);
    expect(resyncs()).toBe(2);

    const rev = etcd.put(keys.unit("c.service"), unit("c.service"));
    await until("watching again", () => view.revision === rev);
  });

  it("relists when etcd cancels a live watch", async () => {
    const etcd = new FakeEtcd();
    etcd.put(keys.unit("a.service"), unit("a.service"));
    const { view, feed } = start(etcd);
    await feed.ready();
    etcd.hold = true;
    etcd.put(keys.unit("b.service"), unit("b.service"));
    etcd.cancelWatches();
    etcd.hold = false;
    await until("a relist", () => feed.health().lists === 2 && feed.health().state === "live");
    expect(view.unit("b.service")).toBeDefined();
  });

  it("makes a read wait for the agent's own write, within a bound", async () => {
    const etcd = new FakeEtcd();
    const { view, feed } = start(etcd);
    await feed.ready();
    etcd.hold = true;
    const rev = etcd.put(keys.unit("late.service"), unit("late.service"));
    const read = feed.current(rev, 5000).then(() => view.unit("late.service"));
    await new Promise((r) => setTimeout(r, 20));
    etcd.release();
    expect(await read).toBeDefined();

    // A watch that stays behind does not hang reads: after the bound they see what the view has.
    etcd.hold = true;
    const rev2 = etcd.put(keys.unit("later.service"), unit("later.service"));
    const t = Date.now();
    await feed.current(rev2, 30);
    expect(Date.now() - t).toBeGreaterThanOrEqual(25);
    expect(view.unit("later.service")).toBeUndefined();
    etcd.release();
  });

  it("names a cause other than a lost connection as such, not as etcd unreachable", async () => {
    const etcd = new FakeEtcd();
    etcd.range = async () => {
      throw new Error("etcdserver: permission denied");
    };
    const { feed } = start(etcd);
    await until("a failed list", () => feed.health().error !== undefined);
    const err = await feed.current(0, 10).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(RegistryUnavailableError);
    expect(String(err)).toMatch(/permission denied/);
    expect(feed.health()).toMatchObject({ state: "listing", lists: 0 });
  });
});

describe("the registry feed's watch lag", () => {
  function startTimed(etcd: FakeEtcd) {
    const clock = { ms: 1_000_000 };
    const lags: number[] = [];
    const view = new ClusterView(keys);
    const feed = new ViewFeed(etcd, view, keys.prefix, {
      log,
      retryMinMs: 1,
      retryMaxMs: 5,
      now: () => clock.ms,
      onWriteApplied: (ms) => lags.push(ms),
    });
    feeds.push(feed);
    feed.start();
    return { view, feed, clock, lags };
  }

  it("times this agent's writes from etcd's acknowledgement to the view applying them", async () => {
    const etcd = new FakeEtcd();
    const { feed, clock, lags } = startTimed(etcd);
    await feed.ready();
    expect(feed.unappliedWriteAgeMs()).toBe(0);

    // A slow watch: the write is acknowledged, its event held back.
    etcd.hold = true;
    const rev = etcd.put(keys.unit("a.service"), unit("a.service"));
    feed.written(rev);
    clock.ms += 250;
    expect(feed.unappliedWriteAgeMs()).toBe(250);
    const second = etcd.put(keys.unit("b.service"), unit("b.service"));
    feed.written(second);
    clock.ms += 100;
    // The oldest unapplied write decides.
    expect(feed.unappliedWriteAgeMs()).toBe(350);
    etcd.release();
    await until("both writes applied", () => lags.length === 2);
    expect(lags).toEqual([350, 100]);
    expect(feed.unappliedWriteAgeMs()).toBe(0);

    // A write whose event the view applied before the acknowledgement arrived: no lag.
    const third = etcd.put(keys.unit("c.service"), unit("c.service"));
    await until("the third write applied", () => feed.health().revision === third);
    feed.written(third);
    expect(lags).toEqual([350, 100, 0]);
  });

  it("keeps counting while the watch is broken, until the resumed watch applies the write", async () => {
    const etcd = new FakeEtcd();
    const { feed, clock, lags } = startTimed(etcd);
    await feed.ready();
    etcd.cut();
    await until("the feed broken", () => feed.health().state === "broken");
    const rev = etcd.put(keys.unit("a.service"), unit("a.service"));
    feed.written(rev);
    clock.ms += 5_000;
    expect(feed.unappliedWriteAgeMs()).toBe(5_000);
    clock.ms += 5_000;
    expect(feed.unappliedWriteAgeMs()).toBe(10_000);
    expect(lags).toEqual([]);
    etcd.up();
    await until("the write applied", () => lags.length === 1);
    expect(lags).toEqual([10_000]);
    expect(feed.unappliedWriteAgeMs()).toBe(0);
  });
});
