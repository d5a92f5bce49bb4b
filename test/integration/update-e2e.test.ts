// The A/B updater end to end in QEMU (TCG): a VM on v1 takes v2 from a channel served by the host,
// writes slot B, reboots into it and blesses it after the health gate; a v3 whose health gate fails
// boots once, falls back to v2 by itself, is reported and marked bad, and is never retried. A second
// VM, killed while it writes slot B, boots its old slot and then finishes the update.
//
// Releases are real image builds: v2 is the image at another version; v3 also carries a health
// check that always fails (a release broken on purpose).

import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BadVersion, UpdateStatus } from "../../agent/update/records.js";
import { buildVariant, ensureImage, REPO, readManifest, variantDirs } from "../../scripts/lib/image-build.js";
import { partitionOffset, type Vm } from "../../scripts/lib/image-vm.js";
import { makeRelease } from "../../scripts/lib/release.js";
import { ChannelServer } from "../harness/channel-server.js";
import { harnessPki } from "../harness/index.js";
import { waitFor } from "./support.js";
import { bump } from "./update-cluster.js";
import { BOOT_MS, VM_POLL_MS, VmBed } from "./vm-support.js";

const KEY = join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pem");
const quiet = () => {};

let bed: VmBed;
let server: ChannelServer;
let v1: string;
let v2: string;
let v3: string;
let v2Payload: string;
let v3Payload: string;
let channels: string;
const stopTraces: (() => void)[] = [];

async function release(channel: string, version: string, payload: string): Promise<void> {
  await makeRelease({ payload, key: KEY, channel, out: channels, version, log: quiet });
}

/**
 * Each VM follows its own channel in its own reboot group: the two share an etcd, and in one group
 * the second to reboot would wait for the first's new boot to be blessed.
 */
function agentConfig(channel: string): Record<string, unknown> {
  return {
    "update-channel-url": `http://10.0.2.2:${server.port}/${channel}`,
    "update-group": channel,
    "update-interval-seconds": 10,
    "health-soak-seconds": 10,
    "health-settle-seconds": 30,
  };
}

function status(machineId: string): UpdateStatus | undefined {
  const v = bed.etcdGet(`/flotilla/update/status/${machineId}`);
  return v === undefined ? undefined : (JSON.parse(v) as UpdateStatus);
}

/**
 * Prints each change of the machine's update state with the seconds since the test began, so a
 * CI log shows where the time goes (boots, downloads, gates). Returns the stopper.
 */
function traceStatus(label: string, machineId: string): () => void {
  const t0 = Date.now();
  let last = "";
  const timer = setInterval(() => {
    const s = status(machineId);
    const now = s ? `${s.version} on ${s.slot}: ${s.state}${s.detail ? ` (${s.detail})` : ""}` : "no record";
    if (now === last) return;
    last = now;
    console.log(`[update-e2e] ${label} +${Math.round((Date.now() - t0) / 1000)} s ${now}`);
  }, VM_POLL_MS);
  return () => clearInterval(timer);
}

/** The machine's own view, over SSH: the booted slot and the running version. */
function booted(vm: Vm): { slot: string; version: string } {
  const sh = (cmd: string) => vm.ssh(bed.key, "core", cmd).trim();
  return {
    slot: /PARTLABEL=USR-([AB]) /.exec(sh("cat /proc/cmdline"))?.[1] ?? "?",
    version: sh(". /usr/lib/os-release; echo $IMAGE_VERSION"),
  };
}

/** The loader entry systemd-boot started, counter included (an EFI variable anyone may read). */
function selectedEntry(vm: Vm): string {
  const raw = Buffer.from(
    vm.ssh(
      bed.key,
      "core",
      "base64 -w0 /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
    ),
    "base64",
  );
  // 4 bytes of attributes, then the entry id in UTF-16LE.
  return raw.subarray(4).toString("utf16le").replace(/\0+$/, "");
}

/** The ESP's loader entries, read from the (powered-off or killed) VM's disk file. */
function espEntries(disk: string): string {
  return execFileSync(
    "mdir",
    ["-b", "-i", `${disk}@@${partitionOffset(disk, "EFI-SYSTEM")}`, "::/loader/entries"],
    {
      encoding: "utf8",
      env: { ...process.env, MTOOLS_SKIP_CHECK: "1" },
    },
  );
}

beforeAll(async () => {
  ensureImage();
  v1 = readManifest().version;
  v2 = bump(v1, 1);
  v3 = bump(v1, 2);
  bed = await VmBed.start("update-e2e");
  channels = join(bed.work, "channels");
  v2Payload = join(variantDirs(v2).out, "payload");
  v3Payload = join(variantDirs(`${v3}-broken`).out, "payload");
  buildVariant({ ...variantDirs(v2), version: v2 });
  const broken = join(bed.work, "broken-files");
  mkdirSync(join(broken, "usr/lib/flotilla/health.d"), { recursive: true });
  const check = join(broken, "usr/lib/flotilla/health.d/50-broken-release");
  writeFileSync(check, "#!/bin/sh\necho 'this release is broken on purpose (update-e2e test)'\nexit 1\n");
  chmodSync(check, 0o755);
  buildVariant({ ...variantDirs(`${v3}-broken`), version: v3, extraFiles: broken });
  server = await ChannelServer.start(channels);
  await release("stable", v2, v2Payload);
  await release("resume", v2, v2Payload);
}, 40 * 60_000);

