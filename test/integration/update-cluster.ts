// A cluster set up for rolling OS updates, shared by update-rolling.test.ts and
// bench/update-cluster.ts: nspawn machines with A/B slots (test/harness/boot-loader.ts), a channel
// served by the host, agents configured for quick checks and gates, and a recorder of everything
// the updaters write to etcd, in etcd's order (revisions) and with the time each change was seen.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Keys } from "../../agent/registry/keys.js";
import type { UpdateStatus } from "../../agent/update/records.js";
import type { Definition } from "../../image/pipeline/definition.js";
import { buildVariant, ensureImage, REPO, readManifest, variantDirs } from "../../scripts/lib/image-build.js";
import { makeRelease } from "../../scripts/lib/release.js";
import { slotFirmware } from "../harness/boot-loader.js";
import { ChannelServer } from "../harness/channel-server.js";
import { Cluster, type Machine } from "../harness/index.js";
import { EtcdView } from "./support.js";

const KEY = join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pem");

/** "0.1.0" → "0.1.1": versions above the main build's, whatever it is. */
export function bump(version: string, by: number): string {
  const [major, minor, patch] = version.split(".").map(Number) as [number, number, number];
  return `${major}.${minor}.${patch + by}`;
}

/** A change under update/, as etcd ordered it. */
export interface Change {
  revision: number;
  /** When the watch delivered it (ms since the epoch): for figures, never for ordering. */
  at: number;
  key: string;
  /** Absent for a delete (a release, or a lease that expired). */
  value?: string;
}

/** From a machine's first draining for a version (units leave before the reboot) to its blessing. */
export interface DownSpan {
  from: Change;
  to?: Change;
}

export interface UpdateClusterOptions {
  machines: number;
  /** Built as test releases (image variants) before the cluster starts. */
  versions: string[];
  /** reboot-lease-seconds: an nspawn reboot takes seconds, so a short lease still outlives it. */
  leaseSeconds: number;
}

/**
 * Its releases are built apart from update-e2e's (same versions): scripts/test runs the two files
 * side by side, and a rebuild rewrites a variant's outputs.
 */
const releaseDirs = (version: string) => variantDirs(`cluster-${version}`);

export class UpdateCluster {
  private constructor(
    readonly cluster: Cluster,
    readonly etcd: EtcdView,
    private readonly server: ChannelServer,
    private readonly work: string,
  ) {}

  static async start(opts: UpdateClusterOptions): Promise<UpdateCluster> {
    ensureImage();
    for (const version of opts.versions) buildVariant({ ...releaseDirs(version), version });
    const work = mkdtempSync(join(tmpdir(), "flotilla-update-cluster-"));
    const server = await ChannelServer.start(join(work, "channels"));
    const def = JSON.parse(readFileSync(join(REPO, "image/definition.json"), "utf8")) as Definition;
    const cluster = await Cluster.start({
      machines: opts.machines,
      firmware: slotFirmware(def, readManifest().verity.rootHash, join(work, "usr")),
    });
    const env = {
      // The channel lives on the host, which machines reach on their bridge.
      FLOTILLA_UPDATE_CHANNEL_URL: `http://${cluster.bridge.ip}:${server.port}/stable/`,
      FLOTILLA_UPDATE_DISK: "/var/lib/flotilla-slots/disk.raw",
      FLOTILLA_UPDATE_INTERVAL_SECONDS: "5",
      FLOTILLA_REBOOT_LEASE_SECONDS: String(opts.leaseSeconds),
      FLOTILLA_HEALTH_SOAK_SECONDS: "3",
      FLOTILLA_HEALTH_SETTLE_SECONDS: "60",
    };
    const lines = Object.entries(env)
      .map(([k, v]) => `${k}="${v}"\n`)
      .join("");
    for (const m of cluster.machines)
      await m.exec([
        "sh",
        "-c",
        `printf '%s' '${lines}' >> /etc/flotilla/agent.env && systemctl restart flotilla-agent`,
      ]);
    return new UpdateCluster(cluster, new EtcdView(cluster.endpoint), server, work);
  }

