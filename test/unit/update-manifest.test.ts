import { generateKeyPairSync } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { UpdateError } from "../../agent/update/errors.js";
import {
  canonicalBytes,
  channelOfURL,
  checkFile,
  keyId,
  type Manifest,
  parseTrustedKeys,
  type SignedManifest,
  signManifest,
  verifyManifest,
} from "../../agent/update/manifest.js";

function pair() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const publicKeyPem = publicKey.export({ format: "pem", type: "spki" }).toString();
  return {
    privatePem: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    publicKeyPem,
    trusted: { keyId: keyId(publicKeyPem), publicKeyPem },
  };
}

const file = (n: number) => ({
  size: 1000 * n,
  sha256: String(n).repeat(64),
  compressedSize: 500 * n,
  compressedSha256: "f".repeat(64),
  path: "x.gz",
});

const manifest: Manifest = {
  format: 1,
  name: "flotilla",
  version: "0.2.0",
  channel: "stable",
  publishedAt: "2025-03-01T10:00:00.000Z",
  expires: "2025-03-15T10:00:00.000Z",
  kernelVersion: "6.1.0-56-cloud-amd64",
  verity: { rootHash: "a".repeat(64), dataBlockSize: 4096, hashBlockSize: 4096 },
  cmdline: { A: "usrhash=a USR-A", B: "usrhash=a USR-B" },
  files: {
    "usr.squashfs": { ...file(1), path: "usr.squashfs.gz" },
    "usr.verity": { ...file(2), path: "usr.verity.gz" },
    vmlinuz: { ...file(3), path: "vmlinuz.gz" },
    initrd: { ...file(4), path: "initrd.gz" },
  },
  waves: [
    { percent: 10, afterSeconds: 0 },
    { percent: 100, afterSeconds: 3600 },
  ],
};

const k1 = pair();
const k2 = pair();
const wire = (s: SignedManifest): unknown => JSON.parse(JSON.stringify(s));
const errorOf = (f: () => unknown): UpdateError => {
  try {
    f();
  } catch (err) {
    if (err instanceof UpdateError) return err;
    throw err;
  }
  throw new Error("did not throw");
};

