import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster, ensureHostPackages, imageRootfs, MACHINE_TLS_FILES } from "../harness/index.js";
import { deadOrZombie } from "../harness/proc.js";
import { httpRequest } from "./support.js";

const repo = path.resolve(import.meta.dirname, "../..");

/** curl inside a machine with the machine's own certificate, as its agent talks to etcd. */
const CURL_TLS = [
  "--cacert",
  `/${MACHINE_TLS_FILES.ca}`,
  "--cert",
  `/${MACHINE_TLS_FILES.cert}`,
  "--key",
  `/${MACHINE_TLS_FILES.key}`,
];

/** POST to etcd's JSON gateway from the host with the harness's client certificate. */
async function etcdPost(
  cluster: Cluster,
  api: string,
  body: unknown,
): Promise<{ status: number; text: string }> {
  const res = await httpRequest("POST", cluster.endpoint, api, {
    body: JSON.stringify(body),
    tls: cluster.etcd.tlsFiles,
  });
  return { status: res.status, text: res.text };
}

/** Everything of a run that must be gone after its teardown; empty when nothing is left. */
function leftovers(runDir: string, bridge: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes(runDir)) found.push(`process ${pid}: ${cmdline}`);
    } catch {
      // exited meanwhile
    }
  }
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    if (line.includes(runDir)) found.push(`mount: ${line}`);
  }
  for (const link of readdirSync("/sys/class/net").filter(
    (n) => n.startsWith(bridge) || n.startsWith(`vb-${bridge}`),
  )) {
    found.push(`link ${link}`);
  }
  for (const h of ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup"]) {
    if (existsSync(`${h}/flotilla-${path.basename(runDir)}`))
      found.push(`cgroup ${h}/flotilla-${path.basename(runDir)}`);
  }
  if (existsSync(runDir)) found.push(`dir ${runDir}`);
  return found;
}

