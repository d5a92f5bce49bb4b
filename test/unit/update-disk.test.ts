import { describe, expect, it } from "vitest";
import { parseSfdiskJson } from "../../agent/update/disk.js";

const table = (sectorsize: number | undefined, label = "gpt") =>
  JSON.stringify({
    partitiontable: {
      label,
      device: "disk.raw",
      unit: "sectors",
      ...(sectorsize ? { sectorsize } : {}),
      partitions: [
        {
          node: "disk.raw1",
          start: 2048,
          size: 16384,
          type: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
          name: "EFI-SYSTEM",
        },
        {
          node: "disk.raw2",
          start: 18432,
          size: 8192,
          type: "8484680C-9521-48C6-9C11-B0720656F69E",
          name: "USR-B",
        },
        { node: "disk.raw3", start: 26624, size: 8192, type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4" },
      ],
    },
  });

describe("parseSfdiskJson", () => {
  it("turns sectors into byte offsets with the reported sector size, keeps labelled partitions", () => {
    expect(parseSfdiskJson(table(512), "disk.raw")).toEqual([
      { label: "EFI-SYSTEM", start: 1048576, size: 8388608, type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" },
      { label: "USR-B", start: 9437184, size: 4194304, type: "8484680C-9521-48C6-9C11-B0720656F69E" },
    ]);
    expect(parseSfdiskJson(table(4096), "/dev/nvme0n1")[1]).toMatchObject({
      start: 18432 * 4096,
      size: 8192 * 4096,
    });
  });

  it("refuses what is not a GPT", () => {
    expect(() => parseSfdiskJson(table(512, "dos"), "/dev/sda")).toThrow(
      "/dev/sda: not a GPT disk (partition table dos)",
    );
    expect(() => parseSfdiskJson("sfdisk: cannot open", "/dev/sda")).toThrow(/printed no JSON/);
  });
});
