import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  agentMetrics,
  countEngineAction,
  observeDnsReply,
  observeWatchLag,
  timePass,
} from "../../agent/metrics.js";
import type { ClusterSnapshot } from "../../agent/registry/registry.js";
import type { UpdatesOverview } from "../../agent/update/store.js";

const ME = "a".repeat(32);
const OTHER = "b".repeat(32);

function snapshot(): ClusterSnapshot {
  const unit = (name: string, desiredState: "inactive" | "loaded" | "launched") => ({
    name,
    options: [],
    hash: `h-${name}`,
    desiredState,
  });
  const state = (name: string, machineID: string, activeState: string, launched: boolean) => ({
    name,
    hash: `h-${name}`,
    machineID,
    loadState: "loaded",
    activeState,
    subState: "running",
    launched,
  });
  return {
    revision: 7,
    units: [unit("web.service", "launched"), unit("db.service", "launched"), unit("old.service", "loaded")],
    schedule: new Map([
      ["web.service", { machineID: ME, at: 0, reason: "least loaded" }],
      ["old.service", { machineID: OTHER, at: 0, reason: "least loaded" }],
    ]),
    pending: new Map([["db.service", { reason: "no machine has metadata region=mars", at: 0 }]]),
    failures: new Map([
      ["web.service", { hash: "h-web.service", moves: [{ from: OTHER, at: 0 }], gaveUp: undefined }],
      ["old.service", { hash: "an older version", moves: [{ from: ME, at: 0 }], gaveUp: "gave up" }],
    ]),
    machines: [
      { id: ME, publicIP: "10.0.0.1", metadata: {}, version: "0" },
      { id: OTHER, publicIP: "10.0.0.2", metadata: {}, version: "0" },
    ],
    states: [state("web.service", ME, "active", true), state("old.service", OTHER, "inactive", false)],
  } as ClusterSnapshot;
}

const overview = {
  groups: [{ name: "default", config: {}, holders: [{ holder: ME }] }],
  statuses: [{ machineId: ME, version: "1", state: "downloading" }],
  bad: [],
} as unknown as UpdatesOverview;

