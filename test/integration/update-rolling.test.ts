// Rolling OS updates of a 3-machine cluster under etcd-lock with one reboot slot, on nspawn
// machines that have A/B slots. The firmware and systemd-boot cannot run in a container, so
// test/harness/boot-loader.ts plays them (loader entry choice, boot counting, the slot's /usr, the
// blessing's rename); everything else is real: the agents, etcd, the semaphore, downloads from a
// channel, slot writes on each machine's own disk file, drains, reboots and health gates. The
// order of events is asserted from etcd's own history (revisions), not from wall clocks.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readManifest } from "../../scripts/lib/image-build.js";
import type { Machine } from "../harness/index.js";
import { waitFor } from "./support.js";
import { bump, type DownSpan, overlapping, UpdateCluster } from "./update-cluster.js";

const LEASE_S = 20;
const ROLLOUT_MS = 8 * 60_000;

let uc: UpdateCluster;
let v2: string;
let v3: string;

/** What the machine itself runs: its /usr's version and the slot systemd was booted with. */
async function runs(m: Machine): Promise<{ version: string; slot: string }> {
  const version = (await m.exec(["sh", "-c", ". /usr/lib/os-release; echo $IMAGE_VERSION"])).stdout.trim();
  const cmdline = (await m.exec(["cat", "/proc/1/cmdline"])).stdout;
  return { version, slot: /PARTLABEL=USR-([AB])/.exec(cmdline)?.[1] ?? "?" };
}

beforeAll(async () => {
  const v1 = readManifest().version;
  v2 = bump(v1, 1);
  v3 = bump(v1, 3);
  uc = await UpdateCluster.start({ machines: 3, versions: [v2, v3], leaseSeconds: LEASE_S });
}, 20 * 60_000);

afterAll(async () => {
  await uc?.close();
});

describe("rolling OS updates under etcd-lock, one machine at a time", () => {
  it(
    "takes all three machines from v1 to v2, never two out of service at once",
    async () => {
      const recorder = await uc.recordChanges();
      await uc.release(v2);
      await waitFor("all three blessed on v2", () => uc.allOn(v2), ROLLOUT_MS, 1000);
      for (const m of uc.machines) expect(await runs(m)).toEqual({ version: v2, slot: "B" });

      const changes = await recorder.stop();
      const spans = uc.downSpans(changes, v2);
      expect(spans.size).toBe(3);
      for (const span of spans.values()) expect(span.to).toBeDefined();
      expect(overlapping([...spans.values()])).toBe(false);
      expect(uc.maxHolders(changes, "default")).toBe(1);
    },
    ROLLOUT_MS + 60_000,
  );

  it(
    "a holder powered off in its reboot frees the slot within its lease TTL; it finishes once back",
    async () => {
      const recorder = await uc.recordChanges();
      // Whichever machine reboots first stays off; the others are told so before they can follow.
      for (const m of uc.machines) m.rebootPowersOff = true;
      await uc.release(v3);
      const victim = await waitFor(
        "the first holder to reboot",
        async () => uc.machines.find((m) => !m.running),
        ROLLOUT_MS,
        100,
      );
      const offAt = Date.now();
      for (const m of uc.machines) m.rebootPowersOff = false;
      const others = uc.machines.filter((m) => m !== victim);

      const next = await waitFor(
        "another machine draining for v3",
        async () => {
          for (const m of others) {
            const s = await uc.status(m);
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

      await waitFor("the other two blessed on v3", () => uc.allOn(v3, others), ROLLOUT_MS, 1000);
      await victim.start();
      await waitFor("the powered-off machine blessed on v3", () => uc.allOn(v3, [victim]), ROLLOUT_MS, 1000);
      for (const m of uc.machines) expect(await runs(m)).toEqual({ version: v3, slot: "A" });

      const changes = await recorder.stop();
      // The dark holder's key went away (lease expiry) before anyone else got the slot.
      const holderKey = uc.etcd.keys.updateHolder("default", victim.id);
      const victimGone = changes.find((c) => c.key === holderKey && c.value === undefined)?.revision;
      const firstOther = changes.find(
        (c) =>
          c.key.startsWith(uc.etcd.keys.updateHolders("default")) &&
          c.key !== holderKey &&
          c.value !== undefined,
      )?.revision;
      expect(victimGone).toBeDefined();
      expect(firstOther).toBeGreaterThan(victimGone as number);
      expect(uc.maxHolders(changes, "default")).toBe(1);
      const spans = uc.downSpans(changes, v3);
      expect(overlapping(others.map((m) => spans.get(m.id) as DownSpan))).toBe(false);
    },
    3 * ROLLOUT_MS,
  );
});