  get machines(): readonly Machine[] {
    return this.cluster.machines;
  }

  /** Publishes a built test release on the stable channel. */
  async release(version: string): Promise<void> {
    await makeRelease({
      payload: join(releaseDirs(version).out, "payload"),
      key: KEY,
      channel: "stable",
      out: join(this.work, "channels"),
      version,
      log: () => {},
    });
  }

  async status(m: Machine): Promise<UpdateStatus | undefined> {
    const raw = await this.etcd.client.get(this.etcd.keys.updateStatus(m.id)).string();
    return raw === null ? undefined : (JSON.parse(raw) as UpdateStatus);
  }

  /** Whether every one of `machines` runs `version`, blessed. */
  async allOn(version: string, machines: readonly Machine[] = this.machines): Promise<boolean> {
    for (const m of machines) {
      const s = await this.status(m);
      if (s?.version !== version || s.state !== "blessed") return false;
    }
    return true;
  }

  /** Records every change under update/ from now until stopped. */
  recordChanges(): Promise<{ stop(): Promise<Change[]> }> {
    return recordChanges(this.etcd);
  }

  downSpans(changes: readonly Change[], version: string): Map<string, DownSpan> {
    return downSpans(this.etcd.keys, changes, version);
  }

  maxHolders(changes: readonly Change[], group: string): number {
    return maxHolders(this.etcd.keys, changes, group);
  }

  async close(): Promise<void> {
    this.etcd.close();
    await this.cluster.teardown();
    await this.server.close();
    rmSync(this.work, { recursive: true, force: true });
  }
}

/** Whether any two spans overlap, by revision (etcd's order). */
export function overlapping(spans: readonly DownSpan[]): boolean {
  const sorted = [...spans].sort((a, b) => a.from.revision - b.from.revision);
  return sorted.some((s, i) => {
    const previous = sorted[i - 1];
    return previous !== undefined && s.from.revision < (previous.to?.revision ?? Infinity);
  });
}

/** Records every change under update/ from now until stopped (`fromRevision`: replayed from there). */
export async function recordChanges(
  etcd: EtcdView,
  fromRevision?: number,
): Promise<{ stop(): Promise<Change[]> }> {
  const changes: Change[] = [];
  const builder = etcd.client.watch().prefix(etcd.keys.updates());
  const watcher = await (fromRevision === undefined
    ? builder
    : builder.startRevision(String(fromRevision))
  ).create();
  const on = (deleted: boolean) => (kv: { key: Buffer; value: Buffer; mod_revision: string }) =>
    changes.push({
      revision: Number(kv.mod_revision),
      at: Date.now(),
      key: kv.key.toString(),
      ...(deleted ? {} : { value: kv.value.toString() }),
    });
  watcher.on("put", on(false));
  watcher.on("delete", on(true));
  return {
    async stop() {
      await watcher.cancel();
      return changes.sort((a, b) => a.revision - b.revision);
    },
  };
}

/** Each machine's time out of service for `version`, by machine ID. */
export function downSpans(keys: Keys, changes: readonly Change[], version: string): Map<string, DownSpan> {
  const spans = new Map<string, DownSpan>();
  for (const c of changes) {
    if (!c.key.startsWith(keys.updateStatuses()) || c.value === undefined) continue;
    const s = JSON.parse(c.value) as UpdateStatus;
    const span = spans.get(s.machineId);
    if (s.state === "draining" && s.detail?.startsWith(version) && !span) spans.set(s.machineId, { from: c });
    if (s.state === "blessed" && s.version === version && span && !span.to) span.to = c;
  }
  return spans;
}

/** The most holders the reboot group ever had at once, replaying its holder keys. */
export function maxHolders(keys: Keys, changes: readonly Change[], group: string): number {
  const holders = new Set<string>();
  let most = 0;
  for (const c of changes) {
    if (!c.key.startsWith(keys.updateHolders(group))) continue;
    if (c.value === undefined) holders.delete(c.key);
    else holders.add(c.key);
    most = Math.max(most, holders.size);
  }
  return most;
}
