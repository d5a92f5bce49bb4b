// The release manifest: its types, the bytes that are signed, ed25519 signing and the one check
// every consumer goes through (verifyManifest). Pure: keys arrive as PEM text, documents as parsed
// JSON. Format and channel layout: docs/updates.md.

import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { parseVersion } from "./decide.js";
import { UpdateError } from "./errors.js";
import { checkWaves, type Wave } from "./waves.js";

export type { Wave } from "./waves.js";

export interface ReleaseFile {
  /** Of the uncompressed content, as written to the partition or the ESP. */
  size: number;
  sha256: string;
  /** Of the gzip file on the update server. */
  compressedSize: number;
  compressedSha256: string;
  /** Relative to the manifest's directory, e.g. "usr.squashfs.gz". */
  path: string;
}

/** The payload files, in the order they are downloaded and written. */
export const RELEASE_FILES = ["usr.squashfs", "usr.verity", "vmlinuz", "initrd"] as const;
export type ReleaseFileName = (typeof RELEASE_FILES)[number];

export interface Manifest {
  format: 1;
  name: "flotilla";
  /** MAJOR.MINOR.PATCH */
  version: string;
  channel: string;
  /** ISO 8601; waves count from it. */
  publishedAt: string;
  /**
   * ISO 8601: machines refuse the manifest after it (plus MANIFEST_CLOCK_SKEW_SECONDS), so an old
   * signed manifest cannot hold a machine on an old release forever. `scripts/release refresh`
   * signs the channel again with a later one.
   */
  expires: string;
  kernelVersion: string;
  verity: { rootHash: string; dataBlockSize: number; hashBlockSize: number };
  /** Each slot's kernel command line, from the image build's payload manifest. */
  cmdline: { A: string; B: string };
  files: Record<ReleaseFileName, ReleaseFile>;
  waves?: Wave[];
}

export interface SignedManifest {
  manifest: Manifest;
  signatures: { keyId: string; signature: string }[];
}

export interface TrustedKey {
  keyId: string;
  publicKeyPem: string;
}

const HEX64 = /^[0-9a-f]{64}$/;
export const CHANNEL_NAME = /^[a-z0-9][a-z0-9.-]*$/;

/** How far a machine's clock may be behind the signer's before a fresh manifest reads as expired. */
export const MANIFEST_CLOCK_SKEW_SECONDS = 300;

/** What the fetching machine expects of a manifest: the channel it asked, and its clock. */
export interface ManifestContext {
  channel: string;
  now: Date;
}

/**
 * The channel of a channel URL: its last path segment (`…/channels/stable/` → `stable`), as the
 * channel layout names it (docs/updates.md). undefined when that is not a channel name.
 */
export function channelOfURL(url: string): string | undefined {
  let path: string;
  try {
    path = new URL(url).pathname;
  } catch {
    return undefined;
  }
  const last = path.replace(/\/+$/, "").split("/").pop() ?? "";
  return CHANNEL_NAME.test(last) ? last : undefined;
}