/** The value of the sample `line` (name plus labels as Prometheus prints them). */
function sample(text: string, line: string): number | undefined {
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe("agent metrics", () => {
  it("derives the cluster gauges from the registry at scrape time", async () => {
    let leader: string | undefined = ME;
    const metrics = agentMetrics({
      registry: { snapshot: async () => snapshot() },
      machineID: ME,
      currentLeader: async () => leader,
      updates: { overview: async () => overview },
      quarantine: () => [{ family: "units" }, { family: "units" }, { family: "engine" }],
    });
    const text = await metrics.scrape();
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sample(text, 'flotilla_units{desired_state="launched",current_state="launched"}')).toBe(1);
    expect(sample(text, 'flotilla_units{desired_state="launched",current_state="inactive"}')).toBe(1);
    expect(sample(text, 'flotilla_units{desired_state="loaded",current_state="loaded"}')).toBe(1);
    expect(sample(text, 'flotilla_unit_states{active_state="active"}')).toBe(1);
    expect(sample(text, "flotilla_machines")).toBe(2);
    expect(sample(text, "flotilla_units_unschedulable")).toBe(1);
    // Only records of the unit's current version count.
    expect(sample(text, "flotilla_unit_failure_moves")).toBe(1);
    expect(sample(text, "flotilla_units_gave_up")).toBe(0);
    expect(sample(text, "flotilla_engine_leader")).toBe(1);
    expect(sample(text, 'flotilla_update_state{state="downloading"}')).toBe(1);
    expect(sample(text, 'flotilla_reboot_lock_holders{group="default"}')).toBe(1);
    expect(sample(text, "flotilla_scrape_registry_up")).toBe(1);
    expect(sample(text, 'flotilla_registry_quarantined{family="units"}')).toBe(2);
    expect(sample(text, 'flotilla_registry_quarantined{family="engine"}')).toBe(1);
    expect(text).toContain("process_cpu_user_seconds_total");

    leader = OTHER;
    expect(sample(await metrics.scrape(), "flotilla_engine_leader")).toBe(0);
  });

  it("still answers when etcd cannot be read, without stale cluster gauges", async () => {
    let fail = false;
    const metrics = agentMetrics({
      registry: {
        snapshot: async () => {
          if (fail) throw new Error("etcd is unreachable");
          return snapshot();
        },
      },
      machineID: ME,
      currentLeader: async () => undefined,
    });
    expect(sample(await metrics.scrape(), "flotilla_machines")).toBe(2);
    fail = true;
    const text = await metrics.scrape();
    expect(sample(text, "flotilla_scrape_registry_up")).toBe(0);
    expect(sample(text, "flotilla_machines")).toBeUndefined();
    expect(text).toContain("process_cpu_user_seconds_total");
  });

  it("counts engine actions, pass durations and DNS answers", async () => {
    const metrics = agentMetrics({
      registry: { snapshot: async () => snapshot() },
      machineID: ME,
      currentLeader: async () => undefined,
    });
    const before = await metrics.scrape();
    countEngineAction("schedule");
    await timePass("reconcile", Promise.resolve());
    await expect(timePass("engine", Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    // A NOERROR reply with one answer, one with none, an NXDOMAIN, and a dropped query.
    const reply = (rcode: number, answers: number) => {
      const b = Buffer.alloc(12);
      b[3] = 0x80 | rcode;
      b.writeUInt16BE(answers, 6);
      return b;
    };
    observeDnsReply(reply(0, 1));
    observeDnsReply(reply(0, 0));
    observeDnsReply(reply(3, 0));
    expect(observeDnsReply(undefined)).toBeUndefined();
    const after = await metrics.scrape();
    const delta = (line: string) => (sample(after, line) ?? 0) - (sample(before, line) ?? 0);
    expect(delta('flotilla_engine_actions_total{kind="schedule"}')).toBe(1);
    expect(delta('flotilla_pass_duration_seconds_count{loop="reconcile"}')).toBe(1);
    expect(delta('flotilla_pass_duration_seconds_count{loop="engine"}')).toBe(1);
    for (const answer of ["answered", "nodata", "nxdomain", "dropped"]) {
      expect(delta(`flotilla_dns_queries_total{answer="${answer}"}`), answer).toBe(1);
    }
  });
});

describe("watch lag metrics", () => {
  it("observes applied writes' lag and reports the oldest unapplied write's age at scrape time", async () => {
    let ageMs = 0;
    const metrics = agentMetrics({
      registry: { snapshot: async () => snapshot() },
      machineID: ME,
      currentLeader: async () => undefined,
      watch: { unappliedWriteAgeMs: () => ageMs },
    });
    const before = await metrics.scrape();
    expect(sample(before, "flotilla_registry_watch_unapplied_write_age_seconds")).toBe(0);
    observeWatchLag(3);
    observeWatchLag(1500);
    ageMs = 7250;
    const after = await metrics.scrape();
    const delta = (line: string) => (sample(after, line) ?? 0) - (sample(before, line) ?? 0);
    expect(delta("flotilla_registry_watch_lag_seconds_count")).toBe(2);
    expect(delta("flotilla_registry_watch_lag_seconds_sum")).toBeCloseTo(1.503, 6);
    expect(delta('flotilla_registry_watch_lag_seconds_bucket{le="0.005"}')).toBe(1);
    expect(delta('flotilla_registry_watch_lag_seconds_bucket{le="2.5"}')).toBe(2);
    expect(sample(after, "flotilla_registry_watch_unapplied_write_age_seconds")).toBe(7.25);
  });
});

describe("docs/metrics.md", () => {
  const docs = readFileSync(new URL("../../docs/metrics.md", import.meta.url), "utf8");
  /** Names in the first column of the doc's tables. */
  const documented = [...docs.matchAll(/^\| `([a-z_]+)`/gm)].map((m) => m[1] as string);

  it("lists every flotilla metric the agent registers, and no other", async () => {
    const text = await agentMetrics({
      registry: { snapshot: async () => snapshot() },
      machineID: ME,
      currentLeader: async () => ME,
      updates: { overview: async () => overview },
      watch: { unappliedWriteAgeMs: () => 0 },
    }).scrape();
    const registered = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] as string);
    const ours = registered.filter((name) => name.startsWith("flotilla_")).sort();
    expect(ours.length).toBeGreaterThan(10);
    expect([...documented].sort()).toEqual(ours);
    // The process metrics the doc names by way of example are among prom-client's defaults.
    const processSection = docs.slice(docs.indexOf("## Process metrics"));
    const examples = [...processSection.matchAll(/`((?:process|nodejs)_[a-z_]+)`/g)].map((m) => m[1]);
    expect(examples.length).toBeGreaterThan(0);
    for (const name of examples) expect(registered, name).toContain(name);
  });
});
