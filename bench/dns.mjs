// DNS answer latency of the discovery server under a simple load from a second process.
//   node bench/dns.mjs [--queries 50000] [--concurrency 32] [--instances 20]
// This process runs the real server (agent/discovery, bundled with esbuild) on 127.0.0.1 over a
// cache of N instances of "web"; a forked child sends A and SRV queries over UDP, keeping
// `concurrency` in flight, and reports per-query latency. Loopback only; the count is bounded.

import { fork } from "node:child_process";
import dgram from "node:dgram";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const self = fileURLToPath(import.meta.url);
const root = path.resolve(path.dirname(self), "..");

// `client PORT QUERIES CONCURRENCY [HOST]` is also the load generator of bench/containers.ts,
// pointed at a real agent on a test machine.
if (process.argv[2] === "client") await client(process.argv.slice(3));
else await server();

async function server() {
  const { values } = parseArgs({
    options: {
      queries: { type: "string", default: "50000" },
      concurrency: { type: "string", default: "32" },
      instances: { type: "string", default: "20" },
    },
  });
  const queries = Number(values.queries);
  const concurrency = Number(values.concurrency);
  const instances = Number(values.instances);
  if (![queries, concurrency, instances].every((n) => Number.isInteger(n) && n > 0) || queries > 1_000_000) {
    throw new Error("--queries (at most 1000000), --concurrency and --instances must be positive integers");
  }

  const lib = await bundle();
  const keys = new lib.Keys();
  const cache = new lib.ServiceCache(keys);
  cache.load(
    Array.from({ length: instances }, (_, i) => {
      const record = {
        service: "web",
        machineID: i.toString(16).padStart(32, "0"),
        unit: `web@${i}.service`,
        ip: `10.0.${i >> 8}.${i & 255}`,
        ports: [{ container: 80, host: 8000 + i, protocol: "tcp" }],
      };
      return {
        key: keys.service(record.service, record.machineID, record.unit),
        value: JSON.stringify(record),
      };
    }),
  );
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  const dns = await lib.startDnsServer({ address: "127.0.0.1", port: 0, zone: cache, log: quiet });

  const child = fork(self, ["client", String(dns.port), String(queries), String(concurrency)]);
  const result = await new Promise((resolve, reject) => {
    child.once("message", resolve);
    child.once("exit", (code) => reject(new Error(`load generator exited ${code}`)));
  });
  await dns.close();

  const { latencies, seconds, lost, bad } = result;
  latencies.sort((a, b) => a - b);
  const pct = (p) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  const us = (ms) => `${(ms * 1000).toFixed(0)} µs`;
  console.log(
    `dns: ${latencies.length} answers (${instances} instances, ${concurrency} in flight, UDP loopback, A and SRV)`,
  );
  console.log(`  p50 ${us(pct(50))}  p99 ${us(pct(99))}  max ${us(latencies.at(-1) ?? NaN)}`);
  console.log(`  ${(latencies.length / seconds).toFixed(0)} queries/s; ${lost} lost, ${bad} wrong`);
  if (bad > 0) process.exitCode = 1;
}

/** Bundles the discovery modules so this script runs on plain node without a TypeScript loader. */
async function bundle() {
  const { build } = await import("esbuild");
  const outfile = path.join(root, ".cache", "bench", "dns-lib.mjs");
  await mkdir(path.dirname(outfile), { recursive: true });
  await build({
    stdin: {
      contents: [
        'export { ServiceCache } from "./agent/discovery/cache.ts";',
        'export { startDnsServer } from "./agent/discovery/server.ts";',
        'export { Keys } from "./agent/registry/keys.ts";',
      ].join("\n"),
      resolveDir: root,
      loader: "ts",
    },
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // Only types come from the etcd client; nothing of it is needed at run time.
    external: ["etcd3"],
    logLevel: "warning",
  });
  return import(pathToFileURL(outfile).href);
}

/** The second process: a UDP client with a fixed number of queries in flight. */
async function client([portText, totalText, concurrencyText, host = "127.0.0.1"]) {
  const [port, total, concurrency] = [portText, totalText, concurrencyText].map(Number);
  const QUERY_TIMEOUT_MS = 1000;
  const sock = dgram.createSocket("udp4");
  const inflight = new Map();
  const latencies = [];
  let sent = 0;
  let lost = 0;
  let bad = 0;
  let nextId = 0;
  const started = performance.now();

  await new Promise((resolve) => {
    const done = () => latencies.length + lost + bad === total && resolve();
    const send = () => {
      if (sent >= total) return;
      sent++;
      // Ids cycle through 16 bits; with at most `concurrency` in flight they never collide.
      const id = nextId;
      nextId = (nextId + 1) & 0xffff;
      const type = sent % 2 === 0 ? 1 : 33;
      const timer = setTimeout(() => {
        inflight.delete(id);
        lost++;
        done();
        send();
      }, QUERY_TIMEOUT_MS);
      inflight.set(id, { at: performance.now(), timer });
      sock.send(query(id, "web.service.flotilla", type), port, host);
    };
    sock.on("message", (msg) => {
      const id = msg.readUInt16BE(0);
      const q = inflight.get(id);
      if (!q) return;
      inflight.delete(id);
      clearTimeout(q.timer);
      const rcode = msg.readUInt16BE(2) & 0xf;
      const answers = msg.readUInt16BE(6);
      if (rcode === 0 && answers > 0) latencies.push(performance.now() - q.at);
      else bad++;
      done();
      send();
    });
    for (let i = 0; i < Math.min(concurrency, total); i++) send();
  });
  const seconds = (performance.now() - started) / 1000;
  sock.close();
  process.send({ latencies, seconds, lost, bad }, () => process.exit(0));
}

/** A standard query with RD set and an EDNS0 OPT record offering 1232 bytes. */
function query(id, name, type) {
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(1, 10);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  const opt = Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, ...labels, Buffer.from([0]), tail, opt]);
}
