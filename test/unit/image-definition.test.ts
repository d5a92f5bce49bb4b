import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  checkFits,
  type Definition,
  definitionProblems,
  unknownPackages,
} from "../../image/pipeline/definition.js";
import { layout, TYPE_GUID } from "../../image/pipeline/stages/disk.js";
import { loaderEntry, slotCmdline } from "../../image/pipeline/stages/esp.js";
import { MiB } from "../../image/pipeline/util.js";

const def = JSON.parse(
  readFileSync(new URL("../../image/definition.json", import.meta.url), "utf8"),
) as Definition;
const HASH = "a".repeat(64);

describe("image definition", () => {
  it("the checked-in definition is valid", () => {
    expect(definitionProblems(def)).toEqual([]);
  });

  it("names every structural problem", () => {
    const bad = structuredClone(def) as unknown as Record<string, unknown>;
    bad.version = "1.0";
    bad.packages = ["systemd", "Bad_Name"];
    (bad.partitions as Record<string, unknown>).usr = { labels: ["USR-A"], sizeMiB: 0 };
    expect(definitionProblems(bad)).toEqual([
      '"version" must be MAJOR.MINOR.PATCH, got "1.0"',
      'package name "Bad_Name" is not a valid Debian package name',
      '"partitions.usr.sizeMiB" must be a positive integer',
      '"partitions.usr" needs two labels (A-Z 0-9 -)',
    ]);
  });

  it("reads unknown packages from apt's output", () => {
    const out =
      "Reading package lists...\nE: Unable to locate package podmann\nE: Unable to locate package etcd-sever\n";
    expect(unknownPackages(out)).toEqual(["podmann", "etcd-sever"]);
  });

  it("a partition too small names itself and both sizes", () => {
    expect(() => checkFits("USR-A", 150 * MiB, 64 * MiB)).toThrow(
      "partition USR-A is too small: its content is 150.0 MiB (157286400 bytes) but the partition is 64.0 MiB (67108864 bytes)",
    );
    expect(() => checkFits("USR-A", 64 * MiB, 64 * MiB)).not.toThrow();
  });
});

describe("disk layout and boot entries", () => {
  it("lays out the partitions in order with Discoverable Partitions types, ROOT last", () => {
    const parts = layout(def);
    expect(parts.map((p) => p.label)).toEqual([
      "EFI-SYSTEM",
      "USR-A",
      "USR-B",
      "USR-A-VERITY",
      "USR-B-VERITY",
      "OEM",
      "ROOT",
    ]);
    expect(parts.map((p) => p.type)).toEqual([
      TYPE_GUID.esp,
      TYPE_GUID.usr,
      TYPE_GUID.usr,
      TYPE_GUID.usrVerity,
      TYPE_GUID.usrVerity,
      TYPE_GUID.oem,
      TYPE_GUID.root,
    ]);
    parts.slice(1).forEach((p, i) => {
      const prev = parts[i] as (typeof parts)[number];
      expect(p.startMiB).toBe(prev.startMiB + prev.sizeMiB);
    });
  });

  it("binds each slot's /usr and verity partitions and root hash to its command line", () => {
    expect(slotCmdline(def, 1, HASH)).toContain(
      `systemd.verity_usr_data=PARTLABEL=USR-B systemd.verity_usr_hash=PARTLABEL=USR-B-VERITY usrhash=${HASH}`,
    );
    const entry = loaderEntry(def, 0, HASH);
    expect(entry).toMatch(/^sort-key flotilla$/m);
    expect(entry).toMatch(new RegExp(`^version ${def.version}$`, "m"));
    expect(entry).toMatch(/^linux \/flotilla\/a\/vmlinuz$/m);
    expect(entry).toMatch(/ rd\.emergency=reboot systemd\.crash_reboot=1 panic=5/);
  });
});
