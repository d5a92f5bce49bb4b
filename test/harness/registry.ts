// A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution server, 2.8) over
// plain HTTP, with filesystem storage in the harness run's directory and optional htpasswd
// credentials. Images are pushed into it with skopeo from an OCI archive (test/fixtures/images).
// Like etcd, it runs in the run's cgroup, so a run's teardown (or scripts/clean-harness after a
// crash) stops it too.

import { accessSync, constants } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { tail } from "./etcd.js";
import { log, since } from "./log.js";
import { runOk, sleep, waitFor } from "./proc.js";
import { Run, type Spawned } from "./run.js";

export interface RegistryAuth {
  user: string;
  password: string;
}

export interface RegistryOptions {
  /** `HOST:PORT` to listen on; port 0 picks a free one. */
  listenAddress: string;
  /** Require these credentials (htpasswd, bcrypt) for every request. */
  auth?: RegistryAuth;
  /** Run to start the registry in (its teardown then stops it); default: a run of its own. */
  run?: Run;
}

export interface Registry {
  /** `http://HOST:PORT`. */
  readonly url: string;
  /** `HOST:PORT`, the registry part of image references (`HOST:PORT/flotilla/busybox:latest`). */
  readonly host: string;
  readonly pid: number;
  /** Stops the registry and removes its storage. Idempotent. */
  stop(): Promise<void>;
}

/** Executable → the Debian package that provides it. */
const PACKAGES: Record<string, string> = {
  "docker-registry": "docker-registry",
  skopeo: "skopeo",
  htpasswd: "apache2-utils",
};

export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  await ensurePackages(Object.keys(PACKAGES));
  const ownRun = opts.run === undefined;
  const r = opts.run ?? Run.create();
  try {
    return await launch(r, opts, ownRun);
  } catch (err) {
    if (ownRun) await r.destroy();
    throw err;
  }
}

async function launch(r: Run, opts: RegistryOptions, ownRun: boolean): Promise<Registry> {
  const t = performance.now();
  const { hostname, port } = splitHostPort(opts.listenAddress);
  const host = `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port === 0 ? await freePort(hostname) : port}`;
  const url = `http://${host}`;
  const dir = path.join(r.dir, `registry-${host.replace(/[^0-9A-Za-z.]/g, "_")}`);
  await mkdir(path.join(dir, "data"), { recursive: true });
  const config = [
    "version: 0.1",
    "log:",
    "  level: info",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${JSON.stringify(path.join(dir, "data"))}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: ${JSON.stringify(host)}`,
  ];
  if (opts.auth !== undefined) {
    const htpasswd = path.join(dir, "htpasswd");
    // bcrypt is the only hash the registry accepts.
    const line = await runOk("htpasswd", ["-nbB", opts.auth.user, opts.auth.password]);
    await writeFile(htpasswd, `${line.trim()}\n`, { mode: 0o600 });
    config.push("auth:", "  htpasswd:", "    realm: flotilla-test", `    path: ${JSON.stringify(htpasswd)}`);
  }
  const configFile = path.join(dir, "config.yml");
  await writeFile(configFile, `${config.join("\n")}\n`);

  const logFile = path.join(dir, "registry.log");
  const proc: Spawned = r.spawnIn(
    r.cgroup(path.basename(dir)),
    ["docker-registry", "serve", configFile],
    logFile,
  );
  const stop = async () => {
    if (proc.running) {
      process.kill(proc.pid, "SIGTERM");
      const exited = await Promise.race([proc.exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!exited) {
        process.kill(proc.pid, "SIGKILL");
        await proc.exited;
      }
    }
    if (ownRun) await r.destroy();
  };
  try {
    // /v2/ answers 200, or 401 when credentials are required, once the registry serves.
    await waitFor(
      `registry at ${url}`,
      async () => {
        if (!proc.running) throw new Error(`docker-registry exited; last log lines:\n${tail(logFile)}`);
        const status = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) }).then(
          (res) => res.status,
          () => undefined,
        );
        return status === 200 || status === 401 ? true : undefined;
      },
      30_000,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  log(`registry ready at ${url}${opts.auth ? " (htpasswd)" : ""} in ${since(t)}`);
  let stopping: Promise<void> | undefined;
  return {
    url,
    host,
    pid: proc.pid,
    stop: () => {
      stopping ??= stop();
      return stopping;
    },
  };
}

/**
 * Pushes the image in OCI archive `archive` to `registryURL` as `ref` (`REPOSITORY[:TAG]`), over
 * plain HTTP. Without `auth` the push is anonymous (no credentials from the host's auth files).
 * Rejects with skopeo's message, e.g. on a wrong credential.
 */
export async function pushImage(
  archive: string,
  registryURL: string,
  ref: string,
  auth?: RegistryAuth,
): Promise<void> {
  await ensurePackages(["skopeo"]);
  const destination = `docker://${new URL(registryURL).host}/${ref}`;
  const creds = auth === undefined ? ["--dest-no-creds"] : ["--dest-creds", `${auth.user}:${auth.password}`];
  await runOk("skopeo", [
    // The host's policy.json is not ours to rely on; the archive is our own build.
    "--insecure-policy",
    "copy",
    "--dest-tls-verify=false",
    ...creds,
    `oci-archive:${archive}`,
    destination,
  ]);
}

function splitHostPort(address: string): { hostname: string; port: number } {
  const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
  const port = Number(match?.[2]);
  if (match?.[1] === undefined || match[1] === "" || !(port >= 0 && port <= 65535)) {
    throw new Error(`listenAddress ${JSON.stringify(address)} is not HOST:PORT`);
  }
  return { hostname: match[1], port };
}

function freePort(hostname: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, hostname, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").some((dir) => {
    try {
      accessSync(path.join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

let installing: Promise<void> | undefined;

/**
 * Installs the packages of the missing `commands`. Not host.ts's ensureHostPackages: that installs
 * once per process, for the requirements of its first call.
 */
async function ensurePackages(commands: readonly string[]): Promise<void> {
  while (installing !== undefined) await installing.catch(() => undefined);
  const missing = commands.filter((c) => !onPath(c)).map((c) => PACKAGES[c] ?? c);
  if (missing.length === 0) return;
  log(`installing host packages: ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  installing = (async () => {
    await runOk("apt-get", ["update", "-q"], { env });
    await runOk("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { env });
  })();
  try {
    await installing;
  } finally {
    installing = undefined;
  }
}
