// scripts/release: update signing keys and signed releases in a channel directory any static HTTP
// server can serve (layout and formats: docs/updates.md).
//   release keygen --out DIR
//   release make --payload dist/image/payload --key K.pem --channel stable --out channels/
//                [--version V] [--waves 10:0,50:1h,100:2h] [--expires-in 14d]
//   release refresh --key K.pem --channel stable --out channels/ [--expires-in 14d]

import { createHash, createPublicKey, generateKeyPairSync } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { createGzip } from "node:zlib";
import { compareVersions, parseVersion } from "../../agent/update/decide.js";
import { UpdateError } from "../../agent/update/errors.js";
import {
  CHANNEL_NAME,
  keyId,
  type Manifest,
  parseTrustedKeys,
  RELEASE_FILES,
  type ReleaseFile,
  type ReleaseFileName,
  type SignedManifest,
  signManifest,
  type TrustedKey,
  verifyManifest,
} from "../../agent/update/manifest.js";
import { parseDuration, parseWaves } from "../../agent/update/waves.js";

/**
 * How long a signed manifest stays valid by default. Machines refuse it afterwards, so the channel
 * must be re-signed (`refresh`) before then: long enough to survive a missed run of a daily job,
 * short enough that a replayed old manifest holds machines back for two weeks at most.
 */
export const DEFAULT_VALIDITY_SECONDS = 14 * 86400;

type Log = (line: string) => void;
const stderrLog: Log = (line) => process.stderr.write(`release: ${line}\n`);
const MiB = 1024 * 1024;
const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;

/** Writes DIR/<keyId>.pem (private, mode 0600) and DIR/<keyId>.pub.pem. */
export async function keygen(outDir: string, log: Log = stderrLog) {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const publicPem = publicKey.export({ format: "pem", type: "spki" }).toString();
  const id = keyId(publicPem);
  await mkdir(outDir, { recursive: true });
  const privatePath = join(outDir, `${id}.pem`);
  const publicPath = join(outDir, `${id}.pub.pem`);
  await writeFile(privatePath, privateKey.export({ format: "pem", type: "pkcs8" }), {
    mode: 0o600,
    flag: "wx",
  });
  await writeFile(publicPath, publicPem, { flag: "wx" });
  log(`key ${id}: private ${privatePath} (keep it secret), public ${publicPath}`);
  return { keyId: id, privatePath, publicPath };
}

/** The image build's payload/manifest.json, the fields a release takes from it. */
interface PayloadManifest {
  name: string;
  version: string;
  kernelVersion: string;
  verity: Manifest["verity"];
  cmdline: Manifest["cmdline"];
  files: Record<ReleaseFileName, { size: number; sha256: string }>;
}

async function readPayloadManifest(dir: string): Promise<PayloadManifest> {
  const path = join(dir, "manifest.json");
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new UpdateError("release", `payload manifest ${path}: ${(err as Error).message}`);
  }
  const problems: string[] = [];
  for (const f of ["name", "version", "kernelVersion"])
    if (typeof doc[f] !== "string") problems.push(`${f} missing`);
  const verity = doc.verity as Record<string, unknown> | undefined;
  if (typeof verity?.rootHash !== "string") problems.push("verity.rootHash missing");
  const cmdline = doc.cmdline as Record<string, unknown> | undefined;
  if (typeof cmdline?.A !== "string" || typeof cmdline.B !== "string") problems.push("cmdline.A/B missing");
  const files = (doc.files ?? {}) as Record<string, { size?: unknown; sha256?: unknown }>;
  for (const name of RELEASE_FILES)
    if (typeof files[name]?.size !== "number" || typeof files[name]?.sha256 !== "string")
      problems.push(`files.${name}.size/sha256 missing`);
  if (problems.length)
    throw new UpdateError(
      "release",
      `payload manifest ${path}: ${problems.join(", ")} (not the output of scripts/build-image?)`,
    );
  return doc as unknown as PayloadManifest;
}

