// Image bench: build times (last cold stages + a warm rebuild now), image and payload sizes, and
// boot time under TCG to the login prompt and to the agent registered in an etcd on the host.
// Usage: node bench/image.mjs [--cold]   (--cold drops .cache/image first: minutes)

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";

const repo = resolve(import.meta.dirname, "..");
const MiB = 1024 * 1024;
const mib = (b) => `${(b / MiB).toFixed(1)} MiB`;

// The VM helper is TypeScript: bundle it for this run.
const tools = join(repo, ".cache/image/tools/bench");
await build({
  entryPoints: [join(repo, "scripts/lib/image-vm.ts")],
  outdir: tools,
  bundle: true,
  platform: "node",
  format: "esm",
  outExtension: { ".js": ".mjs" },
  logLevel: "warning",
});
const { Vm, freePort } = await import(join(tools, "image-vm.mjs"));

function timedBuild() {
  const t0 = Date.now();
  execFileSync(join(repo, "scripts/build-image"), ["--test-keys"], {
    cwd: repo,
    stdio: ["ignore", "ignore", "inherit"],
  });
  return (Date.now() - t0) / 1000;
}

if (process.argv.includes("--cold")) rmSync(join(repo, ".cache/image"), { recursive: true, force: true });
const first = timedBuild();
const firstStages = JSON.parse(readFileSync(join(repo, "dist/image/build.json"), "utf8")).stages;
const warm = timedBuild();
const b = JSON.parse(readFileSync(join(repo, "dist/image/build.json"), "utf8"));
const manifest = JSON.parse(readFileSync(join(repo, "dist/image/payload/manifest.json"), "utf8"));

const lines = ["== build"];
lines.push(
  `first build now: ${first.toFixed(1)} s (${Object.entries(firstStages)
    .map(([k, v]) => `${k} ${v.cached ? "cached" : `${v.seconds.toFixed(1)} s`}`)
    .join(", ")})`,
);
lines.push(`warm build (nothing changed): ${warm.toFixed(1)} s`);
lines.push("== sizes");
lines.push(`disk.raw ${mib(b.rawBytes)} virtual, disk.qcow2 ${mib(b.qcow2Bytes)}`);
for (const [name, f] of Object.entries(manifest.files)) lines.push(`payload/${name} ${mib(f.size)}`);
lines.push(
  `USR payload ${mib(b.sizes.usrImage)} vs Flatcar's 1 GiB USR limit; kernel + initrd ${mib(b.sizes.kernel + b.sizes.initrd)} vs Flatcar's < 60 MiB`,
);
for (const l of b.budget)
  lines.push(`budget ${l.ok ? "ok" : "OVER"}: ${l.what}: ${mib(l.actual)} of ${mib(l.limit)}`);

// Boot: etcd on the host, reached by the guest at 10.0.2.2.
const work = mkdtempSync(join(tmpdir(), "flotilla-image-bench-"));
const etcdPort = await freePort();
const peerPort = await freePort();
const etcd = spawn(
  "etcd",
  [
    "--data-dir",
    join(work, "etcd"),
    "--listen-client-urls",
    `http://127.0.0.1:${etcdPort}`,
    "--advertise-client-urls",
    `http://127.0.0.1:${etcdPort}`,
    "--listen-peer-urls",
    `http://127.0.0.1:${peerPort}`,
    "--initial-advertise-peer-urls",
    `http://127.0.0.1:${peerPort}`,
    "--initial-cluster",
    `default=http://127.0.0.1:${peerPort}`,
  ],
  { stdio: "ignore" },
);
const agentJson = JSON.stringify({ "etcd-endpoints": `http://10.0.2.2:${etcdPort}` });
const config = join(work, "config.ign");
writeFileSync(
  config,
  JSON.stringify({
    ignition: { version: "3.4.0" },
    storage: {
      files: [
        {
          path: "/etc/flotilla/agent.json",
          contents: { source: `data:;base64,${Buffer.from(agentJson).toString("base64")}` },
        },
      ],
    },
  }),
);
const disk = join(work, "disk.raw");
execFileSync("cp", ["--sparse=always", join(repo, "dist/image/disk.raw"), disk]);
const vm = new Vm({ disk, stateDir: join(work, "vm"), ignition: config });
const t0 = Date.now();
await vm.start();
lines.push("== boot (TCG, first boot with provisioning)");
try {
  await vm.waitForSerial(/login: /, 300_000);
  lines.push(`to login prompt: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const deadline = Date.now() + 180_000;
  let ready = false;
  while (!ready && Date.now() < deadline) {
    const keys = execFileSync(
      "etcdctl",
      [`--endpoints=http://127.0.0.1:${etcdPort}`, "get", "--prefix", "--keys-only", "/flotilla/machines/"],
      {
        encoding: "utf8",
        env: { ...process.env, ETCDCTL_API: "3" },
      },
    );
    ready = keys.trim() !== "";
    if (!ready) await new Promise((r) => setTimeout(r, 1000));
  }
  lines.push(
    ready
      ? `to agent registered in etcd: ${((Date.now() - t0) / 1000).toFixed(1)} s`
      : "agent: never registered within 3 min after login prompt",
  );
  const off = await vm.powerOff();
  lines.push(`clean power-off (QMP): ${off.seconds.toFixed(1)} s`);
} finally {
  await vm.kill();
  etcd.kill();
  rmSync(work, { recursive: true, force: true });
}
process.stdout.write(`${lines.join("\n")}\n`);
