// Size budget (docs/image.md): the /usr payload may fill at most half its slot and the ESP must
// hold two kernels + initrds with 50% to spare. The real build's sizes are checked against it in
// test/integration/image-build.test.ts.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { budget, type Definition, type Sizes } from "../../image/pipeline/definition.js";
import { MiB } from "../../image/pipeline/util.js";

const def = JSON.parse(
  readFileSync(new URL("../../image/definition.json", import.meta.url), "utf8"),
) as Definition;

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
});
