// Boots the built image in QEMU (TCG, OVMF, systemd-boot) with Ignition given through fw_cfg and
// on the OEM partition, and with an invalid config. One image is built (or reused, warm) for all.
// An etcd on the host is reachable from guests at 10.0.2.2 (QEMU user networking).

import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Definition } from "../../image/pipeline/definition.js";
import { loaderEntry } from "../../image/pipeline/stages/esp.js";
import { ensureImage, IMAGE_DIR, REPO, readManifest } from "../../scripts/lib/image-build.js";
import { partitionOffset, type Vm, writeOemIgnition } from "../../scripts/lib/image-vm.js";
import { harnessPki } from "../harness/index.js";
import { fleetctl, waitFor } from "./support.js";
import { BOOT_MS, VM_POLL_MS, VmBed } from "./vm-support.js";

let bed: VmBed;
/** The OEM machine's Ignition adds it to the slot entries; harmless to the kernel. */
const KERNEL_ARG = "flotilla.ignition-test=karg";
/** The fwcfg machine's disk and its root filesystem's size, for the resize test at the end. */
let fwcfgDisk: string;
let rootBytes: number;
/**
 * The single-test VMs start with the first one: TCG keeps one core busy per VM, so on two cores
 * overlapping the boots (and the fallback's device timeout) halves the file's wall time.
 */
let early: { oem: Promise<Vm>; invalid: Promise<Vm>; fallback: Promise<{ vm: Vm; esp: string }> };

beforeAll(async () => {
  ensureImage();
  bed = await VmBed.start("image-boot");
  early = { oem: startOem(), invalid: startInvalid(), fallback: startFallback() };
  // Their tests await them; until then a failed start must not count as unhandled.
  for (const p of Object.values(early)) p.catch(() => {});
}, 40 * 60_000);

afterAll(() => bed?.teardown());

/**
 * Boots with the config on the OEM partition (a unit with a drop-in among it, and a kernel
 * argument, which costs this machine one reboot).
 */
async function startOem(): Promise<Vm> {
  const disk = bed.diskCopy("oem");
  const config = bed.ignition(
    "flotilla-oem",
    {},
    {
      systemd: {
        units: [
          {
            name: "hello.service",
            enabled: true,
            contents:
              "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo hello-$GREETING > /dev/console'\n[Install]\nWantedBy=multi-user.target\n",
            dropins: [{ name: "10-greeting.conf", contents: "[Service]\nEnvironment=GREETING=from-oem\n" }],
          },
        ],
      },
      kernelArguments: { shouldExist: [KERNEL_ARG] },
    },
  );
  writeOemIgnition(disk, config);
  return bed.boot("oem", disk);
}

/** Boots with a config that names three problems. */
async function startInvalid(): Promise<Vm> {
  const bad = join(bed.work, "bad.ign");
  writeFileSync(
    bad,
    JSON.stringify({
      ignition: { version: "3.4.0" },
      storage: { disks: [{ device: "/dev/vdb" }], files: [{ path: "/etc/motd", mode: "0644" }] },
      passwd: { users: [{ name: "core", sshAuthorizedKeys: ["not-a-key"] }] },
    }),
  );
  return bed.boot("invalid", bed.diskCopy("invalid"), bad);
}

