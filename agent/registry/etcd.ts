// EtcdRegistry: the Registry over etcd v3. Reads take one range over the whole prefix, so a
// snapshot is consistent at a single revision; engine writes are transactions guarded by the
// leader key, so an engine that lost its leadership cannot write a stale decision.

import type { Etcd3, IKeyValue } from "etcd3";
import type { DesiredState, FailureRecord, Machine, Placement, UnitRecord, UnitState } from "../model.js";
import { Keys } from "./keys.js";
import {
  type ClusterSnapshot,
  ENGINE_TXN_MAX_WRITES,
  type EngineWrite,
  type PendingReason,
  type Registry,
  RegistryUnavailableError,
} from "./registry.js";

export class EtcdRegistry implements Registry {
  constructor(
    private readonly client: Etcd3,
    readonly keys: Keys = new Keys(),
  ) {}

  async snapshot(): Promise<ClusterSnapshot> {
    const res = await this.call(() => this.client.getAll().prefix(this.keys.prefix).exec());
    return parseSnapshot(this.keys, Number(res.header.revision), res.kvs);
  }

  async getUnit(name: string): Promise<UnitRecord | undefined> {
    const raw = await this.call(() => this.client.get(this.keys.unit(name)).string());
    return raw === null ? undefined : (JSON.parse(raw) as UnitRecord);
  }

  async putUnit(unit: UnitRecord): Promise<void> {
    await this.call(() => this.client.put(this.keys.unit(unit.name)).value(JSON.stringify(unit)).exec());
  }

  async setDesiredState(name: string, state: DesiredState): Promise<boolean> {
    // Compare-and-swap on the record's mod revision so a concurrent replace is not undone.
    for (;;) {
      const res = await this.call(() => this.client.get(this.keys.unit(name)).exec());
      const kv = res.kvs[0];
      if (!kv) return false;
      const unit = JSON.parse(kv.value.toString()) as UnitRecord;
      if (unit.desiredState === state) return true;
      const txn = await this.call(() =>
        this.client
          .if(this.keys.unit(name), "Mod", "==", Number(kv.mod_revision))
          .then(this.client.put(this.keys.unit(name)).value(JSON.stringify({ ...unit, desiredState: state })))
          .commit(),
      );
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
    return txn.succeeded;
  }

  async listMachines(): Promise<Machine[]> {
    const snap = await this.snapshot();
    return snap.machines;
  }

  async setMachineMetadata(machineID: string, key: string, value: string | undefined): Promise<void> {
    const k = this.keys.metadata(machineID, key);
    await this.call(async () => {
      if (value === undefined) await this.client.delete().key(k).exec();
      else await this.client.put(k).value(value).exec();
    });
  }

  async deleteState(name: string, machineID: string): Promise<void> {
    await this.call(() => this.client.delete().key(this.keys.state(name, machineID)).exec());
  }

  async deleteKey(key: string): Promise<void> {
    await this.call(() => this.client.delete().key(key).exec());
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
    return res.succeeded;
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new RegistryUnavailableError(err);
    }
  }
}

/** Splits one prefix range into the snapshot's maps. Unparseable values are skipped, not fatal. */
export function parseSnapshot(keys: Keys, revision: number, kvs: IKeyValue[]): ClusterSnapshot {
  const snap: ClusterSnapshot = {
    revision,
    units: [],
    schedule: new Map(),
    pending: new Map(),
    failures: new Map(),
    machines: [],
    states: [],
    corrupt: [],
  };
  const dynamicMetadata = new Map<string, Record<string, string>>();
  for (const kv of kvs) {
    const key = kv.key.toString();
    const value = kv.value.toString();
    const k = keys.classify(key);
    try {
      switch (k?.family) {
        case "units":
          snap.units.push(JSON.parse(value) as UnitRecord);
          break;
        case "schedule":
          snap.schedule.set(k.rest, JSON.parse(value) as Placement);
          break;
        case "pending":
          snap.pending.set(k.rest, JSON.parse(value) as PendingReason);
          break;
        case "failures":
          snap.failures.set(k.rest, JSON.parse(value) as FailureRecord);
          break;
        case "machines":
          snap.machines.push(JSON.parse(value) as Machine);
          break;
        case "states":
          snap.states.push(JSON.parse(value) as UnitState);
          break;
        case "metadata": {
          const slash = k.rest.indexOf("/");
          if (slash <= 0) break;
          const id = k.rest.slice(0, slash);
          dynamicMetadata.set(id, { ...dynamicMetadata.get(id), [k.rest.slice(slash + 1)]: value });
          break;
        }
      }
    } catch {
      // A corrupt value (hand-edited etcd) must not take the whole cluster view down.
      snap.corrupt.push(key);
    }
  }
  for (const m of snap.machines) {
    const extra = dynamicMetadata.get(m.id);
    if (extra) m.metadata = { ...m.metadata, ...extra };
  }
  snap.units.sort((a, b) => cmp(a.name, b.name));
  snap.machines.sort((a, b) => cmp(a.id, b.id));
  snap.states.sort((a, b) => cmp(a.name, b.name) || cmp(a.machineID, b.machineID));
  return snap;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