describe("manifest signatures", () => {
  it("a manifest signed by a trusted key verifies, after a JSON round trip", () => {
    expect(verifyManifest(wire(signManifest(manifest, k1.privatePem)), [k1.trusted])).toEqual(manifest);
  });

  it("canonical bytes do not depend on key order", () => {
    const reordered = Object.fromEntries(Object.entries(manifest).reverse()) as unknown as Manifest;
    expect(canonicalBytes(reordered).equals(canonicalBytes(manifest))).toBe(true);
    const signed = wire(signManifest(reordered, k1.privatePem));
    expect(verifyManifest(signed, [k1.trusted]).version).toBe("0.2.0");
  });

  it("a flipped byte in a signed field fails the signature", () => {
    const signed = wire(signManifest(manifest, k1.privatePem)) as SignedManifest;
    const h = signed.manifest.files.vmlinuz.sha256;
    signed.manifest.files.vmlinuz.sha256 = `${h.slice(0, 10)}4${h.slice(11)}`;
    const e = errorOf(() => verifyManifest(signed, [k1.trusted]));
    expect(e.code).toBe("signature");
    expect(e.message).toBe(
      `manifest signature: invalid signature by ${k1.trusted.keyId.slice(0, 8)}… (the manifest was altered after signing)`,
    );
  });

  it("an added field is covered by the signature too", () => {
    const signed = wire(signManifest(manifest, k1.privatePem)) as { manifest: Record<string, unknown> };
    signed.manifest.extra = 1;
    expect(() => verifyManifest(signed, [k1.trusted])).toThrow(/invalid signature/);
  });

  it("a key nobody trusts: names the signer and the trusted keys", () => {
    const signed = wire(signManifest(manifest, k2.privatePem));
    const e = errorOf(() => verifyManifest(signed, [k1.trusted]));
    expect(e.message).toBe(
      `manifest signature: no trusted key (signed by ${k2.trusted.keyId.slice(0, 8)}…; trusted: ${k1.trusted.keyId.slice(0, 8)}…)`,
    );
  });

  it("a signature claiming a trusted key id but made with another key is invalid", () => {
    const signed = signManifest(manifest, k2.privatePem);
    (signed.signatures[0] as { keyId: string }).keyId = k1.trusted.keyId;
    expect(() => verifyManifest(wire(signed), [k1.trusted])).toThrow(/invalid signature by/);
  });

  it("rotation: with two trusted keys, either verifies; a doubly signed manifest verifies with either", () => {
    const both = [k1.trusted, k2.trusted];
    expect(verifyManifest(wire(signManifest(manifest, k1.privatePem)), both).version).toBe("0.2.0");
    expect(verifyManifest(wire(signManifest(manifest, k2.privatePem)), both).version).toBe("0.2.0");
    const twice: SignedManifest = {
      manifest,
      signatures: [
        ...signManifest(manifest, k2.privatePem).signatures,
        ...signManifest(manifest, k1.privatePem).signatures,
      ],
    };
    expect(verifyManifest(wire(twice), [k1.trusted]).version).toBe("0.2.0");
    expect(verifyManifest(wire(twice), [k2.trusted]).version).toBe("0.2.0");
  });

  it("not a signed manifest, or no trusted keys at all", () => {
    expect(() => verifyManifest(manifest, [k1.trusted])).toThrow(/not a signed manifest/);
    expect(() => verifyManifest("x", [k1.trusted])).toThrow(/not a signed manifest/);
    expect(() => verifyManifest({ manifest, signatures: [] }, [k1.trusted])).toThrow(/signed by nobody/);
    expect(() => verifyManifest(wire(signManifest(manifest, k1.privatePem)), [])).toThrow(
      /no trusted keys configured/,
    );
  });

  it("refuses a non-ed25519 signing key", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({
      format: "pem",
      type: "pkcs8",
    });
    expect(() => signManifest(manifest, rsa.toString())).toThrow("signing key: an rsa key, expected ed25519");
  });
});

describe("manifest fields (correctly signed, still refused)", () => {
  const check = (m: unknown) =>
    errorOf(() => verifyManifest(wire(signManifest(m as Manifest, k1.privatePem)), [k1.trusted]));

  it("missing fields are named by path", () => {
    const { kernelVersion: _, ...noKernel } = manifest;
    expect(check(noKernel).message).toBe("manifest kernelVersion: missing");
    const { initrd: _i, ...files } = manifest.files;
    expect(check({ ...manifest, files }).message).toBe("manifest files.initrd: missing");
    const { compressedSha256: _c, ...vmlinuz } = manifest.files.vmlinuz;
    expect(check({ ...manifest, files: { ...manifest.files, vmlinuz } }).message).toBe(
      "manifest files.vmlinuz.compressedSha256: missing",
    );
    expect(check({ ...manifest, cmdline: { A: "x" } }).message).toBe("manifest cmdline.B: missing");
  });

  it("wrong format, name, version, channel, date, hashes, paths and waves", () => {
    expect(check({ ...manifest, format: 2 }).message).toBe(
      "manifest format: 2 is not supported (this agent reads format 1)",
    );
    expect(check({ ...manifest, name: "flatcar" }).message).toBe(
      'manifest name: "flatcar" is not "flotilla"',
    );
    expect(check({ ...manifest, version: "1.2" }).message).toBe(
      'manifest version: "1.2" is not MAJOR.MINOR.PATCH',
    );
    expect(check({ ...manifest, channel: "../x" }).code).toBe("manifest");
    expect(check({ ...manifest, publishedAt: "yesterday" }).message).toMatch(
      /publishedAt: "yesterday" is not a date/,
    );
    expect(check({ ...manifest, verity: { ...manifest.verity, rootHash: "abc" } }).message).toMatch(
      /verity\.rootHash/,
    );
    const bad = {
      ...manifest.files,
      "usr.verity": { ...manifest.files["usr.verity"], sha256: "A".repeat(64) },
    };
    expect(check({ ...manifest, files: bad }).message).toBe(
      "manifest files.usr.verity.sha256: must be 64 lowercase hex digits",
    );
    const size = { ...manifest.files, initrd: { ...manifest.files.initrd, size: -1 } };
    expect(check({ ...manifest, files: size }).message).toBe(
      "manifest files.initrd.size: must be a non-negative integer",
    );
    const outside = { ...manifest.files, initrd: { ...manifest.files.initrd, path: "../../etc/passwd" } };
    expect(check({ ...manifest, files: outside }).message).toMatch(
      /files\.initrd\.path: .* must be a plain file name/,
    );
    expect(check({ ...manifest, waves: [{ percent: 50, afterSeconds: 0 }] }).message).toBe(
      "manifest waves: the last wave must reach 100%, not 50%",
    );
  });

  it("a manifest without waves is fine", () => {
    const { waves: _, ...noWaves } = manifest;
    expect(verifyManifest(wire(signManifest(noWaves, k1.privatePem)), [k1.trusted]).waves).toBeUndefined();
  });
});

