// Where the time of "N units started at once" goes, on 3 real machines: each round submits N units
// at once, waits until every machine's systemd has them all active, and prints a timeline from
// the first request: PUTs answered, placements written by the engine, unit files written and starts
// issued by the agents (their own log lines), and systemd's "Started" (the machines' journals).
// Prints figures only; asserts nothing.
//   npx tsx bench/burst.ts [--burst=100] [--rounds=3] [--dist=DIR] [--log-level=debug] [--dump=MACHINE]

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { MachineBus } from "../test/harness/dbus.js";
import { Cluster, type Machine } from "../test/harness/index.js";
import { EtcdView, httpRequest, waitFor } from "../test/integration/support.js";

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const burst = Number(arg("burst") ?? 100);
const rounds = Number(arg("rounds") ?? 3);
const distDir = arg("dist");
const logLevel = arg("log-level");
const dump = arg("dump");
const run = promisify(execFile);

async function unitCall(api: string, method: "PUT" | "DELETE", name: string): Promise<void> {
  const res = await httpRequest(method, api, `/fleet/v1/units/${encodeURIComponent(name)}`, {
    headers: { "content-type": "application/json" },
    ...(method === "PUT"
      ? {
          body: JSON.stringify({
            desiredState: "launched",
            options: [{ section: "Service", name: "ExecStart", value: "/bin/sleep infinity" }],
          }),
        }
      : {}),
  });
  if (res.status !== (method === "PUT" ? 201 : 204))
    throw new Error(`${method} ${name}: ${res.status} ${res.text}`);
}

async function activeStates(bus: MachineBus, names: string[]): Promise<Map<string, string>> {
  const [rows] = await bus.call("org.freedesktop.systemd1.Manager", "ListUnitsByNames", "as", [names]);
  const out = new Map<string, string>();
  for (const row of rows as string[][])
    if (row[2] !== "not-found") out.set(row[0] as string, row[3] as string);
  return out;
}

interface Entry {
  at: number;
  unit?: string;
  message: string;
  agent: boolean;
}

/** The machine's journal since `sinceMs` (epoch ms): agent lines parsed from pino's JSON. */
async function journal(m: Machine, sinceMs: number): Promise<Entry[]> {
  const dir = `${(m as unknown as { dir: string }).dir}/merged/var/log/journal`;
  const since = `@${(sinceMs / 1000 - 1).toFixed(3)}`;
  const { stdout } = await run(
    "journalctl",
    ["--directory", dir, "--since", since, "-o", "json", "--no-pager"],
    {
      maxBuffer: 64 << 20,
    },
  );
  const out: Entry[] = [];
  for (const line of stdout.split("\n")) {
    if (!line) continue;
    const j = JSON.parse(line) as Record<string, unknown>;
    const msg = typeof j.MESSAGE === "string" ? j.MESSAGE : "";
    const at = Number(j.__REALTIME_TIMESTAMP) / 1000;
    if (msg.startsWith("{")) {
      try {
        const p = JSON.parse(msg) as { time?: string; msg?: string; unit?: string };
        out.push({ at: p.time ? Date.parse(p.time) : at, unit: p.unit, message: p.msg ?? "", agent: true });
      } catch {
        /* not pino */
      }
    } else {
      out.push({ at, message: msg, agent: false });
    }
  }
  return out;
}

const cluster = await Cluster.start({
  machines: 3,
  ...(distDir ? { distDir } : {}),
  ...(logLevel ? { agentEnv: { FLOTILLA_LOG_LEVEL: logLevel } } : {}),
});
const etcd = new EtcdView(cluster.endpoint);
const buses = await Promise.all(cluster.machines.map((m) => MachineBus.connect(m.dbusAddress)));
try {
  const api = cluster.machines[0]?.apiURL as string;
  await waitFor("a leader", async () => (await etcd.leader()) !== undefined, 30_000);
  for (let r = 0; r < rounds; r++) {
    const names = Array.from({ length: burst }, (_, i) => `burst${r}-${i}.service`);
    const allIn = async (pred: (s: Map<string, string>) => boolean) => {
      const per = await Promise.all(buses.map((b) => activeStates(b, names)));
      return pred(new Map(per.flatMap((m) => [...m])));
    };
    const wall0 = Date.now();
    const t0 = performance.now();
    const answered: number[] = [];
    await Promise.all(
      names.map(async (n) => {
        await unitCall(api, "PUT", n);
        answered.push(performance.now() - t0);
      }),
    );
    await waitFor("all active", () => allIn((s) => names.every((x) => s.get(x) === "active")), 120_000, 20);
    const active = performance.now() - t0;
    const entries = (await Promise.all(cluster.machines.map((m) => journal(m, wall0)))).flat();
    const ours = new Set(names);
    const span = (pick: (e: Entry) => boolean) => {
      const ts = entries.filter((e) => e.at >= wall0 - 5 && pick(e)).map((e) => e.at - wall0);
      ts.sort((a, b) => a - b);
      return ts.length === 0
        ? "-"
        : `${ts[0]?.toFixed(0)}…${ts[ts.length - 1]?.toFixed(0)} ms (${ts.length})`;
    };
    const forUnit = (prefix: string) => (e: Entry) =>
      e.agent && e.unit !== undefined && ours.has(e.unit) && e.message.startsWith(prefix);
    console.log(
      `round ${r + 1}: ${burst} units all active in systemd after ${(active / 1000).toFixed(2)} s\n` +
        `  PUTs answered   ${Math.min(...answered).toFixed(0)}…${Math.max(...answered).toFixed(0)} ms\n` +
        `  engine schedule ${span(forUnit("schedule "))}\n` +
        `  agent load      ${span(forUnit("load "))}\n` +
        `  agent start     ${span(forUnit("start "))}\n` +
        `  systemd Started ${span((e) => !e.agent && ours.has(/^Started (\S+?\.service)/.exec(e.message)?.[1] ?? ""))}\n` +
        `  reloads         ${span((e) => e.agent && e.message === "systemd reloaded")}`,
    );
    if (dump !== undefined) {
      const m = cluster.machines[Number(dump)] as Machine;
      for (const e of await journal(m, wall0)) {
        if (e.at - wall0 > active + 200) break;
        console.log(
          `    ${(e.at - wall0).toFixed(0).padStart(5)} ${e.agent ? "agent" : "     "} ${e.message}${e.unit ? ` [${e.unit}]` : ""}`,
        );
      }
    }
    await Promise.all(names.map((n) => unitCall(api, "DELETE", n)));
    await waitFor("all gone", () => allIn((s) => s.size === 0), 120_000, 100);
  }
} finally {
  for (const b of buses) b.close();
  etcd.close();
  await cluster.teardown();
}