afterAll(async () => {
  for (const stop of stopTraces) stop();
  await server?.close();
  await bed?.teardown();
});

describe.concurrent("A/B updates in QEMU", () => {
  it(
    "v1 on slot A takes v2, boots it from slot B and blesses it; a v3 that fails its health gate rolls back and is never retried",
    async () => {
      const disk = bed.diskCopy("update");
      // Two vCPUs: this chain of boots outlasts the other test and runs alone at the end.
      const vm = await bed.boot("update", disk, bed.ignition("flotilla-update", agentConfig("stable")), 2);
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      const machineId = vm.ssh(bed.key, "core", "cat /etc/machine-id").trim();
      stopTraces.push(traceStatus("update", machineId));
      expect(booted(vm)).toEqual({ slot: "A", version: v1 });

      // The agent reboots the VM itself: wait for v2's blessed record, then look from inside.
      const blessed = await waitFor(
        "v2 blessed on slot B",
        async () => {
          const s = status(machineId);
          return s?.version === v2 && s.state === "blessed" ? s : undefined;
        },
        3 * BOOT_MS,
        VM_POLL_MS,
      );
      expect(blessed.slot).toBe("B");
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      expect(booted(vm)).toEqual({ slot: "B", version: v2 });
      expect(selectedEntry(vm)).toMatch(/^flotilla-b(\+\d+(-\d+)?)?\.conf$/);
      expect(vm.ssh(bed.key, "core", "systemctl is-active systemd-bless-boot").trim()).toBe("active");
      const table = execFileSync(
        join(REPO, "scripts/fleetctl"),
        ["--endpoint", `https://127.0.0.1:${vm.apiPort}`, ...harnessPki().fleetctlFlags(), "update-status"],
        { encoding: "utf8" },
      );
      expect(table).toMatch(new RegExp(`${machineId.slice(0, 8)}.*\\s${v2.replaceAll(".", "\\.")}\\s+B\\s`));

      // v3: written to slot A with one try, boots once, its gate fails, slot B (v2) comes back.
      await release("stable", v3, v3Payload);
      const rolledBack = await waitFor(
        "v3 rolled back",
        async () => {
          const s = status(machineId);
          return s?.lastRollback?.version === v3 && s.version === v2 ? s : undefined;
        },
        4 * BOOT_MS,
        VM_POLL_MS,
      );
      expect(rolledBack.lastRollback?.reason).toMatch(/broken on purpose/);
      const bad = JSON.parse(bed.etcdGet(`/flotilla/update/bad/${v3}`) ?? "{}") as BadVersion;
      expect(bad).toMatchObject({ version: v3, machineId });
      expect(bad.reason).toMatch(/broken on purpose/);
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      expect(booted(vm)).toEqual({ slot: "B", version: v2 });

      // Never retried: three completed checks later nothing was downloaded again and slot A's
      // entry is spent.
      const v3Fetches = () => server.requests.filter((r) => r.path.startsWith(`/stable/${v3}/usr`)).length;
      const fetched = v3Fetches();
      const checks = new Set<string>();
      await waitFor(
        "three more channel checks",
        async () => {
          const at = status(machineId)?.lastCheck;
          if (at !== undefined && at > rolledBack.updatedAt) checks.add(at);
          return checks.size >= 3;
        },
        BOOT_MS,
        VM_POLL_MS,
      );
      expect(status(machineId)?.version).toBe(v2);
      expect(v3Fetches()).toBe(fetched);
      await vm.powerOff();
      expect(espEntries(disk)).toMatch(/flotilla-a\+0-1\.conf/);
    },
    10 * BOOT_MS,
  );

  it(
    "a VM killed while writing slot B boots its old slot, then finishes the update",
    async () => {
      const disk = bed.diskCopy("resume");
      const config = bed.ignition("flotilla-resume", agentConfig("resume"));
      let vm = await bed.boot("resume", disk, config);
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      const machineId = vm.ssh(bed.key, "core", "cat /etc/machine-id").trim();
      stopTraces.push(traceStatus("resume", machineId));
      await waitFor(
        "slot B being written",
        async () => status(machineId)?.state === "writing",
        BOOT_MS,
        VM_POLL_MS,
      );
      await vm.kill();
      // The loader entry is written last, so nothing points at the half-written slot.
      expect(espEntries(disk)).not.toMatch(/flotilla-b/);

      vm = await bed.boot("resume-2", disk, config);
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      expect(booted(vm)).toEqual({ slot: "A", version: v1 });
      await waitFor(
        "v2 blessed on slot B",
        async () => {
          const s = status(machineId);
          return s?.version === v2 && s.state === "blessed" ? s : undefined;
        },
        3 * BOOT_MS,
        VM_POLL_MS,
      );
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      expect(booted(vm)).toEqual({ slot: "B", version: v2 });
    },
    8 * BOOT_MS,
  );
});
