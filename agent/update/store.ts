// The updater's records in etcd other than the semaphore itself: group configs, bad versions,
// per-machine status and check requests. The API, the updater loop and the lock share it, so
// each record is read and written in exactly one place.

import { randomBytes } from "node:crypto";
import type { Etcd3 } from "etcd3";
import type { Keys } from "../registry/keys.js";
import type { Quarantine } from "../registry/quarantine.js";
import { RegistryUnavailableError } from "../registry/registry.js";
import { parseHolder } from "./lock.js";
import {
  applyGroupConfigChange,
  type BadVersion,
  type CheckRequest,
  DEFAULT_GROUP,
  type GroupConfig,
  type GroupConfigChange,
  type HolderRecord,
  parseGroupConfig,
  type UpdateStatus,
  updateRecordProblem,
} from "./records.js";

export interface GroupSummary {
  name: string;
  config: GroupConfig;
  /** Sorted by holder ID. */
  holders: HolderRecord[];
}

/** Everything under `update/`, read at one revision. */
export interface UpdatesOverview {
  /** Every group with a config or a holder, and always `default`; sorted by name. */
  groups: GroupSummary[];
  /** Sorted by machine ID. */
  statuses: UpdateStatus[];
  /** Sorted by version string. */
  bad: BadVersion[];
}

export class UpdateStore {
  /** Bad values read under `update/` go to `quarantine`, refreshed by every overview. */
  constructor(
    private readonly client: Etcd3,
    readonly keys: Keys,
    private readonly quarantine?: Quarantine,
  ) {}

  async groupConfig(group: string): Promise<GroupConfig> {
    const text = await this.call(() => this.client.get(this.keys.updateGroupConfig(group)).string());
    return parseGroupConfig(text ?? undefined);
  }

  /**
   * Applies `change` to the group's config by compare-and-swap on its mod revision, so two
   * operators changing different fields at once both keep their change. Returns the new config.
   */
  async changeGroupConfig(group: string, change: GroupConfigChange): Promise<GroupConfig> {
    const key = this.keys.updateGroupConfig(group);
    for (;;) {
      const res = await this.call(() => this.client.get(key).exec());
      const kv = res.kvs[0];
      const next = applyGroupConfigChange(parseGroupConfig(kv?.value.toString()), change);
      const txn = await this.call(() =>
        this.client
          .if(key, "Mod", "==", kv ? Number(kv.mod_revision) : 0)
          .then(this.client.put(key).value(JSON.stringify(next)))
          .commit(),
      );
      if (txn.succeeded) return next;
    }
  }

  async overview(): Promise<UpdatesOverview> {
    const res = await this.call(() => this.client.getAll().prefix(this.keys.updates()).exec());
    const groups = new Map<string, GroupSummary>();
    const group = (name: string): GroupSummary => {
      let g = groups.get(name);
      if (!g) {
        g = { name, config: parseGroupConfig(undefined), holders: [] };
        groups.set(name, g);
      }
      return g;
    };
    group(DEFAULT_GROUP);
    const statuses: UpdateStatus[] = [];
    const badVersions: BadVersion[] = [];
    const groupsPrefix = this.keys.updateGroups();
    const bad = new Set<string>();
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      const value = kv.value.toString();
      const problem = updateRecordProblem(key.slice(this.keys.updates().length), value);
      if (problem !== undefined) {
        bad.add(key);
        this.quarantine?.hold(key, "update", problem, Number(kv.mod_revision));
      }
      if (key.startsWith(groupsPrefix)) {
        const [name = "", kind, ...rest] = key.slice(groupsPrefix.length).split("/");
        if (kind === "config") group(name).config = parseGroupConfig(value);
        else if (kind === "holders" && rest.length > 0)
          group(name).holders.push(parseHolder(rest.join("/"), kv));
      } else if (bad.has(key)) {
        // A bad status or bad-version record is skipped (a group config or holder reads leniently).
      } else if (key.startsWith(this.keys.updateStatuses())) {
        statuses.push(JSON.parse(value) as UpdateStatus);
      } else if (key.startsWith(this.keys.updateBadVersions())) {
        badVersions.push(JSON.parse(value) as BadVersion);
      }
    }
    this.quarantine?.sweep(["update"], bad);
    const sorted = [...groups.values()].sort((a, b) => compare(a.name, b.name));
    for (const g of sorted) g.holders.sort((a, b) => compare(a.holder, b.holder));
    return {
      groups: sorted,
      statuses: statuses.sort((a, b) => compare(a.machineId, b.machineId)),
      bad: badVersions.sort((a, b) => compare(a.version, b.version)),
    };
  }

  async putStatus(status: UpdateStatus): Promise<void> {
    await this.call(() =>
      this.client.put(this.keys.updateStatus(status.machineId)).value(JSON.stringify(status)).exec(),
    );
  }

  /** Records a bad version; the first machine's reason is kept when several roll back from it. */
  async markBad(record: BadVersion): Promise<void> {
    const key = this.keys.updateBadVersion(record.version);
    await this.call(() =>
      this.client
        .if(key, "Create", "==", 0)
        .then(this.client.put(key).value(JSON.stringify(record)))
        .commit(),
    );
  }

  async badVersions(): Promise<Set<string>> {
    const keys = await this.call(() => this.client.getAll().prefix(this.keys.updateBadVersions()).keys());
    return new Set(keys.map((k) => k.slice(this.keys.updateBadVersions().length)));
  }

  /** Returns false when the version was not marked bad. */
  async clearBad(version: string): Promise<boolean> {
    const res = await this.call(() => this.client.delete().key(this.keys.updateBadVersion(version)).exec());
    return Number(res.deleted) > 0;
  }

  /** Asks one machine, or every machine (`CHECK_ALL`), to check its channel now. */
  async requestCheck(target: string): Promise<CheckRequest> {
    const request: CheckRequest = { nonce: randomBytes(8).toString("hex"), at: new Date().toISOString() };
    await this.call(() =>
      this.client.put(this.keys.updateCheck(target)).value(JSON.stringify(request)).exec(),
    );
    return request;
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new RegistryUnavailableError(err);
    }
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
