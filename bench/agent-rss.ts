// Agent memory on an idle machine: one real machine, N units started at once and left running,
// then the agent's RSS once the cluster has been quiet for a while. Prints figures only.
//   npx tsx bench/agent-rss.ts [--units=100] [--idle-s=30] [--dist=DIR] [--node-options='--flag …']
// --node-options runs the agent with NODE_OPTIONS (through its environment file), to try V8 flags
// without rebuilding the image; --dist runs another build of the agent.

import { Cluster } from "../test/harness/index.js";
import { EtcdView, waitFor } from "../test/integration/support.js";

const arg = (name: string) =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? undefined;
const count = Number(arg("units") ?? 100);
const idleSeconds = Number(arg("idle-s") ?? 30);
const distDir = arg("dist");
const nodeOptions = arg("node-options");

const cluster = await Cluster.start({
  machines: 1,
  ...(distDir ? { distDir } : {}),
  ...(nodeOptions ? { agentEnv: { NODE_OPTIONS: nodeOptions } } : {}),
});
const etcd = new EtcdView(cluster.endpoint);
try {
  const machine = cluster.machines[0];
  if (!machine) throw new Error("no machine");
  const names = Array.from({ length: count }, (_, i) => `rss-${i}.service`);
  await Promise.all(
    names.map(async (name) => {
      const res = await fetch(`${machine.apiURL}/fleet/v1/units/${encodeURIComponent(name)}`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          desiredState: "launched",
          options: [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }],
        }),
      });
      if (res.status !== 201) throw new Error(`PUT ${name}: ${res.status} ${await res.text()}`);
    }),
  );
  await waitFor(
    `${count} units active`,
    async () => {
      const all = await etcd.client
        .getAll()
        .prefix(etcd.keys.prefix + "states/")
        .strings();
      return Object.values(all).filter((v) => v.includes('"activeState":"active"')).length >= count;
    },
    120_000,
    200,
  );
  await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
  const pid = (
    await machine.exec(["systemctl", "show", "-p", "MainPID", "--value", "flotilla-agent.service"])
  ).stdout.trim();
  const status = (await machine.exec(["cat", `/proc/${pid}/status`])).stdout;
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  console.log(
    `agent RSS on an idle machine with ${count} units (after ${idleSeconds} s idle${nodeOptions ? `, NODE_OPTIONS=${nodeOptions}` : ""}): ` +
      `${(kb("VmRSS") / 1024).toFixed(1)} MB (peak ${(kb("VmHWM") / 1024).toFixed(1)} MB; anon ${(kb("RssAnon") / 1024).toFixed(1)} MB, file ${(kb("RssFile") / 1024).toFixed(1)} MB)`,
  );
} finally {
  etcd.close();
  await cluster.teardown();
}
