import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  bootedSlot,
  detectRollback,
  entryName,
  kernelCommandLine,
  newEntry,
  type PendingUpdate,
  parseEntryName,
  passiveWritable,
  slotStatus,
} from "../../agent/update/slots.js";
import type { Definition } from "../../image/pipeline/definition.js";
import { loaderEntry } from "../../image/pipeline/stages/esp.js";

const cmdline = (slot: "A" | "B") =>
  `root=PARTLABEL=ROOT rw mount.usr=/dev/mapper/usr mount.usrfstype=squashfs mount.usrflags=ro systemd.verity_usr_data=PARTLABEL=USR-${slot} systemd.verity_usr_hash=PARTLABEL=USR-${slot}-VERITY usrhash=${"9".repeat(64)} console=ttyS0,115200`;

describe("loader entry names", () => {
  it("formats and parses blessed, fresh and counting entries", () => {
    expect(entryName("A")).toBe("flotilla-a.conf");
    expect(entryName("B", 1)).toBe("flotilla-b+1.conf");
    expect(entryName("A", 2, 1)).toBe("flotilla-a+2-1.conf");
    expect(parseEntryName("flotilla-a.conf")).toEqual({ slot: "A" });
    expect(parseEntryName("flotilla-b+3.conf")).toEqual({ slot: "B", triesLeft: 3, triesDone: 0 });
    expect(parseEntryName("flotilla-b+0-3.conf")).toEqual({ slot: "B", triesLeft: 0, triesDone: 3 });
    for (const other of [
      "flotilla-c.conf",
      "flotilla-a+x.conf",
      "other.conf",
      "flotilla-a.conf~",
      "loader.conf",
    ])
      expect(parseEntryName(other)).toBeUndefined();
  });

  it("round-trips every counter state", () => {
    for (const slot of ["A", "B"] as const)
      for (const [t, d] of [
        [3, 0],
        [2, 1],
        [0, 3],
      ] as const)
        expect(parseEntryName(entryName(slot, t, d))).toEqual({ slot, triesLeft: t, triesDone: d });
  });
});

describe("kernel command line", () => {
  const fakeRoot = (container: boolean) => {
    const root = mkdtempSync(join(tmpdir(), "flotilla-cmdline-"));
    mkdirSync(join(root, "proc/1"), { recursive: true });
    writeFileSync(join(root, "proc/cmdline"), "host kernel line\n");
    writeFileSync(
      join(root, "proc/1/cmdline"),
      "/sbin/init\0systemd.verity_usr_data=PARTLABEL=USR-B\0quiet\0",
    );
    if (container) {
      mkdirSync(join(root, "run/systemd"), { recursive: true });
      writeFileSync(join(root, "run/systemd/container"), "systemd-nspawn\n");
    }
    return root;
  };

  it("is /proc/cmdline on a machine", async () => {
    expect(await kernelCommandLine(fakeRoot(false))).toBe("host kernel line\n");
  });

  it("is PID 1's arguments in a container, as systemd reads it there", async () => {
    const line = await kernelCommandLine(fakeRoot(true));
    expect(line).toBe("systemd.verity_usr_data=PARTLABEL=USR-B quiet");
    expect(bootedSlot(line)).toBe("B");
  });
});

describe("booted slot", () => {
  it("comes from the verity data partition on the command line", () => {
    expect(bootedSlot(`BOOT_IMAGE=/x ${cmdline("A")}\n`)).toBe("A");
    expect(bootedSlot(cmdline("B"))).toBe("B");
  });

  it("fails naming the command line when not booted from a slot", () => {
    expect(() => bootedSlot("root=/dev/sda1 ro quiet\n")).toThrow(
      /no systemd\.verity_usr_data=PARTLABEL=USR-A\|B .*root=\/dev\/sda1 ro quiet$/,
    );
    expect(() => bootedSlot("systemd.verity_usr_data=PARTLABEL=USR-AB")).toThrow(
      /not booted from a Flotilla slot/,
    );
  });
});

