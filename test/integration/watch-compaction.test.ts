// Watches that etcd ends, against a real etcd: the agent's own watches (engine leader key, this
// machine's key, service records) resume from their last revision after etcd comes back; when that
// revision was compacted meanwhile, etcd ends them. The agent must carry on, with new watches, and
// never cancel a watch etcd already ended: etcd answers that cancel too, etcd3 throws on an answer
// about a watch it no longer knows, inside the stream's handler, and the agent process dies
// (docs/architecture.md, "Watches etcd ended"). No machines are needed.

import { randomBytes } from "node:crypto";
import type { Etcd3, Watcher } from "etcd3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LeaderElection } from "../../agent/cluster/leader.js";
import { Membership } from "../../agent/cluster/membership.js";
import { feedServiceCache, ServiceCache, type ServiceFeed } from "../../agent/discovery/cache.js";
import type { Machine } from "../../agent/model.js";
import { createEtcdClient } from "../../agent/registry/client.js";
import { Keys } from "../../agent/registry/keys.js";
import { type Etcd, startEtcd } from "../harness/index.js";
import { waitFor } from "./support.js";

const TTL = 5;
const machine: Machine = {
  id: "c".repeat(32),
  publicIP: "192.0.2.10",
  metadata: {},
  version: "9.9.9-test",
  runID: "00000000-0000-4000-8000-00000000000c",
};

let etcd: Etcd;
/** The agent's client: every watch below shares its one watch stream, as in the agent. */
let client: Etcd3;
/** Another client, standing in for the rest of the cluster. */
let other: Etcd3;
let keys: Keys;
let membership: Membership;
let election: LeaderElection;
let serviceFeed: ServiceFeed;
/** Errors thrown out of etcd3's stream handlers while the test runs: each would end the agent. */
const uncaught: unknown[] = [];
const onUncaught = (err: unknown) => uncaught.push(err);
const PROCESS_EVENTS = ["uncaughtException", "unhandledRejection"] as const;

beforeAll(async () => {
  for (const e of PROCESS_EVENTS) process.on(e, onUncaught);
  etcd = await startEtcd();
  client = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
  other = createEtcdClient([etcd.endpoint], { tls: etcd.tls });
  keys = new Keys(`/watch-compaction-${randomBytes(4).toString("hex")}/`);
  const log = pino({ level: "silent" });
  membership = new Membership(client, keys, machine, TTL, log);
  await membership.join();
  election = new LeaderElection(client, keys, membership, log);
  election.start();
  await waitFor("the leader key read", async () => election.observed() !== "unknown", 10_000);
  expect(await election.campaign()).toBe(true);
  serviceFeed = feedServiceCache(client, keys, new ServiceCache(keys), log);
  await serviceFeed.ready;
}, 60_000);

afterAll(async () => {
  for (const e of PROCESS_EVENTS) process.off(e, onUncaught);
  await election?.stop();
  await serviceFeed?.stop();
  await membership?.leave();
  client?.close();
  other?.close();
  await etcd?.close();
});

describe("a compaction while etcd was away", () => {
  let anchor: Watcher;

  it("ends the agent's watches, and the agent carries on", async () => {
    // A watch that has seen a change after the compaction survives it, as the view's fresh watch
    // does in the agent: it keeps the shared stream open while etcd ends the others.
    const anchorKey = `${keys.prefix}test/anchor`;
    anchor = await client.watch().key(anchorKey).create();
    const anchorErrors: unknown[] = [];
    anchor.on("error", (err) => anchorErrors.push(err));
    for (let i = 0; i < 5; i++) await other.put(`${keys.prefix}test/filler`).value(String(i));
    const rev = (await other.put(`${keys.prefix}test/filler`).value("last").exec()).header.revision;
    await other.kv.compact({ revision: rev, physical: true });
    const seen = new Promise((resolve) => anchor.once("put", resolve));
    await other.put(anchorKey).value("after the compaction");
    await seen;

    // The agent's watches resume from before the compaction: etcd ends them.
    await etcd.stop();
    await etcd.start();
    await waitFor(
      "the anchor watch back",
      async () => {
        const put = new Promise((resolve) => anchor.once("put", resolve));
        await other.put(anchorKey).value(String(Date.now()));
        return Promise.race([put.then(() => true), new Promise((r) => setTimeout(() => r(false), 500))]);
      },
      30_000,
    );
    // etcd ends resumed watches on its next sync of slow watchers (every 100 ms); give any answer
    // to a wrong cancel time to arrive.
    await new Promise((r) => setTimeout(r, 2000));
    expect(uncaught).toEqual([]);
    expect(anchorErrors).toEqual([]);
  }, 60_000);

  it("the election follows the leader key on a new watch", async () => {
    await other.delete().key(keys.engineLeader()).exec();
    await waitFor("the leader key seen deleted", async () => election.observed() === "vacant", 10_000);
    // Under a lease, as a real leader holds it: a lease-less value counts as vacant (quarantine).
    const lease = other.lease(30, { autoKeepAlive: false });
    await lease.put(keys.engineLeader()).value("d".repeat(32));
    await waitFor("another leader seen", async () => election.observed() === "follower", 10_000);
    await lease.revoke();
    expect(uncaught).toEqual([]);
  });

  it("a deleted machine key is still written again", async () => {
    await other.delete().key(keys.machine(machine.id)).exec();
    const back = await waitFor(
      "this machine's key written again",
      async () => (await other.get(keys.machine(machine.id)).string()) ?? undefined,
      10_000,
    );
    expect(JSON.parse(back)).toMatchObject({ id: machine.id, runID: machine.runID });
    expect(uncaught).toEqual([]);
  });
});