/** Boots a disk whose newest entry (slot A) cannot verify its /usr; returns the ESP for a look after. */
async function startFallback(): Promise<{ vm: Vm; esp: string }> {
  // Slot B: a good copy of this build, blessed (no counter). Slot A: a newer entry with one try
  // whose root hash is wrong, so the initrd cannot open /usr, reboots, and A ranks last.
  const disk = bed.diskCopy("fallback");
  const def = JSON.parse(readFileSync(join(REPO, "image/definition.json"), "utf8")) as Definition;
  const payload = join(IMAGE_DIR, "payload");
  const dd = (file: string, label: string) =>
    execFileSync("dd", [
      `if=${file}`,
      `of=${disk}`,
      "bs=1M",
      `seek=${partitionOffset(disk, label) / 2 ** 20}`,
      "conv=notrunc,sparse",
      "status=none",
    ]);
  dd(join(payload, "usr.squashfs"), "USR-B");
  dd(join(payload, "usr.verity"), "USR-B-VERITY");
  const esp = `${disk}@@${partitionOffset(disk, "EFI-SYSTEM")}`;
  const mtools = (args: string[]) =>
    execFileSync(args[0] as string, ["-i", esp, ...args.slice(1)], {
      env: { ...process.env, MTOOLS_SKIP_CHECK: "1" },
    });
  mtools(["mmd", "::/flotilla/b"]);
  mtools(["mcopy", join(payload, "vmlinuz"), "::/flotilla/b/vmlinuz"]);
  mtools(["mcopy", join(payload, "initrd"), "::/flotilla/b/initrd"]);
  const entryB = join(bed.work, "flotilla-b.conf");
  writeFileSync(entryB, loaderEntry(def, 1, readManifest().verity.rootHash));
  mtools(["mcopy", entryB, "::/loader/entries/flotilla-b.conf"]);
  const entryA = join(bed.work, "flotilla-a.conf");
  writeFileSync(entryA, loaderEntry({ ...def, version: "99.0.0" }, 0, "0".repeat(64)));
  mtools(["mdel", `::/loader/entries/flotilla-a+${def.bootTries}.conf`]);
  mtools(["mcopy", entryA, "::/loader/entries/flotilla-a+1.conf"]);

  return { vm: await bed.boot("fallback", disk, bed.ignition("flotilla-fallback")), esp };
}

