// The image build's bad-input paths: a misspelled package fails before any long stage, naming it;
// a partition too small for its content fails naming the partition and both sizes; without
// --test-keys the committed test key is refused, and so is an image without keys. And a build
// with nothing changed reuses every stage and leaves its outputs alone.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { budget, type Definition, type Sizes } from "../../image/pipeline/definition.js";
import { fmtMiB, MiB } from "../../image/pipeline/util.js";
import { buildImage, ensureImage, IMAGE_DIR, REPO } from "../../scripts/lib/image-build.js";

const work = mkdtempSync(join(tmpdir(), "flotilla-image-build-"));
const definition = JSON.parse(readFileSync(join(REPO, "image/definition.json"), "utf8"));
/** Flatcar: a 1 GiB USR partition, kernels under 60 MiB each on a 128 MiB ESP (flatcar/Flatcar#438). */
const FLATCAR = { usrPayloadLimit: 1024 * MiB, kernelLimit: 60 * MiB };

function variant(name: string, change: (d: typeof definition) => void): string {
  const d = structuredClone(definition);
  change(d);
  const file = join(work, `${name}.json`);
  writeFileSync(file, JSON.stringify(d));
  return file;
}

beforeAll(() => ensureImage(), 40 * 60_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("scripts/build-image", () => {
  it("reuses every stage when nothing changed, in under 60 s, and leaves dist/image as it was", () => {
    const before = statSync(join(IMAGE_DIR, "disk.raw")).mtimeMs;
    const r = buildImage();
    expect(r.status).toBe(0);
    for (const stage of ["rootfs", "customize", "usr", "root", "esp", "disk"])
      expect(r.stderr).toMatch(new RegExp(`${stage}\\s+cached`));
    expect(r.seconds).toBeLessThan(60);
    expect(r.stderr).toMatch(/dist\/image already holds this build, unchanged since: left as is/);
    expect(statSync(join(IMAGE_DIR, "disk.raw")).mtimeMs).toBe(before);
    expect(r.stderr).toMatch(/build-image: warm build \(every stage reused\) took \d+\.\d s/);
    const build = JSON.parse(readFileSync(join(IMAGE_DIR, "build.json"), "utf8"));
    expect(Object.values(build.stages).every((s) => (s as { cached: boolean }).cached)).toBe(true);
  }, 120_000);

  it("fails fast on a misspelled package, naming it", () => {
    const def = variant("typo", (d) => {
      d.packages.push("podmann", "etcd-sever");
    });
    const r = buildImage(["--definition", def, "--out", join(work, "out-typo")]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/unknown packages in the image definition: podmann, etcd-sever/);
    expect(r.stderr).not.toMatch(/rootfs\s+(building|cached)/);
    expect(r.seconds).toBeLessThan(60);
  }, 120_000);

  it("fails when a partition is too small for its content, naming it and both sizes", () => {
    const def = variant("small", (d) => {
      d.partitions.usr.sizeMiB = 64;
    });
    const r = buildImage(["--definition", def, "--out", join(work, "out-small")]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /partition USR-A is too small: its content is \d+\.\d MiB \(\d+ bytes\) but the partition is 64\.0 MiB \(67108864 bytes\)/,
    );
  }, 300_000);

  it("fails on a malformed definition before touching apt", () => {
    const def = variant("shape", (d) => {
      d.version = "one";
      delete d.partitions.oem;
    });
    const r = buildImage(["--definition", def]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/"version" must be MAJOR.MINOR.PATCH/);
    expect(r.stderr).toMatch(/"partitions.oem" is missing/);
  }, 60_000);

  it("without --test-keys: refuses the committed test key, and an image trusting no key, saying what to do", () => {
    const none = buildImage(["--out", join(work, "out-nokeys")], 120_000, { testKeys: false });
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(
      /build-image: error: no update signing keys: the image would trust no release\. Make a key pair with `scripts\/release keygen --out keys\/`.* build with `--update-keys keys\/`.* or build a test image with --test-keys/,
    );
    const testKey = join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pub.pem");
    const given = buildImage(
      ["--update-keys", "test/fixtures/update-keys", "--out", join(work, "out-testkey")],
      120_000,
      { testKeys: false },
    );
    expect(given.status).toBe(1);
    expect(given.stderr).toContain(
      `build-image: error: update key ${testKey} is the committed test key 00dd9a95a776d12b: its private half is in test/fixtures/update-keys/, so anyone could sign releases this image installs.`,
    );
    // Refused before any stage (and before apt): seconds.
    for (const r of [none, given]) {
      expect(r.stderr).not.toMatch(/packages resolve|rootfs\s+(building|cached)/);
      expect(r.seconds).toBeLessThan(60);
    }
  }, 300_000);

  it("a test image records the keys it trusts, in build.json and in the image", () => {
    const build = JSON.parse(readFileSync(join(IMAGE_DIR, "build.json"), "utf8"));
    expect(build.updateKeys).toEqual({ keyIds: ["00dd9a95a776d12b"], testKeys: true });
    const tree = execFileSync(join(REPO, "scripts/build-image"), ["--rootfs-only", "--test-keys"], {
      cwd: REPO,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    })
      .trim()
      .split("\n")
      .pop() as string;
    expect(JSON.parse(readFileSync(join(tree, "usr/share/flotilla/update-keys.json"), "utf8"))).toEqual({
      keyIds: ["00dd9a95a776d12b"],
      testKeys: true,
    });
    expect(readFileSync(join(tree, "usr/share/flotilla/update-keys/00dd9a95a776d12b.pub.pem"), "utf8")).toBe(
      readFileSync(join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pub.pem"), "utf8"),
    );
  }, 120_000);

  it("the last build is within budget (and is reported against Flatcar's)", () => {
    const sizes = (JSON.parse(readFileSync(join(IMAGE_DIR, "build.json"), "utf8")) as { sizes: Sizes }).sizes;
    const lines = budget(definition as Definition, sizes);
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