describe("harness: three machines without the agent", () => {
  let cluster: Cluster;

  beforeAll(async () => {
    const t = performance.now();
    await imageRootfs();
    console.error(`rootfs ready in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const tb = performance.now();
    cluster = await Cluster.start({
      machines: 3,
      agent: false,
      metadata: [{ role: "a" }, { role: "b", zone: "z1" }],
    });
    console.error(`3 machines booted in ${((performance.now() - tb) / 1000).toFixed(1)} s`);
    // The OS image has no busybox; tests use the host's static one as a web server and container image.
    await ensureHostPackages([{ need: "busybox", pkg: "busybox-static" }]);
    for (const m of cluster.machines)
      await copyFile("/bin/busybox", path.join(cluster.runDir, m.name, "merged", "var", "tmp", "busybox"));
    // A first rootfs build downloads and installs ~300 MB of packages: minutes on a busy 2-core box.
  }, 900_000);

  afterAll(async () => {
    await cluster?.teardown();
  });

  it("boots machines with their own identity, address and configuration", async () => {
    const ids = new Set(cluster.machines.map((m) => m.id));
    expect(ids.size).toBe(3);
    for (const [i, m] of cluster.machines.entries()) {
      expect(m.id).toMatch(/^[0-9a-f]{32}$/);
      const state = await m.exec(["systemctl", "is-system-running"]);
      expect(state.stdout.trim()).toMatch(/^(running|degraded)$/);
      expect((await m.exec(["cat", "/etc/machine-id"])).stdout.trim()).toBe(m.id);
      expect((await m.exec(["hostname"])).stdout.trim()).toBe(m.name);
      expect((await m.exec(["systemctl", "is-enabled", "flotilla-agent.service"])).stdout.trim()).toBe(
        "masked",
      );
      const env = (await m.exec(["cat", "/etc/flotilla/agent.env"])).stdout;
      expect(env).toContain(`FLOTILLA_ETCD_ENDPOINTS="${cluster.endpoint}"`);
      expect(env).toContain(`FLOTILLA_PUBLIC_IP="${m.ip}"`);
      expect(env).toContain(`FLOTILLA_API_LISTEN="0.0.0.0:7480"`);
      expect(env).toContain(`FLOTILLA_METADATA="${["role=a", "role=b,zone=z1", ""][i]}"`);
      // The cluster PKI where the agent looks for it; the key is root's alone.
      const key = await m.exec(["stat", "-c", "%a", `/${MACHINE_TLS_FILES.key}`]);
      expect(key.stdout.trim()).toBe("600");
      const cert = new X509Certificate(
        readFileSync(path.join(cluster.runDir, m.name, "merged", MACHINE_TLS_FILES.cert)),
      );
      expect(cert.subject).toBe(`O=flotilla\nOU=machine\nCN=${m.name}`);
      expect(cert.checkIP(m.ip)).toBe(m.ip);
      // Podman storage is the bound per-machine directory, not the overlay root.
      const fstype = await m.exec(["findmnt", "-n", "-o", "FSTYPE", "/var/lib/containers"]);
      expect(fstype.stdout.trim()).not.toBe("overlay");
      expect(fstype.stdout.trim()).not.toBe("");
    }
  });

  it("reaches etcd over the bridge from every machine, and each machine from the others and the host", async () => {
    expect(cluster.endpoint).toBe(`https://${cluster.bridge.ip}:2379`);
    for (const m of cluster.machines) {
      const health = await m.exec([
        "curl",
        "-sS",
        "--max-time",
        "5",
        ...CURL_TLS,
        `${cluster.endpoint}/health`,
      ]);
      expect(health.stdout).toContain('"health":"true"');
      // etcd requires a client certificate: without one the handshake fails.
      const anonymous = await m.exec([
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--cacert",
        `/${MACHINE_TLS_FILES.ca}`,
        `${cluster.endpoint}/health`,
      ]);
      expect(anonymous.code).not.toBe(0);
      // Something to reach on the API port: busybox's httpd serving the machine's name.
      const www = await m.exec([
        "sh",
        "-c",
        `mkdir -p /tmp/www && hostname > /tmp/www/name && /var/tmp/busybox httpd -p 7480 -h /tmp/www`,
      ]);
      expect(www.code).toBe(0);
    }
    for (const from of cluster.machines) {
      for (const to of cluster.machines.filter((x) => x !== from)) {
        const r = await from.exec(["curl", "-sS", "--max-time", "5", `http://${to.ip}:7480/name`]);
        expect(r.stdout.trim(), `${from.name} -> ${to.name}: ${r.stderr}`).toBe(to.name);
      }
    }
    const m = cluster.machines[0];
    expect(m).toBeDefined();
    if (m === undefined) return;
    expect((await (await fetch(`http://${m.ip}:7480/name`)).text()).trim()).toBe(m.name);
  });

  it("runs a podman container from a local image", async () => {
    const m = cluster.machines[0];
    if (m === undefined) throw new Error("no machine");
    const r = await m.exec(
      [
        "sh",
        "-ec",
        [
          "mkdir -p /tmp/img/bin",
          "cp /var/tmp/busybox /tmp/img/bin/busybox",
          "tar -C /tmp/img -c . | podman import - localhost/busybox:test >/dev/null",
          "podman run --rm --network=none localhost/busybox:test /bin/busybox echo container-ok",
        ].join("\n"),
      ],
      { timeoutMs: 60_000 },
    );
    expect(r.stdout.trim(), r.stderr).toBe("container-ok");
  });

  it("keeps etcd data across stop and start", async () => {
    const key = Buffer.from("harness-test").toString("base64");
    const value = Buffer.from("kept").toString("base64");
    const put = await etcdPost(cluster, "/v3/kv/put", { key, value });
    expect(put.status, put.text).toBe(200);
    await cluster.etcd.stop();
    expect(cluster.etcd.pid).toBeUndefined();
    const m = cluster.machines[0];
    if (m === undefined) throw new Error("no machine");
    const down = await m.exec(["curl", "-sS", "--max-time", "2", ...CURL_TLS, `${cluster.endpoint}/health`]);
    expect(down.code).not.toBe(0);
    await cluster.etcd.start();
    const range = await etcdPost(cluster, "/v3/kv/range", { key });
    const body = JSON.parse(range.text) as { kvs?: { value: string }[] };
    expect(body.kvs?.[0]?.value).toBe(value);
  });

  it("powers a machine off cleanly and boots it again with the same overlay", async () => {
    const m = cluster.machines[0];
    if (m === undefined) throw new Error("no machine");
    await m.exec(["sh", "-c", "echo before > /var/tmp/marker"]);
    const oldLeader = m.leaderPid;
    const t = performance.now();
    await m.powerOff();
    console.error(`clean power-off in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    expect(m.running).toBe(false);
    expect(deadOrZombie(oldLeader)).toBe(true);
    // Clean: units were stopped in order. The journal is persistent and readable from the host while off.
    expect(await m.journal()).toContain("Reached target poweroff.target");
    await m.start();
    expect(m.leaderPid).not.toBe(oldLeader);
    expect((await m.exec(["cat", "/var/tmp/marker"])).stdout.trim()).toBe("before");
    expect((await m.exec(["cat", "/etc/machine-id"])).stdout.trim()).toBe(m.id);
  });

  it("survives abrupt machine loss and restarts the machine", async () => {
    const m = cluster.machines[1];
    const other = cluster.machines[2];
    if (m === undefined || other === undefined) throw new Error("no machine");
    const oldLeader = m.leaderPid;
    await m.kill();
    expect(m.running).toBe(false);
    expect(deadOrZombie(oldLeader)).toBe(true);
    const unreachable = await other.exec(["curl", "-sS", "--max-time", "2", `http://${m.ip}:7480/name`]);
    expect(unreachable.code).not.toBe(0);
    await m.start();
    const health = await m.exec([
      "curl",
      "-sS",
      "--max-time",
      "5",
      ...CURL_TLS,
      `${cluster.endpoint}/health`,
    ]);
    expect(health.stdout).toContain('"health":"true"');
  });

  it("tears down without leaving processes, mounts, cgroups, the bridge or files", async () => {
    const t = performance.now();
    await cluster.teardown();
    console.error(`teardown in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    expect(leftovers(cluster.runDir, cluster.bridge.name)).toEqual([]);
    await cluster.teardown(); // idempotent
  });
});

describe("harness: the agent unit", () => {
  let cluster: Cluster;
  let dist: string;

  beforeAll(async () => {
    // A stand-in for dist/agent.js: reports readiness the way the agent will and serves its environment.
    dist = await mkdtemp(path.join(os.tmpdir(), "flotilla-stub-dist-"));
    await writeFile(
      path.join(dist, "agent.js"),
      `const { execFileSync } = require("node:child_process");
const http = require("node:http");
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("FLOTILLA_")));
const [host, port] = process.env.FLOTILLA_API_LISTEN.split(":");
http.createServer((req, res) => res.end(JSON.stringify(env))).listen(Number(port), host, () => {
  execFileSync("systemd-notify", ["--ready"]);
});
`,
    );
    cluster = await Cluster.start({
      machines: 1,
      distDir: dist,
      metadata: [{ region: "test" }],
      agentEnv: { FLOTILLA_EXTRA: "with space" },
    });
  }, 900_000);

  afterAll(async () => {
    await cluster?.teardown();
    await rm(dist, { recursive: true, force: true });
  });

  it("runs the agent with Type=notify and its environment file", async () => {
    const m = cluster.machines[0];
    if (m === undefined) throw new Error("no machine");
    // Boot only finishes once the start job is done, i.e. once systemd accepted READY=1 from the agent's child.
    expect((await m.exec(["systemctl", "is-active", "flotilla-agent.service"])).stdout.trim()).toBe("active");
    const env = (await (await fetch(`http://${m.ip}:7480`)).json()) as Record<string, string>;
    expect(env).toEqual({
      FLOTILLA_ETCD_ENDPOINTS: cluster.endpoint,
      FLOTILLA_PUBLIC_IP: m.ip,
      FLOTILLA_METADATA: "region=test",
      FLOTILLA_API_LISTEN: "0.0.0.0:7480",
      FLOTILLA_EXTRA: "with space",
    });
  });
});

describe("harness: cleanup when the test process dies", () => {
  const bundle = path.join(repo, ".cache", `harness-child-${process.pid}.mjs`);

  beforeAll(async () => {
    // A separate process that owns a one-machine cluster, bundled because plain Node cannot load the TS harness.
    await build({
      stdin: {
        contents: `import { Cluster } from "./index.js";
const c = await Cluster.start({ machines: 1, agent: false });
console.log(JSON.stringify({ runDir: c.runDir, bridge: c.bridge.name }));
setInterval(() => {}, 60_000);
`,
        resolveDir: path.join(repo, "test/harness"),
        sourcefile: "child.ts",
        loader: "ts",
      },
      bundle: true,
      platform: "node",
      format: "esm",
      packages: "external",
      outfile: bundle,
      logLevel: "silent",
    });
  });

  afterAll(async () => {
    await rm(bundle, { force: true });
  });

  async function startChild() {
    const child = spawn(process.execPath, [bundle], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const lines = createInterface({ input: child.stdout });
    const first = await new Promise<string>((resolve, reject) => {
      lines.once("line", resolve);
      child.once("exit", (code) => reject(new Error(`child exited ${code} before its cluster was up`)));
    });
    const run = JSON.parse(first) as { runDir: string; bridge: string };
    expect(leftovers(run.runDir, run.bridge)).not.toEqual([]);
    return { child, exited, ...run };
  }

  it("tears down on SIGTERM", async () => {
    const { child, exited, runDir, bridge } = await startChild();
    child.kill("SIGTERM");
    expect(await exited).toBe(143);
    expect(leftovers(runDir, bridge)).toEqual([]);
  });

  it("leaves scripts/clean-harness able to remove what a SIGKILLed run left", async () => {
    const { child, exited, runDir, bridge } = await startChild();
    child.kill("SIGKILL");
    await exited;
    const clean = spawn("bash", [path.join(repo, "scripts/clean-harness"), runDir], { stdio: "inherit" });
    expect(await new Promise((resolve) => clean.on("exit", resolve))).toBe(0);
    expect(leftovers(runDir, bridge)).toEqual([]);
  });
});
