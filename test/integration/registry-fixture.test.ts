// The registry fixture itself: Debian's docker-registry with and without htpasswd credentials, the
// test image built from busybox-static and pushed with skopeo, and nothing left running after stop.

import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuiltImage, buildTestImage } from "../fixtures/images/build.js";
import { pushImage, type Registry, startRegistry } from "../harness/registry.js";

const REF = "flotilla/busybox:latest";
const AUTH = { user: "fleet", password: "s3cret pass" };

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

async function manifestDigest(
  registry: Registry,
  headers: Record<string, string> = {},
): Promise<string | null> {
  const res = await fetch(`${registry.url}/v2/flotilla/busybox/manifests/latest`, {
    headers: { Accept: "application/vnd.oci.image.manifest.v1+json", ...headers },
  });
  return res.ok ? res.headers.get("docker-content-digest") : null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function accepts(host: string): Promise<boolean> {
  const url = new URL(`http://${host}`);
  return new Promise((resolve) => {
    const socket = net.connect(Number(url.port), url.hostname);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

let image: BuiltImage;

beforeAll(async () => {
  image = await buildTestImage();
});

describe("registry without credentials", () => {
  let registry: Registry;
  beforeAll(async () => {
    registry = await startRegistry({ listenAddress: "127.0.0.1:0" });
  });
  afterAll(() => registry?.stop());

  it("serves the registry API on the loopback address", async () => {
    expect(registry.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${registry.url}/v2/`)).status).toBe(200);
  });

  it("takes a push of the test image and serves its manifest", async () => {
    await pushImage(image.archive, registry.url, REF);
    expect(await manifestDigest(registry)).toBe(image.manifestDigest);
    const tags = (await (await fetch(`${registry.url}/v2/flotilla/busybox/tags/list`)).json()) as {
      tags: string[];
    };
    expect(tags.tags).toEqual(["latest"]);
  });
});

describe("registry with htpasswd credentials", () => {
  let registry: Registry;
  beforeAll(async () => {
    registry = await startRegistry({ listenAddress: "127.0.0.1:0", auth: AUTH });
  });
  afterAll(() => registry?.stop());

  it("refuses anonymous requests and accepts the right credentials", async () => {
    expect((await fetch(`${registry.url}/v2/`)).status).toBe(401);
    const res = await fetch(`${registry.url}/v2/`, {
      headers: { Authorization: basic(AUTH.user, AUTH.password) },
    });
    expect(res.status).toBe(200);
  });

  it("rejects a push with a wrong password, and one without credentials", async () => {
    await expect(pushImage(image.archive, registry.url, REF, { ...AUTH, password: "wrong" })).rejects.toThrow(
      /unauthorized|authentication required/i,
    );
    await expect(pushImage(image.archive, registry.url, REF)).rejects.toThrow(
      /unauthorized|authentication required/i,
    );
    expect(await manifestDigest(registry, { Authorization: basic(AUTH.user, AUTH.password) })).toBeNull();
  });

  it("takes a push with the right credentials", async () => {
    await pushImage(image.archive, registry.url, REF, AUTH);
    expect(await manifestDigest(registry)).toBeNull();
    expect(await manifestDigest(registry, { Authorization: basic(AUTH.user, AUTH.password) })).toBe(
      image.manifestDigest,
    );
  });
});

describe("stop", () => {
  it("leaves no registry process and no listener, and may be called twice", async () => {
    const registry = await startRegistry({ listenAddress: "127.0.0.1:0" });
    expect(alive(registry.pid)).toBe(true);
    expect(await accepts(registry.host)).toBe(true);
    await registry.stop();
    expect(alive(registry.pid)).toBe(false);
    expect(await accepts(registry.host)).toBe(false);
    await registry.stop();
  });
});
