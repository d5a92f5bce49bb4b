// The discovery DNS server on a real socket, asked by the real `dig` (BIND's), first from a
// hand-loaded cache, then fed from a real etcd through the watch, the way the agent runs it.

import dgram from "node:dgram";
import net from "node:net";
import type { Etcd3 } from "etcd3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { feedServiceCache, ServiceCache, type ServiceFeed } from "../../agent/discovery/cache.js";
import { encodeServiceRecord, type ServiceRecord } from "../../agent/discovery/record.js";
import { type DnsServer, startDnsServer } from "../../agent/discovery/server.js";
import { createEtcdClient } from "../../agent/registry/client.js";
import { Keys } from "../../agent/registry/keys.js";
import { type Etcd, ensureHostPackages, startEtcd } from "../harness/index.js";
import { run, waitFor } from "../harness/proc.js";

const log = pino({ level: "silent" });
const M1 = "1a2b3c4d".padEnd(32, "0");
const M2 = "5e6f7a8b".padEnd(32, "0");

function record(machineID: string, unit: string, ip: string, hostPort: number): ServiceRecord {
  return { service: "web", machineID, unit, ip, ports: [{ container: 80, host: hostPort, protocol: "tcp" }] };
}

async function dig(server: DnsServer, ...args: string[]): Promise<string> {
  const r = await run(
    "dig",
    [`@${server.address}`, "-p", String(server.port), "+tries=1", "+time=2", ...args],
    {
      timeoutMs: 10_000,
    },
  );
  if (r.code !== 0) throw new Error(`dig ${args.join(" ")} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

const lines = (out: string) => out.trim().split("\n").filter(Boolean).sort();
const status = (out: string) => /status: (\w+)/.exec(out)?.[1];

beforeAll(() => ensureHostPackages([{ need: "dig", pkg: "dnsutils" }]), 300_000);

describe("discovery DNS answered to dig", () => {
  const keys = new Keys("/t/");
  const cache = new ServiceCache(keys);
  let server: DnsServer;

  beforeAll(async () => {
    const records = [
      record(M1, "web@1.service", "10.5.0.1", 8080),
      record(M2, "web@2.service", "10.5.0.2", 8081),
    ];
    // 60 instances of "big": more than fits in 512 bytes, so plain UDP answers are truncated.
    for (let i = 0; i < 60; i++) {
      records.push({
        ...record(`${i}`.padStart(8, "0"), `big@${i}.service`, `10.6.0.${i + 1}`, 9000),
        service: "big",
      });
    }
    cache.load(
      records.map((r) => ({
        key: keys.service(r.service, r.machineID, r.unit),
        value: encodeServiceRecord(r),
      })),
    );
    server = await startDnsServer({ address: "127.0.0.1", port: 0, zone: cache, log });
  });
  afterAll(() => server?.close());

  it("answers A with every instance", async () => {
    expect(lines(await dig(server, "+short", "web.service.flotilla", "A"))).toEqual(["10.5.0.1", "10.5.0.2"]);
    const full = await dig(server, "web.service.flotilla", "A");
    expect(status(full)).toBe("NOERROR");
    expect(full).toMatch(/flags: qr aa rd;/);
  });

  it("answers SRV in both forms, over UDP and TCP, with the targets' addresses", async () => {
    const srv = ["1 1 8080 1a2b3c4d.node.flotilla.", "1 1 8081 5e6f7a8b.node.flotilla."];
    expect(lines(await dig(server, "+short", "web.service.flotilla", "SRV"))).toEqual(srv);
    expect(lines(await dig(server, "+short", "+tcp", "_web._tcp.service.flotilla", "SRV"))).toEqual(srv);
    const additional = await dig(server, "+noall", "+additional", "web.service.flotilla", "SRV");
    expect(lines(additional).map((l) => l.split(/\s+/).join(" "))).toEqual([
      "1a2b3c4d.node.flotilla. 5 IN A 10.5.0.1",
      "5e6f7a8b.node.flotilla. 5 IN A 10.5.0.2",
    ]);
    expect(lines(await dig(server, "+short", "5e6f7a8b.node.flotilla", "A"))).toEqual(["10.5.0.2"]);
  });

  it("says NXDOMAIN for an unknown service and REFUSED outside the zone", async () => {
    const unknown = await dig(server, "nope.service.flotilla", "A");
    expect(status(unknown)).toBe("NXDOMAIN");
    expect(unknown).toMatch(/flotilla\.\s+5\s+IN\s+SOA\s+ns\.flotilla\. hostmaster\.flotilla\./);
    expect(status(await dig(server, "example.com", "A"))).toBe("REFUSED");
  });

  it("truncates a large UDP answer and dig gets it whole over TCP", async () => {
    const out = await dig(server, "+noedns", "big.service.flotilla", "A");
    expect(out).toMatch(/Truncated, retrying in TCP mode/);
    expect(out).toMatch(/ANSWER: 60,/);
    expect(lines(await dig(server, "+short", "+ignore", "+noedns", "big.service.flotilla", "A"))).toEqual([]);
  });

  it("survives a burst of malformed UDP and TCP input", async () => {
    const sock = dgram.createSocket("udp4");
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let i = 0; i < 2000; i++) {
      const packet = Buffer.from(Array.from({ length: random() % 600 }, () => random() & 0xff));
      await new Promise<void>((resolve) => sock.send(packet, server.port, "127.0.0.1", () => resolve()));
    }
    sock.close();
    for (const junk of [
      Buffer.from([0xff, 0xff, 1, 2, 3]),
      Buffer.from([0, 3, 1, 2, 3]),
      Buffer.alloc(70_000, 0x41),
    ]) {
      await new Promise<void>((resolve) => {
        const c = net.connect(server.port, "127.0.0.1", () => c.end(junk));
        c.on("error", () => resolve());
        c.on("close", () => resolve());
        c.resume();
      });
    }
    expect(lines(await dig(server, "+short", "web.service.flotilla", "A"))).toEqual(["10.5.0.1", "10.5.0.2"]);
    expect(lines(await dig(server, "+short", "+tcp", "web.service.flotilla", "A"))).toEqual([
      "10.5.0.1",
      "10.5.0.2",
    ]);
  });
});

describe("discovery DNS fed by an etcd watch", () => {
  const keys = new Keys("/t/");
  const cache = new ServiceCache(keys);
  let etcd: Etcd;
  let client: Etcd3;
  let feed: ServiceFeed;
  let server: DnsServer;

  beforeAll(async () => {
    etcd = await startEtcd();
    client = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
    // A record from before the agent started must be loaded by the initial range read.
    const early = record(M1, "web@1.service", "10.7.0.1", 8080);
    await client.put(keys.service("web", M1, "web@1.service")).value(encodeServiceRecord(early));
    feed = feedServiceCache(client, keys, cache, log);
    await feed.ready;
    server = await startDnsServer({ address: "127.0.0.1", port: 0, zone: cache, log });
  });
  afterAll(async () => {
    await server?.close();
    await feed?.stop();
    client?.close();
    await etcd?.close();
  });

  const answers = async (name: string, type: string) => lines(await dig(server, "+short", name, type));
  const until = (name: string, type: string, want: string[]) =>
    waitFor(
      `${name} ${type} = ${want.join(",")}`,
      async () => ((await answers(name, type)).join(",") === want.join(",") ? true : undefined),
      5000,
      50,
    );

  it("serves records that were in etcd before the watch started", async () => {
    expect(await answers("web.service.flotilla", "A")).toEqual(["10.7.0.1"]);
  });

  it("follows records put, moved and deleted, and those that vanish with a lease", async () => {
    const lease = client.lease(2);
    const second = record(M2, "web@2.service", "10.7.0.2", 8081);
    await lease.put(keys.service("web", M2, "web@2.service")).value(encodeServiceRecord(second));
    await until("web.service.flotilla", "A", ["10.7.0.1", "10.7.0.2"]);
    await until("_web._tcp.service.flotilla", "SRV", [
      "1 1 8080 1a2b3c4d.node.flotilla.",
      "1 1 8081 5e6f7a8b.node.flotilla.",
    ]);

    // web@1 moves to M2: its new record appears and the old one is deleted.
    const moved = record(M2, "web@1.service", "10.7.0.2", 8082);
    await lease.put(keys.service("web", M2, "web@1.service")).value(encodeServiceRecord(moved));
    await client.delete().key(keys.service("web", M1, "web@1.service"));
    await until("web.service.flotilla", "A", ["10.7.0.2"]);
    await until("web.service.flotilla", "SRV", [
      "1 1 8081 5e6f7a8b.node.flotilla.",
      "1 1 8082 5e6f7a8b.node.flotilla.",
    ]);

    // M2 "dies": its lease is revoked, so all of its records go at once.
    await lease.revoke();
    await until("web.service.flotilla", "A", []);
    expect(status(await dig(server, "web.service.flotilla", "A"))).toBe("NXDOMAIN");
  });

  it("ignores a corrupt value without losing the rest", async () => {
    await client.put(keys.service("api", M1, "api.service")).value("{not json");
    const ok = record(M1, "db.service", "10.7.0.9", 5432);
    await client
      .put(keys.service("db", M1, "db.service"))
      .value(encodeServiceRecord({ ...ok, service: "db" }));
    await until("db.service.flotilla", "A", ["10.7.0.9"]);
    expect(status(await dig(server, "api.service.flotilla", "A"))).toBe("NXDOMAIN");
  });
});