describe("channel binding and expiry (a machine fetching the manifest)", () => {
  const signed = () => wire(signManifest(manifest, k1.privatePem));
  const at = (iso: string) => new Date(iso);

  it("the channel's manifest, before it expires (and within the clock skew after), verifies", () => {
    for (const now of ["2025-03-01T10:00:00.000Z", "2025-03-15T10:00:00.000Z", "2025-03-15T10:04:59.000Z"])
      expect(verifyManifest(signed(), [k1.trusted], { channel: "stable", now: at(now) }).version).toBe(
        "0.2.0",
      );
  });

  it("a manifest signed for beta served at the stable URL is refused, naming both", () => {
    const beta = wire(signManifest({ ...manifest, channel: "beta" }, k1.privatePem));
    const e = errorOf(() =>
      verifyManifest(beta, [k1.trusted], { channel: "stable", now: at("2025-03-02T00:00:00Z") }),
    );
    expect(e.code).toBe("channel");
    expect(e.message).toBe(
      'manifest channel: signed for channel "beta", but fetched from channel "stable" (a manifest served at the wrong URL)',
    );
  });

  it("past expires plus the clock skew allowance, the manifest is refused", () => {
    const e = errorOf(() =>
      verifyManifest(signed(), [k1.trusted], { channel: "stable", now: at("2025-03-15T10:05:01.000Z") }),
    );
    expect(e.code).toBe("expired");
    expect(e.message).toMatch(
      /^manifest expires: 0\.2\.0 on channel "stable" expired at 2025-03-15T10:00:00\.000Z \(now 2025-03-15T10:05:01\.000Z, 300 s of clock skew allowed\)/,
    );
  });

  it("expires is required, signed, a date, and after publishedAt", () => {
    const { expires: _, ...noExpiry } = manifest;
    const check = (m: unknown) =>
      errorOf(() => verifyManifest(wire(signManifest(m as Manifest, k1.privatePem)), [k1.trusted]));
    expect(check(noExpiry).message).toBe("manifest expires: missing");
    expect(check({ ...manifest, expires: "soon" }).message).toBe('manifest expires: "soon" is not a date');
    expect(check({ ...manifest, expires: manifest.publishedAt }).message).toMatch(/is not after publishedAt/);
    // Extending the expiry without the key breaks the signature.
    const doc = signed() as { manifest: Manifest };
    doc.manifest.expires = "2099-01-01T00:00:00.000Z";
    expect(() => verifyManifest(doc, [k1.trusted])).toThrow(/invalid signature/);
  });

  it("a channel URL's channel is its last path segment", () => {
    expect(channelOfURL("http://u.example/channels/stable/")).toBe("stable");
    expect(channelOfURL("https://u.example/x/beta-2")).toBe("beta-2");
    expect(channelOfURL("http://u.example/")).toBeUndefined();
    expect(channelOfURL("http://u.example/Stable/")).toBeUndefined();
    expect(channelOfURL("not a url")).toBeUndefined();
  });
});