describe("slot status", () => {
  it("a fresh image: A counting, not blessed, B absent; the passive slot is not writable", () => {
    const s = slotStatus(["flotilla-a+2-1.conf"], "A");
    expect(s.bootBlessed).toBe(false);
    expect(s.slots.A).toEqual({
      present: true,
      blessed: false,
      bad: false,
      triesLeft: 2,
      triesDone: 1,
      name: "flotilla-a+2-1.conf",
    });
    expect(s.slots.B).toEqual({ present: false, blessed: false, bad: false });
    expect(passiveWritable(s)).toBe(false);
  });

  it("a blessed boot may write the passive slot", () => {
    const s = slotStatus(["flotilla-a.conf", "README"], "A");
    expect(s.bootBlessed).toBe(true);
    expect(passiveWritable(s)).toBe(true);
  });

  it("after an update: booted B still counting keeps A (the fallback) read-only until blessed", () => {
    const before = slotStatus(["flotilla-a.conf", "flotilla-b+0-1.conf"], "B");
    expect(before.bootBlessed).toBe(false);
    expect(passiveWritable(before)).toBe(false);
    const after = slotStatus(["flotilla-a.conf", "flotilla-b.conf"], "B");
    expect(after.bootBlessed).toBe(true);
    expect(passiveWritable(after)).toBe(true);
  });

  it("a booted slot without an entry is not blessed", () => {
    expect(slotStatus(["flotilla-b.conf"], "A").bootBlessed).toBe(false);
  });

  it("marks a slot with no tries left as bad, and prefers the blessed entry if a crash left two", () => {
    const s = slotStatus(["flotilla-b+0-1.conf", "flotilla-a+1.conf", "flotilla-a.conf"], "A");
    expect(s.slots.B.bad).toBe(true);
    expect(s.slots.A).toMatchObject({ blessed: true, bad: false, name: "flotilla-a.conf" });
  });
});

describe("rollback detection", () => {
  const pending: PendingUpdate = {
    version: "0.2.0",
    slot: "B",
    group: "default",
    installedAt: "2025-01-01T00:00:00Z",
  };

  it("the new slot spent its try and we run the old one: a rollback from that version", () => {
    const s = slotStatus(["flotilla-a.conf", "flotilla-b+0-1.conf"], "A");
    expect(detectRollback(pending, s)).toEqual({ version: "0.2.0", slot: "B" });
  });

  it("not before the reboot (the entry still has its try), nor once on the new slot, nor without a pending install", () => {
    expect(
      detectRollback(pending, slotStatus(["flotilla-a.conf", "flotilla-b+1.conf"], "A")),
    ).toBeUndefined();
    expect(
      detectRollback(pending, slotStatus(["flotilla-a.conf", "flotilla-b+0-1.conf"], "B")),
    ).toBeUndefined();
    expect(detectRollback(pending, slotStatus(["flotilla-a.conf"], "A"))).toBeUndefined();
    expect(
      detectRollback(undefined, slotStatus(["flotilla-a.conf", "flotilla-b+0-1.conf"], "A")),
    ).toBeUndefined();
  });
});

describe("new loader entry", () => {
  const manifest = { version: "0.2.0", cmdline: { A: cmdline("A"), B: cmdline("B") } };

  it("points at the slot's kernel, initrd and command line, with boot-counting tries in its name", () => {
    const { name, text } = newEntry("B", manifest, 1);
    expect(name).toBe("flotilla-b+1.conf");
    expect(text).toBe(
      [
        "title flotilla 0.2.0 (slot B)",
        "version 0.2.0",
        "sort-key flotilla",
        "linux /flotilla/b/vmlinuz",
        "initrd /flotilla/b/initrd",
        `options ${cmdline("B")}`,
        "",
      ].join("\n"),
    );
  });

  it("is byte for byte what the image build wrote to its ESP (flotilla-a+3.conf of a real build)", () => {
    const def = JSON.parse(
      readFileSync(new URL("../../image/definition.json", import.meta.url), "utf8"),
    ) as Definition;
    const hash = "9ec492722c19ab5c5e959d2ef4702985c56a696f7e987032b1cc484f83eb5006";
    // Read back with `mtype ::/loader/entries/flotilla-a+3.conf` from the ESP of a 0.1.0 build.
    const built = `title flotilla 0.1.0 (slot A)
version 0.1.0
sort-key flotilla
linux /flotilla/a/vmlinuz
initrd /flotilla/a/initrd
options root=PARTLABEL=ROOT rw mount.usr=/dev/mapper/usr mount.usrfstype=squashfs mount.usrflags=ro systemd.verity_usr_data=PARTLABEL=USR-A systemd.verity_usr_hash=PARTLABEL=USR-A-VERITY usrhash=${hash} console=ttyS0,115200 rd.emergency=reboot systemd.crash_reboot=1 panic=5 systemd.default_device_timeout_sec=45
`;
    const kernelCmdline =
      "console=ttyS0,115200 rd.emergency=reboot systemd.crash_reboot=1 panic=5 systemd.default_device_timeout_sec=45";
    const d = { ...def, version: "0.1.0", bootTries: 3, kernelCmdline };
    expect(loaderEntry(d, 0, hash)).toBe(built);
    const payloadCmdline = built.split("\n")[5]?.slice("options ".length) as string;
    expect(newEntry("A", { version: "0.1.0", cmdline: { A: payloadCmdline, B: "" } }, 3)).toEqual({
      name: "flotilla-a+3.conf",
      text: built,
    });
  });
});
