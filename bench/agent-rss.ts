// Agent memory on an idle machine: one real machine, N units started at once and left running,
// then the agent's RSS once the machine has been quiet for a while. Prints figures only.
//   npx tsx bench/agent-rss.ts [--units=100] [--idle-s=30] [--dist=DIR] [--variants='A|B|…']
// Each variant is `[VAR=value …] [node flags …]` (empty: the agent as its unit file runs it), tried
// in turn on the same machine by restarting the agent with a drop-in that replaces its ExecStart
// and adds the variables, to compare V8 flags and allocator settings without rebuilding the image.

import { Cluster, type Machine } from "../test/harness/index.js";
import { EtcdView, httpRequest, waitFor } from "../test/integration/support.js";

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const count = Number(arg("units") ?? 100);
const idleSeconds = Number(arg("idle-s") ?? 30);
const distDir = arg("dist");
const variants = (arg("variants") ?? "").split("|");
const DROP_IN_DIR = "/run/systemd/system/flotilla-agent.service.d";

async function putUnits(api: string, names: string[]): Promise<void> {
  await Promise.all(
    names.map(async (name) => {
      const res = await httpRequest("PUT", api, `/fleet/v1/units/${encodeURIComponent(name)}`, {
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          desiredState: "launched",
          options: [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }],
        }),
      });
      if (res.status !== 201) throw new Error(`PUT ${name}: ${res.status} ${res.text}`);
    }),
  );
}

async function agentMemory(machine: Machine): Promise<string> {
  const pid = (
    await machine.exec(["systemctl", "show", "-p", "MainPID", "--value", "flotilla-agent.service"])
  ).stdout.trim();
  const status = (await machine.exec(["cat", `/proc/${pid}/status`])).stdout;
  const mb = (field: string) =>
    (Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN) / 1024).toFixed(1);
  // Resident kB per mapping, mappings of one file (or of one kind: [heap], [stack], anonymous) together.
  const smaps = (await machine.exec(["cat", `/proc/${pid}/smaps`])).stdout;
  const byMapping = new Map<string, number>();
  let current = "";
  for (const line of smaps.split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) current = head[1] || "anonymous";
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) byMapping.set(current, (byMapping.get(current) ?? 0) + Number(rss[1]));
  }
  const top = [...byMapping]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([name, kb]) => `${name.replace(/^.*\//, "")} ${(kb / 1024).toFixed(1)}`)
    .join(", ");
  // V8's own figures, from the agent's /metrics (prom-client's default process metrics).
  const metrics = (await httpRequest("GET", machine.apiURL, "/metrics")).text;
  const gauge = (name: string) =>
    (Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1] ?? Number.NaN) / 1048576).toFixed(1);
  const spaces = [...metrics.matchAll(/^nodejs_heap_space_size_used_bytes\{space="(\w+)"\} (\S+)$/gm)]
    .filter((m) => Number(m[2]) >= 512 * 1024)
    .map((m) => `${m[1]} ${(Number(m[2]) / 1048576).toFixed(1)}`)
    .join(", ");
  return (
    `RSS ${mb("VmRSS")} MB (peak ${mb("VmHWM")} MB; anon ${mb("RssAnon")} MB, file ${mb("RssFile")} MB)\n` +
    `  resident by mapping (MB): ${top}\n` +
    `  V8 heap ${gauge("nodejs_heap_size_used_bytes")} used of ${gauge("nodejs_heap_size_total_bytes")} MB (${spaces}); ` +
    `external ${gauge("nodejs_external_memory_bytes")} MB`
  );
}

const cluster = await Cluster.start({ machines: 1, ...(distDir ? { distDir } : {}) });
const etcd = new EtcdView(cluster.endpoint);
try {
  const machine = cluster.machines[0];
  if (!machine) throw new Error("no machine");
  const allActive = () =>
    waitFor(
      `${count} units active`,
      async () => {
        const all = await etcd.client.getAll().prefix(`${etcd.keys.prefix}states/`).strings();
        return Object.values(all).filter((v) => v.includes('"activeState":"active"')).length >= count;
      },
      120_000,
      200,
    );
  await putUnits(
    machine.apiURL,
    Array.from({ length: count }, (_, i) => `rss-${i}.service`),
  );
  await allActive();
  for (const [i, variant] of variants.entries()) {
    if (i > 0 || variant !== "") {
      const words = variant.split(/\s+/).filter(Boolean);
      const env = words.filter((w) => /^[A-Z_]+=/.test(w));
      const flags = words.filter((w) => !env.includes(w));
      const dropIn = [
        "[Service]",
        ...env.map((e) => `Environment=${e}`),
        "ExecStart=",
        `ExecStart=/usr/lib/flotilla/node ${flags.join(" ")} /usr/lib/flotilla/dist/agent.js`,
      ].join("\n");
      // A restart hands the units back and forth: the agent unloads them as it stops.
      await machine.exec([
        "sh",
        "-c",
        `mkdir -p ${DROP_IN_DIR} && printf '%s\\n' '${dropIn}' > ${DROP_IN_DIR}/bench.conf && systemctl daemon-reload && systemctl restart flotilla-agent.service`,
      ]);
      await allActive();
    }
    await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
    console.log(
      `agent on an idle machine with ${count} units, ${idleSeconds} s idle, "${variant}": ${await agentMemory(machine)}`,
    );
  }
} finally {
  etcd.close();
  await cluster.teardown();
}
