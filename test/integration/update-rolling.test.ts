// Rolling OS updates of a 3-machine cluster under etcd-lock with one reboot slot, on nspawn
// machines that have A/B slots. The firmware and systemd-boot cannot run in a container, so
// test/harness/boot-loader.ts plays them (loader entry choice, boot counting, the slot's /usr, the
// blessing's rename); everything else is real: the agents, etcd, the semaphore, downloads from a
// channel, slot writes on each machine's own disk file, drains, reboots and health gates. The
// order of events is asserted from etcd's own history (revisions), not from wall clocks.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UpdateStatus } from "../../agent/update/records.js";
import type { Definition } from "../../image/pipeline/definition.js";
import { buildVariant, ensureImage, REPO, readManifest, variantDirs } from "../../scripts/lib/image-build.js";
import { makeRelease } from "../../scripts/lib/release.js";
import { slotFirmware } from "../harness/boot-loader.js";
import { ChannelServer } from "../harness/channel-server.js";
import { Cluster, type Machine } from "../harness/index.js";
import { EtcdView, waitFor } from "./support.js";

const KEY = join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pem");
/** reboot-lease-seconds: an nspawn reboot takes seconds, so a short lease still outlives it. */
const LEASE_S = 20;
const ROLLOUT_MS = 8 * 60_000;

let cluster: Cluster;
let etcd: EtcdView;
let server: ChannelServer;
let work: string;
let v2: string;
let v3: string;

/** "0.1.0" → "0.1.1": versions above the main build's. */
function bump(version: string, by: number): string {
  const [major, minor, patch] = version.split(".").map(Number) as [number, number, number];
  return `${major}.${minor}.${patch + by}`;
}

async function release(version: string): Promise<void> {
  const payload = join(variantDirs(version).out, "payload");
  await makeRelease({
    payload,
    key: KEY,
    channel: "stable",
    out: join(work, "channels"),
    version,
    log: () => {},
  });
}

async function status(m: Machine): Promise<UpdateStatus | undefined> {
  const raw = await etcd.client.get(etcd.keys.updateStatus(m.id)).string();
  return raw === null ? undefined : (JSON.parse(raw) as UpdateStatus);
}

/** A change under update/, in etcd's order (its revision). */
interface Change {
  revision: number;
  key: string;
  /** Absent for a delete (a release, or a lease that expired). */
  value?: string;
}

