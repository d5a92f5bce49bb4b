// Which update signing keys the image trusts (docs/updates.md, "Key trust in the image"). The
// repository commits a test key whose private half is public, so the build refuses to ship it
// unless asked for a test image (--test-keys), and refuses to build an image that trusts nothing.
// Checked before any stage runs: a production build without keys fails in seconds, saying what to do.

import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseTrustedKeys } from "../../agent/update/manifest.js";
import { BuildError, sha256 } from "./util.js";

/** Where the image keeps its keys, as the agent reads them (agent/update/updater.ts KEY_DIRS). */
export const IMAGE_KEY_DIR = "usr/share/flotilla/update-keys";
/** The record of what the image trusts: key IDs and whether it is a test image. */
export const IMAGE_KEY_RECORD = "usr/share/flotilla/update-keys.json";
export const TEST_KEY_DIR = "test/fixtures/update-keys";

export interface KeyFile {
  /** Where it came from, for messages. */
  source: string;
  name: string;
  text: string;
}

export interface UpdateKeys {
  /** Public keys to install under IMAGE_KEY_DIR, by file name. */
  install: KeyFile[];
  keyIds: string[];
  testKeys: boolean;
  /** Hash of everything above: an input of the customize stage. */
  hash: string;
}

/** Every `*.pub.pem` of a directory (none when it does not exist). */
export async function publicKeyFiles(dir: string): Promise<KeyFile[]> {
  if (!existsSync(dir)) return [];
  const names = (await readdir(dir)).filter((n) => n.endsWith(".pub.pem")).sort();
  return Promise.all(
    names.map(async (name) => ({
      source: join(dir, name),
      name,
      text: await readFile(join(dir, name), "utf8"),
    })),
  );
}

const ids = (files: KeyFile[]) =>
  files.map((f) => ({ file: f, keyId: (parseTrustedKeys([f])[0] as { keyId: string }).keyId }));

/**
 * The key set of an image. `shipped` are keys already in the tree (image/files, --extra-files),
 * `given` those of --update-keys, `test` the committed test keys. Pure, so unit-tested.
 */
export function chooseUpdateKeys(o: {
  shipped: KeyFile[];
  given: KeyFile[];
  test: KeyFile[];
  testKeys: boolean;
}): UpdateKeys {
  // Parsing refuses a private key or a non-ed25519 key, naming the file.
  const check = (files: KeyFile[]) => {
    try {
      return ids(files);
    } catch (err) {
      throw new BuildError(`update keys: ${(err as Error).message}`);
    }
  };
  const testIds = new Set(check(o.test).map((k) => k.keyId));
  const chosen = [...check(o.shipped), ...check(o.given)];
  if (!o.testKeys) {
    const leaked = chosen.find((k) => testIds.has(k.keyId));
    if (leaked)
      throw new BuildError(
        `update key ${leaked.file.source} is the committed test key ${leaked.keyId}: its private half is in ` +
          `${TEST_KEY_DIR}/, so anyone could sign releases this image installs. Remove it and give your own ` +
          "keys with --update-keys DIR, or build a test image with --test-keys.",
      );
    if (chosen.length === 0)
      throw new BuildError(
        "no update signing keys: the image would trust no release. Make a key pair with " +
          "`scripts/release keygen --out keys/` (keep keys/<id>.pem secret) and build with " +
          "`--update-keys keys/` (its *.pub.pem files are installed), or build a test image with " +
          `--test-keys (trusts the committed test key in ${TEST_KEY_DIR}/, which anyone can sign with).`,
      );
  }
  const all = [...chosen, ...(o.testKeys ? check(o.test) : [])];
  const byId = new Map(all.map((k) => [k.keyId, k]));
  const keyIds = [...byId.keys()].sort();
  // Only keys not already in the tree are installed; each under its key ID, as keygen names them.
  const shippedIds = new Set(check(o.shipped).map((k) => k.keyId));
  const install = keyIds
    .filter((id) => !shippedIds.has(id))
    .map((id) => ({ ...(byId.get(id) as { file: KeyFile }).file, name: `${id}.pub.pem` }));
  return {
    install,
    keyIds,
    testKeys: o.testKeys,
    hash: sha256(JSON.stringify({ keyIds, testKeys: o.testKeys, pems: install.map((f) => f.text) })),
  };
}

/** Reads the key sources of a build and chooses (see chooseUpdateKeys). */
export async function resolveUpdateKeys(o: {
  repo: string;
  updateKeysDir?: string;
  testKeys: boolean;
  extraFiles?: string;
}): Promise<UpdateKeys> {
  if (o.updateKeysDir !== undefined && !existsSync(o.updateKeysDir))
    throw new BuildError(`--update-keys ${o.updateKeysDir}: no such directory`);
  const given = o.updateKeysDir ? await publicKeyFiles(o.updateKeysDir) : [];
  if (o.updateKeysDir && given.length === 0)
    throw new BuildError(`--update-keys ${o.updateKeysDir}: no *.pub.pem file in it`);
  return chooseUpdateKeys({
    shipped: [
      ...(await publicKeyFiles(join(o.repo, "image/files", IMAGE_KEY_DIR))),
      ...(o.extraFiles ? await publicKeyFiles(join(o.extraFiles, IMAGE_KEY_DIR)) : []),
    ],
    given,
    test: await publicKeyFiles(join(o.repo, TEST_KEY_DIR)),
    testKeys: o.testKeys,
  });
}