/** Sorted-key JSON without whitespace: what is signed, so re-serialising a manifest keeps it valid. */
export function canonicalBytes(m: Manifest): Buffer {
  return Buffer.from(canonicalJson(m));
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

function ed25519Public(pem: string, where: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new UpdateError("key", `${where}: not a PEM public key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw new UpdateError("key", `${where}: an ${key.asymmetricKeyType} key, expected ed25519`);
  return key;
}

function keyIdOf(key: KeyObject): string {
  // The JWK `x` is the raw 32-byte ed25519 public key, independent of PEM wrapping.
  const raw = Buffer.from(key.export({ format: "jwk" }).x as string, "base64url");
  return createHash("sha256").update(raw).digest("hex").slice(0, 16);
}

/** First 16 hex digits of sha256 of the raw 32-byte public key. */
export function keyId(publicKeyPem: string): string {
  return keyIdOf(ed25519Public(publicKeyPem, "public key"));
}

export function signManifest(m: Manifest, privateKeyPem: string): SignedManifest {
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch (err) {
    throw new UpdateError("key", `signing key: not a PEM private key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw new UpdateError("key", `signing key: an ${key.asymmetricKeyType} key, expected ed25519`);
  const signature = sign(null, canonicalBytes(m), key).toString("base64");
  return { manifest: m, signatures: [{ keyId: keyIdOf(createPublicKey(key)), signature }] };
}

/**
 * Trusted keys from the files of the key directories (/usr/share/flotilla/update-keys/ and
 * /etc/flotilla/update-keys/). Only `*.pub.pem` files count; a key present in both is kept once.
 */
export function parseTrustedKeys(dirEntries: { name: string; text: string }[]): TrustedKey[] {
  const keys = new Map<string, TrustedKey>();
  for (const { name, text } of dirEntries) {
    if (!name.endsWith(".pub.pem")) continue;
    // A private key would parse (its public half is derivable) but must never sit in a key dir.
    if (text.includes("PRIVATE KEY"))
      throw new UpdateError("key", `update key ${name}: is a private key; only public keys belong here`);
    const key = ed25519Public(text, `update key ${name}`);
    const id = keyIdOf(key);
    if (!keys.has(id)) keys.set(id, { keyId: id, publicKeyPem: text });
  }
  return [...keys.values()];
}

const short = (id: string) => `${id.slice(0, 8)}…`;

/**
 * Checks a downloaded manifest document: shape, at least one signature by a trusted key over the
 * canonical bytes, then every field; with `context` (a machine fetching it), that it names the
 * channel it was fetched from and has not expired. Returns the manifest; throws UpdateError
 * naming the problem.
 */
export function verifyManifest(doc: unknown, trusted: TrustedKey[], context?: ManifestContext): Manifest {
  if (!isObject(doc) || !isObject(doc.manifest) || !Array.isArray(doc.signatures))
    throw new UpdateError("manifest", "manifest: not a signed manifest (expected {manifest, signatures[]})");
  if (trusted.length === 0)
    throw new UpdateError("signature", "manifest signature: no trusted keys configured");
  const sigs = doc.signatures.filter(
    (s): s is { keyId: string; signature: string } =>
      isObject(s) && typeof s.keyId === "string" && typeof s.signature === "string",
  );
  const trustedIds = trusted.map((k) => short(k.keyId)).join(", ");
  const known = sigs.filter((s) => trusted.some((k) => k.keyId === s.keyId));
  if (known.length === 0) {
    const by = sigs.length ? sigs.map((s) => short(s.keyId)).join(", ") : "nobody";
    throw new UpdateError(
      "signature",
      `manifest signature: no trusted key (signed by ${by}; trusted: ${trustedIds})`,
    );
  }
  const bytes = Buffer.from(canonicalJson(doc.manifest));
  const good = known.some((s) => {
    const key = trusted.find((k) => k.keyId === s.keyId) as TrustedKey;
    return verify(null, bytes, createPublicKey(key.publicKeyPem), Buffer.from(s.signature, "base64"));
  });
  if (!good)
    throw new UpdateError(
      "signature",
      `manifest signature: invalid signature by ${known.map((s) => short(s.keyId)).join(", ")} (the manifest was altered after signing)`,
    );
  const m = checkManifest(doc.manifest);
  if (context) checkFreshness(m, context);
  return m;
}

/**
 * A good signature says who made a manifest, not that it is meant for this channel or still
 * current: a `beta` manifest served at the `stable` URL, or an old one replayed, is refused.
 */
function checkFreshness(m: Manifest, { channel, now }: ManifestContext): void {
  if (m.channel !== channel)
    throw new UpdateError(
      "channel",
      `manifest channel: signed for channel "${m.channel}", but fetched from channel "${channel}" (a manifest served at the wrong URL)`,
    );
  const expires = Date.parse(m.expires);
  if (now.getTime() > expires + MANIFEST_CLOCK_SKEW_SECONDS * 1000)
    throw new UpdateError(
      "expired",
      `manifest expires: ${m.version} on channel "${m.channel}" expired at ${m.expires} (now ${now.toISOString()}, ${MANIFEST_CLOCK_SKEW_SECONDS} s of clock skew allowed): the channel was not re-signed in time (scripts/release refresh), or an old manifest is being replayed`,
    );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Field checks of a manifest whose signature is good: a correctly signed but malformed release is still refused. */
function checkManifest(m: Record<string, unknown>): Manifest {
  const fail = (field: string, what: string): never => {
    throw new UpdateError("manifest", `manifest ${field}: ${what}`);
  };
  const str = (o: Record<string, unknown>, field: string, path: string): string => {
    const v = o[field];
    if (typeof v !== "string" || v === "")
      fail(path, v === undefined ? "missing" : "must be a non-empty string");
    return v as string;
  };
  const int = (o: Record<string, unknown>, field: string, path: string): number => {
    const v = o[field];
    if (!Number.isSafeInteger(v) || (v as number) < 0)
      fail(path, v === undefined ? "missing" : "must be a non-negative integer");
    return v as number;
  };
  const obj = (o: Record<string, unknown>, field: string, path: string): Record<string, unknown> => {
    const v = o[field];
    if (!isObject(v)) fail(path, v === undefined ? "missing" : "must be an object");
    return v as Record<string, unknown>;
  };

  if (m.format !== 1)
    fail("format", `${JSON.stringify(m.format)} is not supported (this agent reads format 1)`);
  if (m.name !== "flotilla") fail("name", `${JSON.stringify(m.name)} is not "flotilla"`);
  const version = str(m, "version", "version");
  if (!parseVersion(version)) fail("version", `${JSON.stringify(version)} is not MAJOR.MINOR.PATCH`);
  const channel = str(m, "channel", "channel");
  if (!CHANNEL_NAME.test(channel))
    fail("channel", `${JSON.stringify(channel)} is not a channel name (a-z 0-9 . -)`);
  const publishedAt = str(m, "publishedAt", "publishedAt");
  if (Number.isNaN(Date.parse(publishedAt)))
    fail("publishedAt", `${JSON.stringify(publishedAt)} is not a date`);
  const expires = str(m, "expires", "expires");
  if (Number.isNaN(Date.parse(expires))) fail("expires", `${JSON.stringify(expires)} is not a date`);
  if (Date.parse(expires) <= Date.parse(publishedAt))
    fail("expires", `${expires} is not after publishedAt ${publishedAt}`);
  str(m, "kernelVersion", "kernelVersion");
  const verity = obj(m, "verity", "verity");
  if (!HEX64.test(str(verity, "rootHash", "verity.rootHash")))
    fail("verity.rootHash", "must be 64 hex digits");
  int(verity, "dataBlockSize", "verity.dataBlockSize");
  int(verity, "hashBlockSize", "verity.hashBlockSize");
  const cmdline = obj(m, "cmdline", "cmdline");
  for (const s of ["A", "B"]) str(cmdline, s, `cmdline.${s}`);
  const files = obj(m, "files", "files");
  for (const name of RELEASE_FILES) {
    const f = obj(files, name, `files.${name}`);
    int(f, "size", `files.${name}.size`);
    int(f, "compressedSize", `files.${name}.compressedSize`);
    for (const h of ["sha256", "compressedSha256"])
      if (!HEX64.test(str(f, h, `files.${name}.${h}`)))
        fail(`files.${name}.${h}`, "must be 64 lowercase hex digits");
    const path = str(f, "path", `files.${name}.path`);
    // The path is joined to the manifest's URL: keep it inside the release directory.
    if (!/^[A-Za-z0-9._-]+$/.test(path) || path.startsWith("."))
      fail(`files.${name}.path`, `${JSON.stringify(path)} must be a plain file name`);
  }
  if (m.waves !== undefined) checkWaves(m.waves, "manifest waves");
  return m as unknown as Manifest;
}

/**
 * Compares a downloaded (`gz`, the served file) or decompressed/written (`content`) file with the
 * manifest; throws naming the file and what differs. Size first: a truncated download says so.
 */
export function checkFile(
  name: ReleaseFileName,
  file: ReleaseFile,
  form: "gz" | "content",
  got: { size: number; sha256: string },
): void {
  const [label, size, sha256] =
    form === "gz" ? [file.path, file.compressedSize, file.compressedSha256] : [name, file.size, file.sha256];
  if (got.size !== size)
    throw new UpdateError(
      "file",
      `file ${label}: ${got.size} bytes, the manifest says ${size} (${got.size < size ? "truncated" : "oversized"})`,
    );
  if (got.sha256 !== sha256)
    throw new UpdateError(
      "file",
      `file ${label}: sha256 mismatch (manifest ${sha256.slice(0, 12)}…, got ${got.sha256.slice(0, 12)}…)`,
    );
}
