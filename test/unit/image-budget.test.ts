// Size budget (os-updates.md §5): the /usr payload may fill at most half its slot and the ESP must
// hold two kernels + initrds with 50% to spare. Checked on the last build's measured sizes when
// there is one (dist/image/build.json), and reported against Flatcar's limits.

import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { budget, type Definition, type Sizes } from "../../image/pipeline/definition.js";
import { fmtMiB, MiB } from "../../image/pipeline/util.js";

const def = JSON.parse(
  readFileSync(new URL("../../image/definition.json", import.meta.url), "utf8"),
) as Definition;
const BUILD = new URL("../../dist/image/build.json", import.meta.url);
/** Flatcar: a 1 GiB USR partition, kernels under 60 MiB each on a 128 MiB ESP (flatcar/Flatcar#438). */
const FLATCAR = { usrPayloadLimit: 1024 * MiB, kernelLimit: 60 * MiB };

describe("size budget", () => {
  it("fails a payload over half its slot or an ESP without 50% headroom", () => {
    const ok: Sizes = {
      usrImage: 400 * MiB,
      verityTree: 4 * MiB,
      kernel: 10 * MiB,
      initrd: 30 * MiB,
      bootloader: MiB,
    };
    expect(budget(def, ok).every((l) => l.ok)).toBe(true);
    const fat = budget(def, { ...ok, usrImage: def.partitions.usr.sizeMiB * MiB * 0.5 + 1 });
    expect(fat.find((l) => l.what.startsWith("USR"))?.ok).toBe(false);
    const bigKernels = budget(def, { ...ok, kernel: 40 * MiB, initrd: 50 * MiB });
    expect(bigKernels.find((l) => l.what.startsWith("ESP"))?.ok).toBe(false);
  });

  it.skipIf(!existsSync(BUILD))("the last build is within budget (and is reported against Flatcar's)", () => {
    const sizes = (JSON.parse(readFileSync(BUILD, "utf8")) as { sizes: Sizes }).sizes;
    const lines = budget(def, sizes);
    const report = [
      ...lines.map((l) => `${l.ok ? "ok  " : "OVER"} ${l.what}: ${fmtMiB(l.actual)} of ${fmtMiB(l.limit)}`),
      `USR payload ${fmtMiB(sizes.usrImage)} vs Flatcar's 1 GiB USR limit (${((100 * sizes.usrImage) / FLATCAR.usrPayloadLimit).toFixed(0)}%)`,
      `kernel + initrd ${fmtMiB(sizes.kernel + sizes.initrd)} vs Flatcar's < 60 MiB per ESP kernel`,
    ];
    process.stdout.write(`${report.join("\n")}\n`);
    expect(lines.filter((l) => !l.ok)).toEqual([]);
    expect(sizes.usrImage).toBeLessThan(FLATCAR.usrPayloadLimit);
    expect(sizes.kernel + sizes.initrd).toBeLessThan(FLATCAR.kernelLimit);
  });
});