/** Records every change under update/ from now until stopped, as etcd orders them. */
async function recordChanges(): Promise<{ stop(): Promise<Change[]> }> {
  const changes: Change[] = [];
  const watcher = await etcd.client.watch().prefix(etcd.keys.updates()).create();
  const on = (deleted: boolean) => (kv: { key: Buffer; value: Buffer; mod_revision: string }) =>
    changes.push({
      revision: Number(kv.mod_revision),
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

/**
 * When each machine was out of service for `version`: from its first draining (units leaving
 * before the reboot) to its blessing of that version, as etcd revisions.
 */
function downSpans(changes: Change[], version: string): Map<string, [number, number]> {
  const spans = new Map<string, [number, number]>();
  for (const c of changes) {
    if (!c.key.startsWith(etcd.keys.updateStatuses()) || c.value === undefined) continue;
    const s = JSON.parse(c.value) as UpdateStatus;
    const span = spans.get(s.machineId);
    if (s.state === "draining" && s.detail?.startsWith(version) && !span)
      spans.set(s.machineId, [c.revision, Infinity]);
    if (s.state === "blessed" && s.version === version && span && span[1] === Infinity) span[1] = c.revision;
  }
  return spans;
}

/** The most holders the group ever had at once, replaying its holder keys. */
function maxHolders(changes: Change[], group: string): number {
  const holders = new Set<string>();
  let most = 0;
  for (const c of changes) {
    if (!c.key.startsWith(etcd.keys.updateHolders(group))) continue;
    if (c.value === undefined) holders.delete(c.key);
    else holders.add(c.key);
    most = Math.max(most, holders.size);
  }
  return most;
}

function overlapping(spans: [number, number][]): boolean {
  const sorted = [...spans].sort((a, b) => a[0] - b[0]);
  return sorted.some((s, i) => i > 0 && s[0] < (sorted[i - 1] as [number, number])[1]);
}

async function allOn(version: string, machines: readonly Machine[]): Promise<boolean> {
  for (const m of machines) {
    const s = await status(m);
    if (s?.version !== version || s.state !== "blessed") return false;
  }
  return true;
}

/** What the machine itself runs: its /usr's version and the slot systemd was booted with. */
async function runs(m: Machine): Promise<{ version: string; slot: string }> {
  const version = (await m.exec(["sh", "-c", ". /usr/lib/os-release; echo $IMAGE_VERSION"])).stdout.trim();
  const cmdline = (await m.exec(["cat", "/proc/1/cmdline"])).stdout;
  return { version, slot: /PARTLABEL=USR-([AB])/.exec(cmdline)?.[1] ?? "?" };
}

beforeAll(async () => {
  ensureImage();
  const v1 = readManifest().version;
  v2 = bump(v1, 1);
  v3 = bump(v1, 3);
  buildVariant({ ...variantDirs(v2), version: v2 });
  buildVariant({ ...variantDirs(v3), version: v3 });
  work = mkdtempSync(join(tmpdir(), "flotilla-update-rolling-"));
  server = await ChannelServer.start(join(work, "channels"));
  const def = JSON.parse(readFileSync(join(REPO, "image/definition.json"), "utf8")) as Definition;
  cluster = await Cluster.start({
    machines: 3,
    firmware: slotFirmware(def, readManifest().verity.rootHash, join(work, "usr")),
  });
  etcd = new EtcdView(cluster.endpoint);
  // The channel lives on the host, which machines reach on their bridge.
  const env = {
    FLOTILLA_UPDATE_CHANNEL_URL: `http://${cluster.bridge.ip}:${server.port}/stable/`,
    FLOTILLA_UPDATE_DISK: "/var/lib/flotilla-slots/disk.raw",
    FLOTILLA_UPDATE_INTERVAL_SECONDS: "5",
    FLOTILLA_REBOOT_LEASE_SECONDS: String(LEASE_S),
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
}, 20 * 60_000);

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
  await server?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("rolling OS updates under etcd-lock, one machine at a time", () => {
  it(
    "takes all three machines from v1 to v2, never two out of service at once",
    async () => {
      const recorder = await recordChanges();
      await release(v2);
      await waitFor("all three blessed on v2", () => allOn(v2, cluster.machines), ROLLOUT_MS, 1000);
      for (const m of cluster.machines) expect(await runs(m)).toEqual({ version: v2, slot: "B" });

      const changes = await recorder.stop();
      const spans = downSpans(changes, v2);
      expect(spans.size).toBe(3);
      for (const span of spans.values()) expect(span[1]).not.toBe(Infinity);
      expect(overlapping([...spans.values()])).toBe(false);
      expect(maxHolders(changes, "default")).toBe(1);
    },
    ROLLOUT_MS + 60_000,
  );

  it(
    "a holder powered off in its reboot frees the slot within its lease TTL; it finishes once back",
    async () => {
      const recorder = await recordChanges();
      // Whichever machine reboots first stays off; the others are told so before they can follow.
      for (const m of cluster.machines) m.rebootPowersOff = true;
      await release(v3);
      const victim = await waitFor(
        "the first holder to reboot",
        async () => cluster.machines.find((m) => !m.running),
        ROLLOUT_MS,
        100,
      );
      const offAt = Date.now();
      for (const m of cluster.machines) m.rebootPowersOff = false;
      const others = cluster.machines.filter((m) => m !== victim);

      const next = await waitFor(
        "another machine draining for v3",
        async () => {
          for (const m of others) {
            const s = await status(m);
            if (s?.state === "draining" || s?.state === "rebooting") return m;
          }
          return undefined;
        },
        (LEASE_S + 30) * 1000,
        200,
      );
      const waited = Date.now() - offAt;
      console.log(
        `the slot moved on ${(waited / 1000).toFixed(1)} s after its holder went dark (lease ${LEASE_S} s)`,
      );
      expect(waited).toBeLessThan((LEASE_S + 15) * 1000);
      expect(next).not.toBe(victim);

      await waitFor("the other two blessed on v3", () => allOn(v3, others), ROLLOUT_MS, 1000);
      await victim.start();
      await waitFor("the powered-off machine blessed on v3", () => allOn(v3, [victim]), ROLLOUT_MS, 1000);
      for (const m of cluster.machines) expect(await runs(m)).toEqual({ version: v3, slot: "A" });

      const changes = await recorder.stop();
      // The dark holder's key went away (lease expiry) before anyone else got the slot.
      const holderKey = etcd.keys.updateHolder("default", victim.id);
      const victimGone = changes.find((c) => c.key === holderKey && c.value === undefined)?.revision;
      const firstOther = changes.find(
        (c) =>
          c.key.startsWith(etcd.keys.updateHolders("default")) &&
          c.key !== holderKey &&
          c.value !== undefined,
      )?.revision;
      expect(victimGone).toBeDefined();
      expect(firstOther).toBeGreaterThan(victimGone as number);
      expect(maxHolders(changes, "default")).toBe(1);
      const spans = downSpans(changes, v3);
      expect(overlapping(others.map((m) => spans.get(m.id) as [number, number]))).toBe(false);
    },
    3 * ROLLOUT_MS,
  );
});
