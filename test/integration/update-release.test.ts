// scripts/release on a tiny synthetic payload: the channel layout, a signed manifest that the
// agent's own verifyManifest accepts, gzip files whose content hashes match, and clear refusals.

import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import {
  parseTrustedKeys,
  RELEASE_FILES,
  type SignedManifest,
  verifyManifest,
} from "../../agent/update/manifest.js";
import { eligibleAt } from "../../agent/update/waves.js";
import { DEFAULT_VALIDITY_SECONDS, keygen, makeRelease } from "../../scripts/lib/release.js";

const RELEASE = join(import.meta.dirname, "../../scripts/release");
const root = mkdtempSync(join(tmpdir(), "flotilla-release-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const quiet = () => {};
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8"));

/** A payload directory as scripts/build-image writes it, with random content. */
function payload(name: string, version: string): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const files: Record<string, { size: number; sha256: string }> = {};
  for (const [i, f] of RELEASE_FILES.entries()) {
    // Part random, part zeros: compressible, and distinct per file.
    const content = Buffer.concat([randomBytes(20_000 + i * 1000), Buffer.alloc(50_000)]);
    writeFileSync(join(dir, f), content);
    files[f] = { size: content.length, sha256: sha256(content) };
  }
  const manifest = {
    name: "flotilla",
    version,
    kernelVersion: "6.1.0-56-cloud-amd64",
    usrFsType: "squashfs",
    verity: { rootHash: "c".repeat(64), dataBlockSize: 4096, hashBlockSize: 4096 },
    cmdline: { A: "x USR-A", B: "x USR-B" },
    files,
  };
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest));
  return dir;
}

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(RELEASE, args, { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

const trustedIn = (dir: string) =>
  parseTrustedKeys(readdirSync(dir).map((name) => ({ name, text: readFileSync(join(dir, name), "utf8") })));

describe("scripts/release", () => {
  it("keygen + make through the wrapper: a channel directory the agent verifies, byte for byte", async () => {
    const kg = await run(["keygen", "--out", "keys"]);
    expect(kg.code, kg.stderr).toBe(0);
    const id = kg.stdout.trim();
    expect(readdirSync(join(root, "keys")).sort()).toEqual([`${id}.pem`, `${id}.pub.pem`]);

    const src = payload("p1", "1.0.0");
    const mk = await run([
      "make",
      "--payload",
      "p1",
      "--key",
      `keys/${id}.pem`,
      "--channel",
      "stable",
      "--out",
      "channels",
      "--waves",
      "10:0,100:1h",
    ]);
    expect(mk.code, mk.stderr).toBe(0);
    expect(mk.stderr).toMatch(/release: usr\.squashfs: 0\.1 MiB → 0\.0 MiB gzip/);
    const dir = join(root, "channels/stable/1.0.0");
    expect(mk.stdout.trim()).toBe(dir);
    expect(readdirSync(dir).sort()).toEqual([
      "initrd.gz",
      "manifest.json",
      "usr.squashfs.gz",
      "usr.verity.gz",
      "vmlinuz.gz",
    ]);

    const doc = readJson(join(dir, "manifest.json"));
    const m = verifyManifest(doc, trustedIn(join(root, "keys")));
    expect(m).toMatchObject({ version: "1.0.0", channel: "stable", cmdline: { A: "x USR-A", B: "x USR-B" } });
    expect(m.waves).toEqual([
      { percent: 10, afterSeconds: 0 },
      { percent: 100, afterSeconds: 3600 },
    ]);
    expect(eligibleAt(m, "any").getTime() - Date.parse(m.publishedAt)).toBeLessThanOrEqual(3600_000);
    for (const f of RELEASE_FILES) {
      const gz = readFileSync(join(dir, m.files[f].path));
      const content = gunzipSync(gz);
      expect(m.files[f]).toMatchObject({ compressedSize: gz.length, compressedSha256: sha256(gz) });
      expect(m.files[f]).toMatchObject({ size: content.length, sha256: sha256(content) });
      expect(content.equals(readFileSync(join(src, f)))).toBe(true);
    }
    expect(readJson(join(root, "channels/stable/latest.json"))).toEqual(doc);
  });

  it("latest.json follows the newest version only; a published version is never rewritten", async () => {
    const { privatePath } = await keygen(join(root, "k2"), quiet);
    const out = join(root, "ch2");
    const make = (p: string, v: string) =>
      makeRelease({ payload: payload(p, v), key: privatePath, channel: "beta", out, log: quiet });
    expect((await make("a", "0.2.0")).latest).toBe(true);
    expect((await make("b", "0.10.0")).latest).toBe(true);
    expect((await make("c", "0.9.0")).latest).toBe(false);
    const latest = readJson(join(out, "beta/latest.json")) as SignedManifest;
    expect(latest.manifest.version).toBe("0.10.0");
    expect(verifyManifest(latest, trustedIn(join(root, "k2"))).version).toBe("0.10.0");
    await expect(make("d", "0.9.0")).rejects.toThrow(
      /ch2\/beta\/0\.9\.0 exists: a published version is never rewritten/,
    );
    expect(readdirSync(join(out, "beta")).sort()).toEqual(["0.10.0", "0.2.0", "0.9.0", "latest.json"]);
  });

  it("manifests expire (14 d by default, --expires-in); refresh signs the channel again with a later expiry", async () => {
    const { privatePath, keyId } = await keygen(join(root, "k4"), quiet);
    const out = join(root, "ch4");
    const made = await makeRelease({
      payload: payload("e1", "1.0.0"),
      key: privatePath,
      channel: "stable",
      out,
      log: quiet,
    });
    const m1 = made.signed.manifest;
    expect(Date.parse(m1.expires) - Date.parse(m1.publishedAt)).toBe(DEFAULT_VALIDITY_SECONDS * 1000);
    const mk = await run([
      ...["make", "--payload", payload("e2", "1.1.0"), "--key", privatePath],
      ...["--channel", "stable", "--out", out, "--expires-in", "2h"],
    ]);
    expect(mk.code, mk.stderr).toBe(0);
    const m2 = readJson(join(out, "stable/1.1.0/manifest.json")).manifest;
    expect(Date.parse(m2.expires) - Date.parse(m2.publishedAt)).toBe(2 * 3600_000);
    const files = readFileSync(join(out, "stable/1.1.0/usr.squashfs.gz"));

    const r = await run([
      "refresh",
      "--key",
      privatePath,
      "--channel",
      "stable",
      "--out",
      out,
      "--expires-in",
      "30d",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      `release: 3 manifest(s) of stable signed by ${keyId}, valid until ${r.stdout.trim()}`,
    );
    const expires = Date.parse(r.stdout.trim());
    expect(expires - Date.now()).toBeGreaterThan(30 * 86400_000 - 60_000);
    for (const path of ["stable/1.0.0/manifest.json", "stable/1.1.0/manifest.json", "stable/latest.json"]) {
      const doc = readJson(join(out, path));
      // Signed again, valid for a machine on the channel well past the old expiry.
      const m = verifyManifest(doc, trustedIn(join(root, "k4")), {
        channel: "stable",
        now: new Date(Date.now() + 20 * 86400_000),
      });
      expect(m.expires).toBe(new Date(expires).toISOString());
    }
    const latest = readJson(join(out, "stable/latest.json")).manifest;
    expect({ ...latest, expires: m2.expires }).toEqual(m2);
    expect(readFileSync(join(out, "stable/1.1.0/usr.squashfs.gz")).equals(files)).toBe(true);

    // A tampered manifest is not laundered by a refresh, and nothing is written.
    const tampered = readJson(join(out, "stable/1.0.0/manifest.json"));
    tampered.manifest.files.initrd.sha256 = "0".repeat(64);
    writeFileSync(join(out, "stable/1.0.0/manifest.json"), JSON.stringify(tampered));
    const before = readFileSync(join(out, "stable/latest.json"), "utf8");
    const bad = await run(["refresh", "--key", privatePath, "--channel", "stable", "--out", out]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /1\.0\.0\/manifest\.json: manifest signature: invalid signature by .*; not refreshed/,
    );
    expect(readFileSync(join(out, "stable/latest.json"), "utf8")).toBe(before);
    expect(
      (
        await run([
          "make",
          "--payload",
          "x",
          "--key",
          "k",
          "--channel",
          "c",
          "--out",
          "o",
          "--expires-in",
          "soon",
        ])
      ).stderr,
    ).toContain("--expires-in soon: use seconds or a duration like 12h, 14d");
  });

  it("refuses a missing payload file, a manifest that does not match its files, a bad waves spec, a bad key", async () => {
    const { privatePath } = await keygen(join(root, "k3"), quiet);
    const out = join(root, "ch3");
    const opts = (p: string) => ({ payload: p, key: privatePath, channel: "stable", out, log: quiet });

    const missing = payload("missing", "1.0.0");
    rmSync(join(missing, "vmlinuz"));
    await expect(makeRelease(opts(missing))).rejects.toThrow(`payload file ${missing}/vmlinuz: missing`);

    const flipped = payload("flipped", "1.0.0");
    const f = readFileSync(join(flipped, "usr.verity"));
    f[100] = (f[100] as number) ^ 1;
    writeFileSync(join(flipped, "usr.verity"), f);
    await expect(makeRelease(opts(flipped))).rejects.toThrow(
      /^payload file usr\.verity: sha256 [0-9a-f]{64} differs from the payload manifest's [0-9a-f]{64}/,
    );

    const short = payload("short", "1.0.0");
    writeFileSync(join(short, "initrd"), Buffer.alloc(10));
    await expect(makeRelease(opts(short))).rejects.toThrow(
      /^payload file initrd: 10 bytes, the payload manifest says \d+ \(manifest and files are from different builds\)/,
    );

    const noFiles = payload("nofiles", "1.0.0");
    writeFileSync(join(noFiles, "manifest.json"), JSON.stringify({ name: "flotilla", version: "1.0.0" }));
    await expect(makeRelease(opts(noFiles))).rejects.toThrow(
      /kernelVersion missing, .*files\.usr\.squashfs\.size\/sha256 missing/,
    );

    const ok = payload("ok", "1.0.0");
    await expect(makeRelease({ ...opts(ok), waves: "50:0,40:10" })).rejects.toThrow(
      'waves "50:0,40:10": wave 2: percent 40 does not exceed the previous wave\'s 50',
    );
    await expect(makeRelease({ ...opts(ok), key: join(root, "k3/none.pem") })).rejects.toThrow(
      /^signing key .*none\.pem: ENOENT/,
    );
    await expect(makeRelease({ ...opts(ok), channel: "Stable/x" })).rejects.toThrow(/channel "Stable\/x"/);
    // Nothing half-made is left in the channel.
    expect(readdirSync(join(out, "stable"))).toEqual([]);

    const r = await run([
      "make",
      "--payload",
      missing,
      "--key",
      privatePath,
      "--channel",
      "stable",
      "--out",
      out,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`release: payload file ${missing}/vmlinuz: missing`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
