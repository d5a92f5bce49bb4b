// The agent's in-memory copy of every service record, fed by one etcd watch, so that DNS answers
// never wait on etcd. `ServiceCache` is a plain data structure; `feedServiceCache` keeps it in
// step with etcd: a range read, then a watch from the next revision, so no change falls between.

import type { Etcd3 } from "etcd3";
import type { Logger } from "../log.js";
import type { Keys } from "../registry/keys.js";
import { type Quarantine, reasonOf } from "../registry/quarantine.js";
import type { ZoneData } from "./dns.js";
import { checkServiceRecord, type ServiceRecord } from "./record.js";

/** One change; `revision` is its mod revision, when known. */
export type ServiceEvent =
  | { type: "put"; key: string; value: string; revision?: number }
  | { type: "delete"; key: string };

export class ServiceCache implements ZoneData {
  /** service → etcd key → record. */
  private readonly services = new Map<string, Map<string, ServiceRecord>>();
  /** Sorted per-service arrays handed to DNS, rebuilt only when the service changes. */
  private readonly views = new Map<string, readonly ServiceRecord[]>();
  /** First 8 characters of a machine ID → etcd key → record. */
  private readonly nodes = new Map<string, Map<string, ServiceRecord>>();

  /** Bad values go to `quarantine` with their reason (docs/etcd-keys.md, "Quarantine"). */
  constructor(
    private readonly keys: Keys,
    private readonly quarantine?: Quarantine,
  ) {}

  /** Replaces the whole content with a range read of `services/`; returns the keys it rejected. */
  load(entries: readonly { key: string; value: string; revision?: number }[]): string[] {
    this.services.clear();
    this.views.clear();
    this.nodes.clear();
    const rejected = this.apply(entries.map((e) => ({ type: "put", ...e })));
    this.quarantine?.sweep(["services"], new Set(rejected));
    return rejected;
  }

  /**
   * Applies watch events in order; returns the keys whose values it rejected (not JSON, not a
   * valid record, or not matching their key). A rejected put also drops what the key held before.
   */
  apply(events: readonly ServiceEvent[]): string[] {
    const rejected: string[] = [];
    for (const ev of events) {
      this.remove(ev.key);
      if (ev.type === "delete") {
        this.quarantine?.release(ev.key);
        continue;
      }
      try {
        this.add(ev.key, this.check(ev.key, ev.value));
        this.quarantine?.release(ev.key);
      } catch (err) {
        this.quarantine?.hold(ev.key, "services", reasonOf(err), ev.revision ?? 0);
        rejected.push(ev.key);
      }
    }
    return rejected;
  }

  service(name: string): readonly ServiceRecord[] {
    let view = this.views.get(name);
    if (!view) {
      view = [...(this.services.get(name)?.values() ?? [])].sort(byMachineThenUnit);
      this.views.set(name, view);
    }
    return view;
  }

  node(machineID8: string): readonly string[] {
    return [...new Set([...(this.nodes.get(machineID8)?.values() ?? [])].map((r) => r.ip))];
  }

  /** Every record, by service, machine and unit (for listings). */
  all(): ServiceRecord[] {
    return [...this.services.keys()].sort().flatMap((name) => this.service(name));
  }

  private check(key: string, value: string): ServiceRecord {
    const parts = this.keys.parseServiceKey(key);
    if (!parts) throw new Error("key is not services/<service>/<machineID>/<unit>");
    const record = checkServiceRecord(value);
    const matches =
      record.service === parts.service && record.machineID === parts.machineID && record.unit === parts.unit;
    if (!matches) throw new Error("fields service, machineID and unit differ from the key's");
    return record;
  }

  private add(key: string, record: ServiceRecord): void {
    const instances = this.services.get(record.service) ?? new Map<string, ServiceRecord>();
    instances.set(key, record);
    this.services.set(record.service, instances);
    this.views.delete(record.service);
    const node = nodeKey(record.machineID);
    const onNode = this.nodes.get(node) ?? new Map<string, ServiceRecord>();
    onNode.set(key, record);
    this.nodes.set(node, onNode);
  }

