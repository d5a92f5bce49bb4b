// fleet v1.0 compatibility on 3 real machines carrying fleet's functional-test metadata
// (hostname=smoke1..3): fleet's own metadata@.service template as written, and restart's exit code.
// How the original fleetctl's restart fares against Flotilla is in docs/fleet-compatibility.md.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster, type Machine } from "../harness/index.js";
import { EtcdView, fleetctl, invocationID, unitDir, waitFor } from "./support.js";

// fleet's functional/fixtures/units/metadata@.service, byte for byte.
const METADATA_FIXTURE =
  '[Service]\nExecStart=/bin/bash -c "while true; do echo Hello, World %i!; sleep 1; done"\n\n[X-Fleet]\nMachineMetadata=hostname=%i\n';

let cluster: Cluster;
let etcd: EtcdView;
let endpoint: string;
let m1: Machine;
let m3: Machine;

beforeAll(async () => {
  cluster = await Cluster.start({
    machines: 3,
    metadata: [{ hostname: "smoke1" }, { hostname: "smoke2" }, { hostname: "smoke3" }],
  });
  [m1, , m3] = cluster.machines as [Machine, Machine, Machine];
  etcd = new EtcdView(cluster.endpoint);
  endpoint = m1.apiURL;
  await waitFor(
    "3 machines",
    async () =>
      (await fleetctl(endpoint, ["list-machines", "--no-legend"])).stdout.trim().split("\n").length === 3,
    30_000,
  );
});

afterAll(async () => {
  etcd?.close();
  await cluster?.teardown();
});

async function isActive(m: Machine, unit: string): Promise<boolean> {
  return (await m.exec(["systemctl", "is-active", unit])).stdout.trim() === "active";
}

describe("fleet v1.0 compatibility", () => {
  it("accepts fleet's metadata@.service as written and places each instance where its hostname is", async () => {
    const submit = await fleetctl(
      endpoint,
      ["submit", "metadata@.service"],
      unitDir({ "metadata@.service": METADATA_FIXTURE }),
    );
    expect(submit.code, submit.stderr).toBe(0);
    // Started from an empty directory: the instances are made from the template in the registry.
    const elsewhere = unitDir({});
    const start = await fleetctl(
      endpoint,
      ["start", "--block-attempts=10", "metadata@smoke1.service", "metadata@smoke3.service"],
      elsewhere,
    );
    expect(start.code, start.stderr).toBe(0);
    expect((await etcd.placement("metadata@smoke1.service"))?.machineID).toBe(m1.id);
    expect((await etcd.placement("metadata@smoke3.service"))?.machineID).toBe(m3.id);
    expect(await isActive(m1, "metadata@smoke1.service")).toBe(true);
    expect(await isActive(m3, "metadata@smoke3.service")).toBe(true);

    // Each instance is checked with its own value: one no machine has is not placed anywhere.
    const nowhere = await fleetctl(
      endpoint,
      ["start", "--block-attempts=2", "metadata@smoke9.service"],
      elsewhere,
    );
    expect(nowhere.code).toBe(1);
    expect(nowhere.stderr).toContain("hostname=smoke9");
    expect(await etcd.placement("metadata@smoke9.service")).toBeUndefined();
  });

  it("restart exits 1 for a unit that does not exist, and restarts one that does", async () => {
    const nope = await fleetctl(endpoint, ["restart", "nope.service"], unitDir({}));
    expect(nope).toMatchObject({ code: 1, stdout: "" });
    expect(nope.stderr).toContain("Error creating units: unable to find Unit(nope.service)");

    const before = await invocationID(m1, "metadata@smoke1.service");
    const r = await fleetctl(endpoint, ["restart", "--block-attempts=10", "metadata@smoke1.service"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /^Unit metadata@smoke1.service loaded on .*\nUnit metadata@smoke1.service launched on /,
    );
    expect(await isActive(m1, "metadata@smoke1.service")).toBe(true);
    expect(await invocationID(m1, "metadata@smoke1.service")).not.toBe(before);
  });
});