/** gzip one payload file into `dest`, hashing both sides on the way; checks it against the payload manifest. */
async function compress(
  src: string,
  dest: string,
  expected: { size: number; sha256: string },
  log: Log,
): Promise<Omit<ReleaseFile, "path">> {
  const name = src.split("/").pop() as string;
  const size = await stat(src).then(
    (s) => s.size,
    () => {
      throw new UpdateError(
        "release",
        `payload file ${src}: missing (is the payload from a complete build?)`,
      );
    },
  );
  if (size !== expected.size)
    throw new UpdateError(
      "release",
      `payload file ${name}: ${size} bytes, the payload manifest says ${expected.size} (manifest and files are from different builds)`,
    );
  const raw = createHash("sha256");
  const gz = createHash("sha256");
  let compressedSize = 0;
  let done = 0;
  let lastReport = Date.now();
  const t0 = Date.now();
  await pipeline(
    createReadStream(src),
    async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        raw.update(chunk);
        done += chunk.length;
        if (Date.now() - lastReport > 2000) {
          lastReport = Date.now();
          log(`${name}: ${Math.floor((done / size) * 100)}% of ${mib(size)}`);
        }
        yield chunk;
      }
    },
    createGzip(),
    async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        gz.update(chunk);
        compressedSize += chunk.length;
        yield chunk;
      }
    },
    createWriteStream(dest),
  );
  const sha256 = raw.digest("hex");
  if (sha256 !== expected.sha256)
    throw new UpdateError(
      "release",
      `payload file ${name}: sha256 ${sha256} differs from the payload manifest's ${expected.sha256} (manifest and files are from different builds, or the file was modified)`,
    );
  log(`${name}: ${mib(size)} → ${mib(compressedSize)} gzip (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return { size, sha256, compressedSize, compressedSha256: gz.digest("hex") };
}

export interface MakeOptions {
  payload: string;
  key: string;
  channel: string;
  out: string;
  version?: string;
  waves?: string;
  /** Seconds from now until the manifest expires (DEFAULT_VALIDITY_SECONDS). */
  expiresIn?: number;
  log?: Log;
}

/**
 * Builds channels/<channel>/<version>/ (files + signed manifest.json) in a temporary directory and
 * renames it into place, so a half-made release is never served; then points latest.json at it if
 * it is the newest version of the channel.
 */
export async function makeRelease(
  o: MakeOptions,
): Promise<{ dir: string; signed: SignedManifest; latest: boolean }> {
  const log = o.log ?? stderrLog;
  checkChannel(o.channel);
  const expiresIn = checkValidity(o.expiresIn);
  const waves = o.waves === undefined ? undefined : parseWaves(o.waves);
  const privatePem = await readFile(o.key, "utf8").catch((err: Error) => {
    throw new UpdateError("release", `signing key ${o.key}: ${err.message}`);
  });
  const payload = await readPayloadManifest(o.payload);
  const version = o.version ?? payload.version;
  if (!parseVersion(version))
    throw new UpdateError("release", `version "${version}" is not MAJOR.MINOR.PATCH`);
  if (version !== payload.version)
    log(
      `warning: releasing the ${payload.version} payload as ${version}; a machine booting it reports ${payload.version}, so only publish this for tests that never boot it`,
    );

  const channelDir = resolve(o.out, o.channel);
  const dir = join(channelDir, version);
  if (existsSync(dir))
    throw new UpdateError(
      "release",
      `${dir} exists: a published version is never rewritten (clients resume downloads of it)`,
    );
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    log(`${o.channel} ${version} from ${o.payload}`);
    const files = {} as Record<ReleaseFileName, ReleaseFile>;
    for (const name of RELEASE_FILES) {
      const path = `${name}.gz`;
      files[name] = {
        ...(await compress(join(o.payload, name), join(tmp, path), payload.files[name], log)),
        path,
      };
    }
    const now = new Date();
    const manifest: Manifest = {
      format: 1,
      name: "flotilla",
      version,
      channel: o.channel,
      publishedAt: now.toISOString(),
      expires: new Date(now.getTime() + expiresIn * 1000).toISOString(),
      kernelVersion: payload.kernelVersion,
      verity: payload.verity,
      cmdline: payload.cmdline,
      files,
      ...(waves ? { waves } : {}),
    };
    const signed = signManifest(manifest, privatePem);
    // What clients will do, with the key that signed: catches a manifest this tool got wrong.
    const signer = signed.signatures[0] as SignedManifest["signatures"][number];
    const publicKeyPem = createPublicKey(privatePem).export({ format: "pem", type: "spki" }).toString();
    verifyManifest(JSON.parse(JSON.stringify(signed)), [{ keyId: signer.keyId, publicKeyPem }], {
      channel: o.channel,
      now,
    });
    await writeFile(join(tmp, "manifest.json"), `${JSON.stringify(signed, null, 2)}\n`);
    await rename(tmp, dir);
    log(`signed by ${signer.keyId}, expires ${manifest.expires}: ${dir}/manifest.json`);

    const latestPath = join(channelDir, "latest.json");
    const current = await readFile(latestPath, "utf8").then(
      (t) => (JSON.parse(t) as SignedManifest).manifest.version,
      () => undefined,
    );
    const latest = current === undefined || compareVersions(version, current) > 0;
    if (latest) {
      await writeAtomically(latestPath, signed);
      log(`${latestPath} → ${version}`);
    } else log(`${latestPath} stays at ${current} (newer than ${version})`);
    return { dir, signed, latest };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function checkChannel(channel: string): void {
  if (!CHANNEL_NAME.test(channel))
    throw new UpdateError("release", `channel "${channel}": use a-z, 0-9, '.' and '-'`);
}

function checkValidity(seconds: number | undefined): number {
  const s = seconds ?? DEFAULT_VALIDITY_SECONDS;
  if (!Number.isSafeInteger(s) || s < 60)
    throw new UpdateError("release", `expires-in ${s} s: a manifest must stay valid for at least a minute`);
  return s;
}

async function writeAtomically(path: string, doc: SignedManifest): Promise<void> {
  await writeFile(`${path}.tmp`, `${JSON.stringify(doc, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
}

export interface RefreshOptions {
  key: string;
  channel: string;
  out: string;
  expiresIn?: number;
  log?: Log;
}

/**
 * Signs every manifest of a channel again (each `<version>/manifest.json` and `latest.json`) with
 * a new `expires`, as TUF re-signs its timestamp metadata: the operator's periodic duty, so that
 * machines keep trusting the channel (docs/updates.md, "Expiry"). Nothing else changes, so the
 * release files and their hashes stay valid. Each manifest must verify first, by the signing key
 * or another `*.pub.pem` beside it (a rotation), so a refresh never launders a tampered one.
 */
export async function refreshChannel(o: RefreshOptions): Promise<{ refreshed: string[]; expires: string }> {
  const log = o.log ?? stderrLog;
  checkChannel(o.channel);
  const expiresIn = checkValidity(o.expiresIn);
  const privatePem = await readFile(o.key, "utf8").catch((err: Error) => {
    throw new UpdateError("release", `signing key ${o.key}: ${err.message}`);
  });
  let publicKeyPem: string;
  try {
    publicKeyPem = createPublicKey(privatePem).export({ format: "pem", type: "spki" }).toString();
  } catch (err) {
    throw new UpdateError("release", `signing key ${o.key}: ${(err as Error).message}`);
  }
  const own: TrustedKey = { keyId: keyId(publicKeyPem), publicKeyPem };
  const keyDir = dirname(resolve(o.key));
  const beside = (await readdir(keyDir)).filter((n) => n.endsWith(".pub.pem"));
  const trusted = [
    own,
    ...parseTrustedKeys(
      await Promise.all(
        beside.map(async (name) => ({ name, text: await readFile(join(keyDir, name), "utf8") })),
      ),
    ),
  ];
  const channelDir = resolve(o.out, o.channel);
  const entries = await readdir(channelDir).catch((err: Error) => {
    throw new UpdateError("release", `channel ${channelDir}: ${err.message}`);
  });
  const paths = [
    ...entries.filter((e) => parseVersion(e)).map((v) => join(channelDir, v, "manifest.json")),
    ...(entries.includes("latest.json") ? [join(channelDir, "latest.json")] : []),
  ];
  if (paths.length === 0) throw new UpdateError("release", `channel ${channelDir}: no release to refresh`);
  const now = new Date();
  const expires = new Date(now.getTime() + expiresIn * 1000).toISOString();
  // Everything is checked before anything is written: a refresh is all or nothing.
  const signed: [string, SignedManifest][] = [];
  for (const path of paths) {
    let doc: unknown;
    try {
      doc = JSON.parse(await readFile(path, "utf8"));
    } catch (err) {
      throw new UpdateError("release", `${path}: ${(err as Error).message}`);
    }
    let m: Manifest;
    try {
      // Expired or not: refreshing an expired channel is exactly the point.
      m = verifyManifest(doc, trusted);
    } catch (err) {
      throw new UpdateError("release", `${path}: ${(err as Error).message}; not refreshed`);
    }
    if (m.channel !== o.channel)
      throw new UpdateError("release", `${path}: signed for channel "${m.channel}", not "${o.channel}"`);
    signed.push([path, signManifest({ ...m, expires }, privatePem)]);
  }
  for (const [path, doc] of signed) await writeAtomically(path, doc);
  log(`${signed.length} manifest(s) of ${o.channel} signed by ${own.keyId}, valid until ${expires}`);
  return { refreshed: paths, expires };
}

const USAGE = `usage:
  scripts/release keygen --out DIR
  scripts/release make --payload DIR --key KEY.pem --channel NAME --out DIR [--version V] [--waves 10:0,50:1h,100:2h] [--expires-in 14d]
  scripts/release refresh --key KEY.pem --channel NAME --out DIR [--expires-in 14d]`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const options = {
    out: { type: "string" },
    payload: { type: "string" },
    key: { type: "string" },
    channel: { type: "string" },
    version: { type: "string" },
    waves: { type: "string" },
    "expires-in": { type: "string" },
  } as const;
  let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof options }>>["values"];
  try {
    ({ values } = parseArgs({ args: rest, options }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const need = (k: keyof typeof values): string => {
    const v = values[k];
    if (v === undefined) throw new UsageError(`${command}: --${k} is required`);
    return v;
  };
  const expiresIn = (): number | undefined => {
    const raw = values["expires-in"];
    if (raw === undefined) return undefined;
    const s = parseDuration(raw);
    if (s === undefined) throw new UsageError(`--expires-in ${raw}: use seconds or a duration like 12h, 14d`);
    return s;
  };
  if (command === "keygen") {
    const { keyId: id } = await keygen(need("out"));
    process.stdout.write(`${id}\n`);
  } else if (command === "make") {
    const { dir } = await makeRelease({
      payload: need("payload"),
      key: need("key"),
      channel: need("channel"),
      out: need("out"),
      version: values.version,
      waves: values.waves,
      expiresIn: expiresIn(),
    });
    process.stdout.write(`${dir}\n`);
  } else if (command === "refresh") {
    const { expires } = await refreshChannel({
      key: need("key"),
      channel: need("channel"),
      out: need("out"),
      expiresIn: expiresIn(),
    });
    process.stdout.write(`${expires}\n`);
  } else throw new UsageError(command ? `unknown command "${command}"` : "no command");
}

class UsageError extends Error {}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`release: ${err.message}\n${USAGE}\n`);
      process.exit(2);
    }
    // Our errors say what is wrong; anything else is a bug and keeps its stack.
    const message = err instanceof UpdateError ? err.message : ((err as Error).stack ?? String(err));
    process.stderr.write(`release: ${message}\n`);
    process.exit(1);
  });
}
