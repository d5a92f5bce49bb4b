// Which update keys an image trusts: the committed test key only in a test image, and never an
// image that trusts nothing. Pure (image/pipeline/update-keys.ts); the build's own refusal is
// exercised in test/integration/image-build.test.ts.

import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { keyId } from "../../agent/update/manifest.js";
import { chooseUpdateKeys, type KeyFile } from "../../image/pipeline/update-keys.js";

const REPO = join(import.meta.dirname, "../..");
const TEST_ID = "00dd9a95a776d12b";
const testKey: KeyFile = {
  source: `test/fixtures/update-keys/${TEST_ID}.pub.pem`,
  name: `${TEST_ID}.pub.pem`,
  text: readFileSync(join(REPO, "test/fixtures/update-keys", `${TEST_ID}.pub.pem`), "utf8"),
};
function fresh(source: string): KeyFile & { keyId: string } {
  const text = generateKeyPairSync("ed25519").publicKey.export({ format: "pem", type: "spki" }).toString();
  return { source, name: "mine.pub.pem", text, keyId: keyId(text) };
}

describe("image update keys", () => {
  it("a production image trusts the keys given, installed under their key IDs, and not the test key", () => {
    const mine = fresh("keys/mine.pub.pem");
    const keys = chooseUpdateKeys({ shipped: [], given: [mine], test: [testKey], testKeys: false });
    expect(keys.keyIds).toEqual([mine.keyId]);
    expect(keys.testKeys).toBe(false);
    expect(keys.install.map((k) => [k.name, k.text])).toEqual([[`${mine.keyId}.pub.pem`, mine.text]]);
  });

  it("a test image adds the committed test key; the choice changes the stage hash", () => {
    const mine = fresh("keys/mine.pub.pem");
    const prod = chooseUpdateKeys({ shipped: [], given: [mine], test: [testKey], testKeys: false });
    const test = chooseUpdateKeys({ shipped: [], given: [mine], test: [testKey], testKeys: true });
    expect(test.keyIds).toEqual([mine.keyId, TEST_ID].sort());
    expect(test.testKeys).toBe(true);
    expect(test.hash).not.toBe(prod.hash);
    expect(chooseUpdateKeys({ shipped: [], given: [], test: [testKey], testKeys: true }).keyIds).toEqual([
      TEST_ID,
    ]);
  });

  it("refuses the test key from any source unless asked for a test image, naming the file", () => {
    for (const where of ["shipped", "given"] as const) {
      const placed = { ...testKey, source: `somewhere/${where}/${TEST_ID}.pub.pem` };
      expect(() =>
        chooseUpdateKeys({ shipped: [], given: [], [where]: [placed], test: [testKey], testKeys: false }),
      ).toThrow(
        `update key somewhere/${where}/${TEST_ID}.pub.pem is the committed test key ${TEST_ID}: its private half is in test/fixtures/update-keys/`,
      );
    }
  });

  it("refuses an image that trusts no key, saying what to do", () => {
    expect(() => chooseUpdateKeys({ shipped: [], given: [], test: [testKey], testKeys: false })).toThrow(
      /^no update signing keys: the image would trust no release\. Make a key pair with `scripts\/release keygen --out keys\/`.*--update-keys keys\/.*--test-keys/,
    );
  });

  it("refuses a private key named as a public one", () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    const leaked = {
      source: "keys/oops.pub.pem",
      name: "oops.pub.pem",
      text: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
    };
    expect(() =>
      chooseUpdateKeys({ shipped: [], given: [leaked], test: [testKey], testKeys: false }),
    ).toThrow("update keys: update key oops.pub.pem: is a private key; only public keys belong here");
  });
});
