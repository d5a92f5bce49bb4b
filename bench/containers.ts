// Container benchmark on 2 real machines: the time from `fleetctl start` to the container serving
// its first HTTP request (image already on the machine), and the discovery DNS answer latency of a
// real agent under a bounded load from a second process (bench/dns.mjs's load generator). Prints
// figures only; asserts nothing.
//   npx tsx bench/containers.ts [--runs=10] [--queries=20000] [--concurrency=16]

import { fork } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import { buildTestImage } from "../test/fixtures/images/build.js";
import { Cluster, type Machine } from "../test/harness/index.js";
import { pushImage, startRegistry } from "../test/harness/registry.js";
import { EtcdView, fleetctl, unitDir, waitFor } from "../test/integration/support.js";

const arg = (name: string, fallback: number) =>
  Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const runs = arg("runs", 10);
const queries = arg("queries", 20_000);
const concurrency = arg("concurrency", 16);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function sh(m: Machine, script: string): Promise<string> {
  const r = await m.exec(["sh", "-c", script], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${m.name}: ${script}: exit ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

async function fc(api: string, args: string[], files: Record<string, string> = {}) {
  const dir = unitDir(files);
  try {
    return await fleetctl(api, args, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const { archive } = await buildTestImage();
const cluster = await Cluster.start({ machines: 2 });
const etcd = new EtcdView(cluster.endpoint);
const registry = await startRegistry({ listenAddress: `${cluster.bridge.ip}:0` });
try {
  const image = `${registry.host}/flotilla/busybox:latest`;
  await pushImage(archive, registry.url, "flotilla/busybox:latest");
  await Promise.all(
    cluster.machines.map((m) =>
      sh(
        m,
        `echo 'FLOTILLA_INSECURE_REGISTRIES="${registry.host}"' >> /etc/flotilla/agent.env && ` +
          `systemctl restart flotilla-agent.service && podman pull -q ${image}`,
      ),
    ),
  );
  const [target, other] = cluster.machines as [Machine, Machine];
  const api = other.apiURL;
  await waitFor(
    "2 machines and a leader",
    async () =>
      (await fc(api, ["list-machines", "--no-legend"])).stdout.trim().split("\n").length === 2 &&
      (await etcd.leader()) !== undefined,
    60_000,
  );

  // start → first HTTP answer, polled from this host every 5 ms; the unit is pinned to a machine
  // that has the image, and destroyed (container gone) between runs.
  const unit = `[Container]\nImage=${image}\nExec=httpd -f -p 80 -h /var/www\nPublishPort=8080:80\nPodmanArgs=--init\n\n[X-Fleet]\nMachineID=${target.id}\n`;
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const name = `bench-web-${i}.service`;
    const t0 = performance.now();
    const started = fc(api, ["start", "--no-block", name], { [name]: unit });
    await waitFor(
      `${name} serving`,
      async () => {
        const res = await fetch(`http://${target.ip}:8080/`, { signal: AbortSignal.timeout(1000) });
        return res.ok;
      },
      60_000,
      5,
    );
    times.push(performance.now() - t0);
    const r = await started;
    if (r.code !== 0) throw new Error(`fleetctl start ${name}: ${r.stderr}`);
    await fc(api, ["destroy", name]);
    await waitFor(
      "no container",
      async () => (await sh(target, "podman ps -a -q")).trim() === "",
      60_000,
      100,
    );
  }
  times.sort((a, b) => a - b);
  console.log(
    `container start: fleetctl start → first HTTP answer over ${runs} runs (image present): ` +
      `p50 ${percentile(times, 50).toFixed(0)} ms, min ${times[0]?.toFixed(0)} ms, max ${times.at(-1)?.toFixed(0)} ms`,
  );

  // Two instances of `web`, then a second process sends A and SRV queries to the agent on `target`.
  const web = `[Container]\nImage=${image}\nExec=httpd -f -p 80 -h /var/www\nPublishPort=8080:80\nPodmanArgs=--init\n\n[X-Fleet]\nConflicts=web@*.service\n`;
  const start = await fc(api, ["start", "web@1.service", "web@2.service"], { "web@.service": web });
  if (start.code !== 0) throw new Error(`fleetctl start web@1 web@2: ${start.stderr}`);
  await waitFor(
    "both records in DNS",
    async () =>
      (await sh(other, `dig +short @${target.ip} web.service.flotilla A`)).trim().split("\n").length === 2,
    30_000,
  );
  const dnsBench = path.join(import.meta.dirname, "dns.mjs");
  const child = fork(dnsBench, ["client", "53", String(queries), String(concurrency), target.ip]);
  const result = await new Promise<{ latencies: number[]; seconds: number; lost: number; bad: number }>(
    (resolve, reject) => {
      child.once("message", (m) => resolve(m as never));
      child.once("exit", (code) => reject(new Error(`load generator exited ${code}`)));
    },
  );
  const lat = result.latencies.sort((a, b) => a - b);
  const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`;
  console.log(
    `agent DNS on a machine (2 live instances, UDP over the cluster bridge, ${concurrency} in flight, A and SRV): ` +
      `${lat.length} answers, p50 ${us(percentile(lat, 50))}, p99 ${us(percentile(lat, 99))}, max ${us(lat.at(-1) ?? Number.NaN)}, ` +
      `${(lat.length / result.seconds).toFixed(0)} queries/s; ${result.lost} lost, ${result.bad} wrong`,
  );
  await fc(api, ["destroy", "web@1.service", "web@2.service"]);
} finally {
  etcd.close();
  await registry.stop();
  await cluster.teardown();
}