  private remove(key: string): void {
    const parts = this.keys.parseServiceKey(key);
    if (!parts) return;
    const instances = this.services.get(parts.service);
    if (instances?.delete(key)) {
      this.views.delete(parts.service);
      if (instances.size === 0) this.services.delete(parts.service);
    }
    const node = nodeKey(parts.machineID);
    const onNode = this.nodes.get(node);
    if (onNode?.delete(key) && onNode.size === 0) this.nodes.delete(node);
  }
}

function nodeKey(machineID: string): string {
  return machineID.slice(0, 8).toLowerCase();
}

function byMachineThenUnit(a: ServiceRecord, b: ServiceRecord): number {
  if (a.machineID !== b.machineID) return a.machineID < b.machineID ? -1 : 1;
  return a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0;
}

export interface ServiceFeed {
  /** Resolves once the cache holds a full copy and the watch is live (never, while etcd is down). */
  ready: Promise<void>;
  stop(): Promise<void>;
}

const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;

/**
 * Keeps `cache` equal to etcd's `services/`. The etcd3 watcher resumes by itself after a
 * disconnect; when etcd cancels it (e.g. its revision was compacted away) the copy is reloaded.
 * While etcd is unreachable the cache keeps serving what it last knew.
 */
export function feedServiceCache(client: Etcd3, keys: Keys, cache: ServiceCache, log: Logger): ServiceFeed {
  const prefix = keys.services();
  let stopped = false;
  let wake: (() => void) | undefined;
  let watcher: ReturnType<ReturnType<Etcd3["watch"]>["watcher"]> | undefined;
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });

  const run = async () => {
    for (let attempt = 0; !stopped; attempt++) {
      try {
        const res = await client.getAll().prefix(prefix).exec();
        if (stopped) return;
        // Rejected values are the cache's quarantine's to log, once each.
        cache.load(
          res.kvs.map((kv) => ({
            key: kv.key.toString(),
            value: kv.value.toString(),
            revision: Number(kv.mod_revision),
          })),
        );
        // watcher() rather than create(): it registers with the stream at once, so the handlers
        // below are attached before any event can be emitted.
        const w = client
          .watch()
          .prefix(prefix)
          .startRevision((BigInt(res.header.revision) + 1n).toString())
          .watcher();
        watcher = w;
        w.on("put", (kv) =>
          cache.apply([
            {
              type: "put",
              key: kv.key.toString(),
              value: kv.value.toString(),
              revision: Number(kv.mod_revision),
            },
          ]),
        );
        w.on("delete", (kv) => cache.apply([{ type: "delete", key: kv.key.toString() }]));
        w.on("disconnected", () => log.debug("service watch disconnected; serving cached records"));
        const failure = await new Promise<unknown>((resolve) => {
          wake = () => resolve(undefined);
          w.once("connected", () => {
            attempt = 0;
            markReady();
          });
          // `on`, not `once`: an unhandled second "error" would throw out of the emitter.
          w.on("error", resolve);
        });
        if (stopped) return;
        // etcd ended this watch and etcd3 has already dropped it: it is never canceled, not even
        // by stop() (docs/architecture.md, "Watches etcd ended").
        watcher = undefined;
        log.warn({ err: String(failure) }, "service watch canceled; reloading service records");
      } catch (err) {
        if (stopped) return;
        log.warn({ err: String(err), attempt }, "cannot load service records yet; retrying");
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(RETRY_MIN_MS * 2 ** attempt, RETRY_MAX_MS));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  };
  const running = run();

  return {
    ready,
    async stop() {
      stopped = true;
      wake?.();
      await watcher?.cancel().catch(() => {});
      await running;
    },
  };
}
