// GET /metrics on a real agent: the counters and gauges follow units being started, stopped and
// destroyed with fleetctl (docs/metrics.md lists the names).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster, type Machine } from "../harness/index.js";
import { fleetctl, httpRequest, unitDir, waitFor } from "./support.js";

let cluster: Cluster;
let m1: Machine;

beforeAll(async () => {
  cluster = await Cluster.start({ machines: 1 });
  [m1] = cluster.machines as [Machine];
  await waitFor(
    "the agent to lead the engine",
    async () => value(await scrape(), "flotilla_engine_leader") === 1,
    30_000,
  );
});

afterAll(async () => {
  await cluster?.teardown();
});

/** One scrape, as sample line → value. */
async function scrape(): Promise<Map<string, number>> {
  // With the harness's admin certificate; docs/security.md: any role that may GET may scrape.
  const res = await httpRequest("GET", m1.apiURL, "/metrics");
  expect(res.status).toBe(200);
  expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of res.text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

const value = (samples: Map<string, number>, name: string) => samples.get(name) ?? 0;
const units = (desired: string, current: string) =>
  `flotilla_units{desired_state="${desired}",current_state="${current}"}`;

describe("GET /metrics", () => {
  it("follows units through start, stop and destroy", async () => {
    const before = await scrape();
    expect(value(before, "flotilla_machines")).toBe(1);
    expect(value(before, "flotilla_scrape_registry_up")).toBe(1);
    expect(value(before, "process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(value(before, 'flotilla_etcd_requests_total{result="ok"}')).toBeGreaterThan(0);

    const dir = unitDir({ "m1.service": "[Service]\nExecStart=/bin/sleep infinity\n" });
    const started = await fleetctl(m1.apiURL, ["start", "--block-attempts=10", "m1.service"], dir);
    expect(started.code, started.stderr).toBe(0);
    const running = await scrape();
    expect(value(running, units("launched", "launched"))).toBe(
      value(before, units("launched", "launched")) + 1,
    );
    expect(value(running, 'flotilla_unit_states{active_state="active"}')).toBeGreaterThanOrEqual(1);
    expect(value(running, 'flotilla_engine_actions_total{kind="schedule"}')).toBe(
      value(before, 'flotilla_engine_actions_total{kind="schedule"}') + 1,
    );
    expect(value(running, 'flotilla_pass_duration_seconds_count{loop="reconcile"}')).toBeGreaterThan(
      value(before, 'flotilla_pass_duration_seconds_count{loop="reconcile"}'),
    );
    expect(value(running, 'flotilla_etcd_requests_total{result="ok"}')).toBeGreaterThan(
      value(before, 'flotilla_etcd_requests_total{result="ok"}'),
    );
    // The submitted unit is this agent's own write: its watch lag was timed, and the view has
    // applied the acknowledged ones (a write in flight at the scrape may be a moment old).
    expect(value(running, "flotilla_registry_watch_lag_seconds_count")).toBeGreaterThan(
      value(before, "flotilla_registry_watch_lag_seconds_count"),
    );
    expect(value(running, "flotilla_registry_watch_lag_seconds_sum")).toBeLessThan(
      value(running, "flotilla_registry_watch_lag_seconds_count") * 2,
    );
    expect(running.get("flotilla_registry_watch_unapplied_write_age_seconds")).toBeLessThan(1);

    const stopped = await fleetctl(m1.apiURL, ["stop", "--block-attempts=10", "m1.service"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    const loaded = await scrape();
    expect(value(loaded, units("launched", "launched"))).toBe(value(before, units("launched", "launched")));
    expect(value(loaded, units("loaded", "loaded"))).toBe(value(before, units("loaded", "loaded")) + 1);

    const destroyed = await fleetctl(m1.apiURL, ["destroy", "m1.service"]);
    expect(destroyed.code, destroyed.stderr).toBe(0);
    await waitFor(
      "the unit gone from the gauges",
      async () =>
        value(await scrape(), units("loaded", "loaded")) === value(before, units("loaded", "loaded")),
      10_000,
    );
  });
});