describe("trusted keys", () => {
  it("key id: 16 hex digits, the same for the key however it is wrapped", () => {
    expect(k1.trusted.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keyId(`\n${k1.publicKeyPem}\n`)).toBe(k1.trusted.keyId);
    expect(k1.trusted.keyId).not.toBe(k2.trusted.keyId);
  });

  it("reads *.pub.pem files only, once per key, and refuses private or non-ed25519 keys by file name", () => {
    const keys = parseTrustedKeys([
      { name: "a.pub.pem", text: k1.publicKeyPem },
      { name: "README", text: "not a key" },
      { name: "copy.pub.pem", text: k1.publicKeyPem },
      { name: "b.pub.pem", text: k2.publicKeyPem },
    ]);
    expect(keys.map((k) => k.keyId)).toEqual([k1.trusted.keyId, k2.trusted.keyId]);
    expect(() => parseTrustedKeys([{ name: "oops.pub.pem", text: k1.privatePem }])).toThrow(
      "update key oops.pub.pem: is a private key; only public keys belong here",
    );
    expect(() => parseTrustedKeys([{ name: "junk.pub.pem", text: "hello" }])).toThrow(
      /^update key junk\.pub\.pem: not a PEM public key/,
    );
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({
      format: "pem",
      type: "spki",
    });
    expect(() => parseTrustedKeys([{ name: "rsa.pub.pem", text: rsa.toString() }])).toThrow(
      "update key rsa.pub.pem: an rsa key, expected ed25519",
    );
  });

  it("the committed test key pair (test images trust it) is named by its key id", () => {
    const fixtures = new URL("../fixtures/update-keys/", import.meta.url);
    const entries = readdirSync(fixtures)
      .filter((name) => name.endsWith(".pub.pem"))
      .map((name) => ({ name, text: readFileSync(new URL(name, fixtures), "utf8") }));
    const [dev] = parseTrustedKeys(entries);
    expect(entries.map((e) => e.name)).toEqual([`${dev?.keyId}.pub.pem`]);
    const privatePem = readFileSync(new URL(`${dev?.keyId}.pem`, fixtures), "utf8");
    expect(verifyManifest(wire(signManifest(manifest, privatePem)), parseTrustedKeys(entries)).version).toBe(
      "0.2.0",
    );
  });
});

describe("file checks", () => {
  const f = manifest.files["usr.squashfs"];
  it("accepts matching sizes and hashes, of the served .gz and of the content", () => {
    expect(() =>
      checkFile("usr.squashfs", f, "gz", { size: f.compressedSize, sha256: f.compressedSha256 }),
    ).not.toThrow();
    expect(() => checkFile("usr.squashfs", f, "content", { size: f.size, sha256: f.sha256 })).not.toThrow();
  });

  it("names the file and what differs: truncated, oversized, sha256", () => {
    expect(() => checkFile("usr.squashfs", f, "gz", { size: 10, sha256: f.compressedSha256 })).toThrow(
      "file usr.squashfs.gz: 10 bytes, the manifest says 500 (truncated)",
    );
    expect(() => checkFile("usr.squashfs", f, "content", { size: 1001, sha256: f.sha256 })).toThrow(
      "file usr.squashfs: 1001 bytes, the manifest says 1000 (oversized)",
    );
    const e = errorOf(() => checkFile("usr.squashfs", f, "content", { size: 1000, sha256: "0".repeat(64) }));
    expect(e.code).toBe("file");
    expect(e.message).toBe("file usr.squashfs: sha256 mismatch (manifest 111111111111…, got 000000000000…)");
  });
});
