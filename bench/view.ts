// The registry view at 10 000 units against one real etcd (no machines): how long the paged list
// takes, what the view costs in memory, and what a snapshot, GET /units/NAME and a full
// `fleetctl list-units`-style walk over every page cost. For comparison, the read every pass and
// GET did before the view: one range over the whole prefix. Prints figures; asserts nothing.
//   npx tsx bench/view.ts [--units=10000] [--machines=100]

import { pino } from "pino";
import { createApiServer } from "../agent/api/server.js";
import { createEtcdClient } from "../agent/registry/client.js";
import { Keys } from "../agent/registry/keys.js";
import { openRegistry } from "../agent/registry/open.js";
import { unitHash } from "../agent/unit/index.js";
import { startEtcd } from "../test/harness/index.js";

const arg = (name: string, dflt: number) =>
  Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? dflt);
const UNITS = arg("units", 10_000);
const MACHINES = arg("machines", 100);
const TXN_OPS = 128;

const ms = (t: number) => `${(performance.now() - t).toFixed(1)} ms`;
const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;
const gc = () => (globalThis as { gc?: () => void }).gc?.();

const etcd = await startEtcd();
const client = createEtcdClient([etcd.endpoint]);
const keys = new Keys("/bench/");
try {
  // Each unit scheduled and reporting a state, as in a cluster where everything runs.
  let t = performance.now();
  const ops: { key: string; value: string }[] = [];
  for (let i = 0; i < MACHINES; i++) {
    const id = `m${String(i).padStart(31, "0")}`;
    ops.push({
      key: keys.machine(id),
      value: JSON.stringify({ id, publicIP: `10.1.${i >> 8}.${i & 255}`, metadata: {}, version: "bench" }),
    });
  }
  for (let i = 0; i < UNITS; i++) {
    const name = `bench-${String(i).padStart(5, "0")}.service`;
    const machineID = `m${String(i % MACHINES).padStart(31, "0")}`;
    const options = [
      { section: "Unit", name: "Description", value: `bench unit ${i}` },
      {
        section: "Service",
        name: "ExecStart",
        value: "/usr/bin/podman run --rm docker.io/library/nginx:stable",
      },
    ];
    ops.push({
      key: keys.unit(name),
      value: JSON.stringify({ name, options, hash: unitHash(options), desiredState: "launched" }),
    });
    ops.push({
      key: keys.schedule(name),
      value: JSON.stringify({ machineID, at: Date.now(), reason: "bench" }),
    });
    ops.push({
      key: keys.state(name, machineID),
      value: JSON.stringify({
        name,
        hash: unitHash(options),
        machineID,
        loadState: "loaded",
        activeState: "active",
        subState: "running",
        launched: true,
      }),
    });
  }
  for (let i = 0; i < ops.length; i += TXN_OPS) {
    await client.kv.txn({
      success: ops
        .slice(i, i + TXN_OPS)
        .map((o) => ({ request_put: { key: Buffer.from(o.key), value: Buffer.from(o.value) } })),
    });
  }
  const bytes = ops.reduce((n, o) => n + o.key.length + o.value.length, 0);
  console.log(
    `${UNITS} units, ${UNITS} placements, ${UNITS} states, ${MACHINES} machines: ${ops.length} keys, ${mb(bytes)}, written in ${ms(t)}`,
  );

  // Before: the one range over the whole prefix that every pass and GET made.
  t = performance.now();
  try {
    const res = await client.getAll().prefix(keys.prefix).exec();
    console.log(`before: one full prefix read: ${res.kvs.length} keys in ${ms(t)}`);
  } catch (err) {
    console.log(`before: one full prefix read fails after ${ms(t)}: ${String(err).slice(0, 120)}`);
  }

  // After: the paged list, then the view.
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  t = performance.now();
  const { registry, feed } = openRegistry(client, keys, pino({ level: "silent" }));
  await feed.ready();
  console.log(`after: initial paged list into the view: ${ms(t)} (${JSON.stringify(feed.health())})`);
  gc();
  console.log(
    `after: view heap: ${mb(process.memoryUsage().heapUsed - heapBefore)}${(globalThis as { gc?: unknown }).gc ? "" : " (run with --expose-gc for a settled figure)"}`,
  );

  t = performance.now();
  await registry.snapshot();
  console.log(`after: first snapshot() (builds it): ${ms(t)}`);
  t = performance.now();
  for (let i = 0; i < 1000; i++) await registry.snapshot();
  console.log(
    `after: snapshot() when nothing changed: ${((performance.now() - t) / 1000).toFixed(3)} ms each`,
  );
  const r = await client
    .put(keys.unit("bench-00000.service"))
    .value(JSON.stringify({ name: "bench-00000.service", options: [], hash: "x", desiredState: "inactive" }))
    .exec();
  await feed.current(Number(r.header.revision), 5000);
  t = performance.now();
  await registry.snapshot();
  console.log(`after: snapshot() after one change (rebuilds it): ${ms(t)}`);

  const api = createApiServer({
    registry,
    version: "bench",
    log: pino({ level: "silent" }),
    isReady: () => true,
    machineID: "m0",
  });
  const bound = await api.listen({ tcp: "127.0.0.1:0" });
  const base = `http://127.0.0.1:${bound.tcp?.port}`;
  await fetch(`${base}/fleet/v1/units/bench-04242.service`);
  t = performance.now();
  for (let i = 0; i < 100; i++)
    await (await fetch(`${base}/fleet/v1/units/bench-0${4200 + i}.service`)).text();
  console.log(`after: GET /fleet/v1/units/NAME: ${((performance.now() - t) / 100).toFixed(2)} ms each`);
  for (const [what, path, field] of [
    ["list-unit-files (GET /units, every page)", "/fleet/v1/units", "units"],
    ["list-units (GET /state, every page)", "/fleet/v1/state", "states"],
  ] as const) {
    t = performance.now();
    let pages = 0;
    let items = 0;
    let token: string | undefined;
    do {
      const res = (await (
        await fetch(`${base}${path}${token ? `?nextPageToken=${token}` : ""}`)
      ).json()) as Record<string, unknown>;
      pages++;
      items += (res[field] as unknown[] | undefined)?.length ?? 0;
      token = res.nextPageToken as string | undefined;
    } while (token);
    console.log(`after: ${what}: ${items} items in ${pages} pages, ${ms(t)}`);
  }
  await api.close();
  await feed.stop();
} finally {
  client.close();
  await etcd.close();
}