describe("image booted with Ignition through fw_cfg", () => {
  let vm: Vm;
  const sh = (cmd: string) => vm.ssh(bed.key, "core", cmd).trim();

  beforeAll(
    async () => {
      fwcfgDisk = bed.diskCopy("fwcfg");
      vm = await bed.boot("fwcfg", fwcfgDisk, bed.ignition("flotilla-fwcfg"));
      // Four VMs boot at once on two cores: each takes about twice as long as alone.
      await vm.waitForSsh(bed.key, "core", 2 * BOOT_MS);
    },
    2 * BOOT_MS + 30_000,
  );

  it("boots slot A through systemd-boot, and blesses the boot", async () => {
    expect(sh("cat /proc/cmdline")).toMatch(/systemd\.verity_usr_data=PARTLABEL=USR-A /);
    // LoaderEntrySelected: 4 bytes of attributes, then the entry id in UTF-16LE (with its counter).
    const raw = Buffer.from(
      sh("base64 -w0 /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
      "base64",
    );
    expect(raw.subarray(4).toString("utf16le").replace(/\0+$/, "")).toMatch(
      /^flotilla-a(\+\d+(-\d+)?)?\.conf$/,
    );
    const since = Date.now();
    try {
      await waitFor(
        "systemd-bless-boot",
        async () => sh("systemctl show -P ActiveState systemd-bless-boot.service") === "active",
        60_000,
        VM_POLL_MS,
      );
    } finally {
      // Where the boot's time went, on time or late: when each unit bless-boot waits on (and the
      // agent and sshd, for comparison) started and became active, in seconds since the kernel
      // started. critical-chain would say only once the whole boot has finished.
      const units = [
        "flotilla-ignition.service",
        "flotilla-health.service",
        "flotilla-update-gate.service",
        "boot-complete.target",
        "systemd-bless-boot.service",
        "ssh.service",
        "flotilla-agent.service",
      ];
      const props = sh(
        `systemctl show -p Id,InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic ${units.join(" ")}`,
      );
      const seconds = (us: string | undefined) => (us && us !== "0" ? (Number(us) / 1e6).toFixed(1) : "-");
      const timeline = props.split("\n\n").map((block) => {
        const p = Object.fromEntries(block.split("\n").map((l) => l.split("=", 2) as [string, string]));
        return `  ${p.Id}: started ${seconds(p.InactiveExitTimestampMonotonic)} s, active ${seconds(p.ActiveEnterTimestampMonotonic)} s`;
      });
      const state = sh("systemctl show -P ActiveState systemd-bless-boot.service");
      console.log(
        `systemd-bless-boot ${state} ${Date.now() - since} ms after SSH answered\n${timeline.join("\n")}`,
      );
    }
    expect(sh("systemctl show -P ActiveState flotilla-health.service")).toBe("active");
  });

  it("applies the hostname and the SSH key", () => {
    expect(sh("hostname")).toBe("flotilla-fwcfg");
    expect(sh("cat /etc/hostname")).toBe("flotilla-fwcfg");
    expect(sh("id -un")).toBe("core");
    expect(sh("journalctl -b -u flotilla-ignition --no-pager -o cat")).toMatch(
      /applied the config from QEMU fw_cfg/,
    );
  });

  it("mounts /usr read-only from the dm-verity device", () => {
    expect(sh("findmnt -n -o SOURCE,FSTYPE /usr")).toMatch(/^\/dev\/mapper\/usr\s+squashfs$/);
    expect(sh("findmnt -n -o OPTIONS /usr").split(",")).toContain("ro");
    expect(sh("cat /sys/block/$(basename $(readlink -f /dev/mapper/usr))/dm/uuid")).toMatch(/^CRYPT-VERITY-/);
    expect(sh(`cat /proc/cmdline`)).toContain(`usrhash=${readManifest().verity.rootHash}`);
    expect(sh("touch /usr/x 2>&1 || true")).toMatch(/Read-only file system/);
  });

  it("runs the agent and registers it in the host's etcd", async () => {
    if (readManifest().placeholderAgent)
      throw new Error("the image was built with a placeholder agent (dist/agent.js was missing)");
    const machineId = sh("cat /etc/machine-id");
    await waitFor(
      "the agent's machine record",
      async () => bed.etcdKeys("/flotilla/machines/").some((k) => k.endsWith(machineId)),
      120_000,
      VM_POLL_MS,
    );
    expect(sh("systemctl show -P ActiveState flotilla-agent.service")).toBe("active");
  }, 150_000);

  it("serves the API over mutual TLS with the certificates from Ignition, for fleetctl on the host", async () => {
    expect(sh("stat -c '%a %U' /etc/flotilla/tls/machine-key.pem")).toBe("600 root");
    const endpoint = `https://127.0.0.1:${vm.apiPort}`;
    const machineId = sh("cat /etc/machine-id");
    const listed = await fleetctl(endpoint, ["list-machines", "--no-legend", "--full"]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(machineId);
    const pki = harnessPki();
    const anonymous = await fleetctl(endpoint, ["list-machines"], undefined, [`--ca-file=${pki.ca.cert}`]);
    expect(anonymous.code).not.toBe(0);
    expect(anonymous.stderr).toContain("requires a client certificate");
  }, 60_000);

  // Stopped now rather than at the end, so the single-test VMs and the resized boot below have
  // the cores to themselves.
  afterAll(async () => {
    rootBytes = Number(sh("findmnt -b -n -o SIZE /"));
    const off = await vm.powerOff();
    expect(off.clean).toBe(true);
  }, 120_000);
});

describe("image booted with Ignition on the OEM partition", () => {
  let vm: Vm;
  const sh = (cmd: string) => vm.ssh(bed.key, "core", cmd).trim();

  beforeAll(
    async () => {
      vm = await early.oem;
      // Provisioning reboots once for the kernel argument: two boots.
      await vm.waitForSsh(bed.key, "core", 2 * BOOT_MS);
    },
    2 * BOOT_MS + 30_000,
  );

  afterAll(async () => {
    await vm?.powerOff();
  }, 120_000);

  it("applies the config, including units with drop-ins, and ssh works", async () => {
    expect(sh("hostname")).toBe("flotilla-oem");
    // The provisioning boot was the one before this: its marker names the source.
    expect(sh("cat /var/lib/flotilla/provisioned")).toMatch(/"source":"the OEM partition \(config\.ign\)"/);
    await vm.waitForSerial(/hello-from-oem/, 60_000);
    expect(sh("systemctl is-enabled hello.service")).toBe("enabled");
  }, 120_000);

  it("boots with the config's kernelArguments on /proc/cmdline, after one reboot", () => {
    expect(vm.serial()).toMatch(/rebooting once so the kernel arguments take effect/);
    expect(sh("cat /proc/cmdline").split(/\s+/)).toContain(KERNEL_ARG);
    expect(sh("systemctl show -P ConditionResult flotilla-ignition.service")).toBe("no");
  });
});

describe("image booted with an invalid Ignition config", () => {
  it(
    "stays up, names each problem on the console and does not start the agent",
    async () => {
      const vm = await early.invalid;
      await vm.waitForSerial(/provisioning FAILED: 3 problems/, BOOT_MS);
      await vm.waitForSerial(/login: /, 120_000);
      const serial = vm.serial();
      expect(serial).toContain("storage.disks: is not supported by Flotilla");
      expect(serial).toMatch(/storage\.files\[0\]\.mode: must be an integer permission mode/);
      expect(serial).toMatch(/passwd\.users\[0\]\.sshAuthorizedKeys\[0\]: is not an OpenSSH public key/);
      expect(serial).toMatch(/Dependency failed for .*Flotilla cluster agent/);
      expect(serial).not.toMatch(/Started .*Flotilla cluster agent/);
      await vm.powerOff();
    },
    BOOT_MS + 180_000,
  );
});

describe("boot counting falls back to the other slot", () => {
  it(
    "boots slot B when slot A's /usr does not verify",
    async () => {
      const { vm, esp } = await early.fallback;
      await vm.waitForSerial(/flotilla: boot failed in the initrd/, BOOT_MS);
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      expect(vm.ssh(bed.key, "core", "cat /proc/cmdline")).toContain(
        "systemd.verity_usr_data=PARTLABEL=USR-B ",
      );
      expect(vm.ssh(bed.key, "core", "findmnt -n -o SOURCE /usr").trim()).toBe("/dev/mapper/usr");
      await vm.powerOff();
      // The failed entry is left at zero tries: it stays ranked last until an update rewrites it.
      expect(
        execFileSync("mdir", ["-b", "-i", esp, "::/loader/entries"], {
          encoding: "utf8",
          env: { ...process.env, MTOOLS_SKIP_CHECK: "1" },
        }),
      ).toMatch(/flotilla-a\+0-1\.conf/);
    },
    2 * BOOT_MS + 60_000,
  );
});

describe("ROOT after the disk grows", () => {
  it(
    "grows ROOT and its filesystem to fill the disk after qemu-img resize",
    async () => {
      // The fwcfg machine, powered off cleanly once its tests were done; booted last, alone.
      execFileSync("qemu-img", ["resize", "-f", "raw", fwcfgDisk, "+2G"]);
      const vm = await bed.boot("fwcfg-resized", fwcfgDisk, bed.ignition("flotilla-fwcfg"), 2);
      const sh = (cmd: string) => vm.ssh(bed.key, "core", cmd).trim();
      await vm.waitForSsh(bed.key, "core", BOOT_MS);
      const diskBytes = Number(sh("lsblk -b -d -n -o SIZE /dev/vda"));
      const partBytes = Number(sh("lsblk -b -n -o SIZE /dev/disk/by-partlabel/ROOT"));
      const fsBytes = Number(sh("findmnt -b -n -o SIZE /"));
      // ROOT ends within 2 MiB (alignment and the backup GPT) of the disk's end.
      const rootStart =
        Number(sh("cat /sys/class/block/$(basename $(readlink -f /dev/disk/by-partlabel/ROOT))/start")) * 512;
      expect(diskBytes - rootStart - partBytes).toBeLessThan(2 * 2 ** 20);
      expect(fsBytes).toBeGreaterThan(rootBytes + 1.9 * 2 ** 30);
      // Provisioning ran once: the second boot skipped it.
      expect(sh("systemctl show -P ConditionResult flotilla-ignition.service")).toBe("no");
    },
    BOOT_MS + 60_000,
  );
});
