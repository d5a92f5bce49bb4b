// EtcdRegistry: the Registry over etcd v3. Reads are served by the watch-fed ClusterView
// (view.ts, feed.ts), never by a range over the whole prefix; writes go to etcd, and a read after
// this agent's own write waits (briefly) until the view holds it. Engine writes are transactions
// guarded by the leader key, so an engine that lost its leadership cannot write a stale decision.

import type { Etcd3 } from "etcd3";
import type { DesiredState, Machine, UnitRecord } from "../model.js";
import { asRegistryError } from "./etcd-source.js";
import type { ViewFeed } from "./feed.js";
import { Keys } from "./keys.js";
import { type ClusterSnapshot, ENGINE_TXN_MAX_WRITES, type EngineWrite, type Registry } from "./registry.js";
import { type ClusterView, parseUnitRecord } from "./view.js";

/** How long a read waits for the view to catch up with this agent's own last write. */
export const READ_YOUR_WRITES_WAIT_MS = 2000;

export class EtcdRegistry implements Registry {
  /** Revision of this agent's last write under the prefix; reads wait for the view to reach it. */
  private lastWrite = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly view: ClusterView,
    private readonly feed: Pick<ViewFeed, "current" | "written">,
    readonly keys: Keys = new Keys(),
  ) {}

  async snapshot(): Promise<ClusterSnapshot> {
    await this.feed.current(this.lastWrite, READ_YOUR_WRITES_WAIT_MS);
    return this.view.snapshot();
  }

  /** A bad stored record counts as absent, as the view has it (quarantined): a PUT replaces it. */
  async getUnit(name: string): Promise<UnitRecord | undefined> {
    const raw = await this.call(() => this.client.get(this.keys.unit(name)).string());
    if (raw === null) return undefined;
    try {
      return parseUnitRecord(name, raw);
    } catch {
      return undefined;
    }
  }

  async putUnit(unit: UnitRecord): Promise<void> {
    this.wrote(
      await this.call(() => this.client.put(this.keys.unit(unit.name)).value(JSON.stringify(unit)).exec()),
    );
  }

  async setDesiredState(name: string, state: DesiredState): Promise<boolean> {
    // Compare-and-swap on the record's mod revision so a concurrent replace is not undone.
    for (;;) {
      const res = await this.call(() => this.client.get(this.keys.unit(name)).exec());
      const kv = res.kvs[0];
      if (!kv) return false;
      const unit = parseStoredUnit(this.keys.unit(name), name, kv.value.toString());
      if (unit.desiredState === state) return true;
      const txn = await this.call(() =>
        this.client
          .if(this.keys.unit(name), "Mod", "==", Number(kv.mod_revision))
          .then(this.client.put(this.keys.unit(name)).value(JSON.stringify({ ...unit, desiredState: state })))
          .commit(),
      );
      this.wrote(txn, txn.succeeded);
      if (txn.succeeded) return true;
    }
  }

  async destroyUnit(name: string): Promise<boolean> {
    const txn = await this.call(() =>
      this.client
        .if(this.keys.unit(name), "Create", ">", 0)
        .then(
          this.client.delete().key(this.keys.unit(name)),
          this.client.delete().key(this.keys.schedule(name)),
          this.client.delete().key(this.keys.pending(name)),
          this.client.delete().key(this.keys.failures(name)),
        )
        .commit(),
    );
    this.wrote(txn, txn.succeeded);
    return txn.succeeded;
  }

  async listMachines(): Promise<Machine[]> {
    return (await this.snapshot()).machines;
  }

  async setMachineMetadata(machineID: string, key: string, value: string | undefined): Promise<void> {
    const k = this.keys.metadata(machineID, key);
    if (value === undefined) {
      const res = await this.call(() => this.client.delete().key(k).exec());
      this.wrote(res, Number(res.deleted) > 0);
    } else this.wrote(await this.call(() => this.client.put(k).value(value).exec()));
  }

  async deleteState(name: string, machineID: string): Promise<void> {
    const res = await this.call(() => this.client.delete().key(this.keys.state(name, machineID)).exec());
    this.wrote(res, Number(res.deleted) > 0);
  }

  async deleteKey(key: string): Promise<void> {
    const res = await this.call(() => this.client.delete().key(key).exec());
    this.wrote(res, Number(res.deleted) > 0);
  }

  async writeAsLeader(writes: readonly EngineWrite[], leader: string): Promise<boolean> {
    if (writes.length > ENGINE_TXN_MAX_WRITES)
      throw new Error(`engine: ${writes.length} writes in one transaction, over ${ENGINE_TXN_MAX_WRITES}`);
    let txn = this.client.if(this.keys.engineLeader(), "Value", "==", leader);
    const ops: Parameters<typeof txn.then> = [];
    const putOrDelete = (key: string, value: unknown) =>
      value === undefined ? this.client.delete().key(key) : this.client.put(key).value(JSON.stringify(value));
    for (const w of writes) {
      switch (w.kind) {
        case "schedule":
          ops.push(putOrDelete(this.keys.schedule(w.unit), w.placement));
          break;
        case "unschedule": {
          const key = this.keys.schedule(w.unit);
          // A deleted key has mod revision 0, so deleting what is already gone passes the guard.
          txn =
            "placement" in w.expect
              ? txn.and(key, "Value", "==", JSON.stringify(w.expect.placement))
              : txn.and(key, "Mod", "<", w.expect.unchangedSince + 1);
          ops.push(this.client.delete().key(key));
          break;
        }
        case "pending":
          ops.push(putOrDelete(this.keys.pending(w.unit), w.reason));
          break;
        case "failures":
          ops.push(putOrDelete(this.keys.failures(w.unit), w.record));
          break;
      }
    }
    const res = await this.call(() => txn.then(...ops).commit());
    this.wrote(res, res.succeeded);
    return res.succeeded;
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw asRegistryError(err);
    }
  }

  /** Notes a write that changed a key under the prefix (so the watch will deliver it). */
  private wrote(res: { header: { revision: string } }, changed = true): void {
    if (!changed) return;
    const revision = Number(res.header.revision);
    this.lastWrite = Math.max(this.lastWrite, revision);
    this.feed.written(revision);
  }
}

/** A stored unit record, checked; a bad one is an error naming its key, not a crash later. */
function parseStoredUnit(key: string, name: string, raw: string): UnitRecord {
  try {
    return parseUnitRecord(name, raw);
  } catch (err) {
    throw new Error(`corrupt unit record at ${key}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
