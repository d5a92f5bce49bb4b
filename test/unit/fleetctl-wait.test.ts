import { describe, expect, it } from "vitest";
import type { WireUnit, WireUnitState } from "../../agent/api/schema.js";
import {
  ATTEMPT_MS,
  type Clock,
  POLL_INTERVAL_MS,
  pollUntil,
  waitForSystemdActive,
  waitForUnitState,
} from "../../fleetctl/wait.js";

/** A clock that only moves when slept on. */
function fakeClock(): Clock & { sleeps: number[] } {
  let now = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
  };
}

describe("pollUntil", () => {
  it("polls every 250 ms and gives each attempt 2 s", async () => {
    const clock = fakeClock();
    let probes = 0;
    const result = await pollUntil(
      async () => {
        probes++;
        return undefined;
      },
      { attempts: 2 },
      clock,
    );
    expect(result).toEqual({});
    expect(clock.now()).toBe(2 * ATTEMPT_MS);
    expect(new Set(clock.sleeps)).toEqual(new Set([POLL_INTERVAL_MS]));
    expect(probes).toBe((2 * ATTEMPT_MS) / POLL_INTERVAL_MS + 1);
  });

  it("returns as soon as the probe yields a value", async () => {
    const clock = fakeClock();
    let probes = 0;
    const result = await pollUntil(async () => (++probes === 3 ? "done" : undefined), { attempts: 1 }, clock);
    expect(result).toEqual({ value: "done" });
    expect(clock.now()).toBe(2 * POLL_INTERVAL_MS);
  });

  it("waits forever with 0 attempts", async () => {
    const clock = fakeClock();
    let probes = 0;
    const result = await pollUntil(
      async () => (++probes === 1000 ? true : undefined),
      { attempts: 0 },
      clock,
    );
    expect(result).toEqual({ value: true });
    expect(clock.now()).toBe(999 * POLL_INTERVAL_MS);
  });

  it("keeps polling through errors and reports the last one", async () => {
    const clock = fakeClock();
    const result = await pollUntil(
      async () => {
        throw new Error("boom");
      },
      { attempts: 1 },
      clock,
    );
    expect(result).toEqual({ lastError: new Error("boom") });
  });
});

describe("waitForUnitState", () => {
  const unit = (u: Partial<WireUnit>): WireUnit => ({ name: "a.service", ...u });

  it("succeeds when currentState reaches the target", async () => {
    const seq = [unit({ currentState: "inactive" }), unit({ currentState: "launched", machineID: "m" })];
    const r = await waitForUnitState(
      "a.service",
      "launched",
      async () => seq.shift() ?? seq[0],
      { attempts: 1 },
      fakeClock(),
    );
    expect(r).toEqual({ ok: true, unit: unit({ currentState: "launched", machineID: "m" }) });
  });

  it("waits on desiredState for global units", async () => {
    const global = unit({
      desiredState: "launched",
      options: [{ section: "X-Fleet", name: "Global", value: "true" }],
    });
    const r = await waitForUnitState(
      "a.service",
      "launched",
      async () => global,
      { attempts: 1 },
      fakeClock(),
    );
    expect(r.ok).toBe(true);
  });

  it("times out with fleet's message", async () => {
    const clock = fakeClock();
    const r = await waitForUnitState(
      "a.service",
      "launched",
      async () => unit({ currentState: "loaded" }),
      { attempts: 2 },
      clock,
    );
    expect(r).toEqual({ ok: false, error: "timed out waiting for unit a.service to report state launched" });
    expect(clock.now()).toBe(4000);
  });

  it("names the server's reason when the unit cannot be scheduled (fleet#559)", async () => {
    const r = await waitForUnitState(
      "a.service",
      "launched",
      async () => unit({ currentState: "inactive", reason: "no machine matches MachineMetadata=disk=ssd" }),
      { attempts: 1 },
      fakeClock(),
    );
    expect(r).toEqual({
      ok: false,
      error: "unit a.service cannot be scheduled: no machine matches MachineMetadata=disk=ssd",
    });
  });

  it("keeps waiting while the unit is missing or the API fails", async () => {
    let calls = 0;
    const r = await waitForUnitState(
      "a.service",
      "inactive",
      async () => {
        calls++;
        if (calls === 1) throw new Error("down");
        return calls === 2 ? undefined : unit({ currentState: "inactive" });
      },
      { attempts: 1 },
      fakeClock(),
    );
    expect(r.ok).toBe(true);
    expect(calls).toBe(3);
  });

  it("mentions the last API error when it gives up on one", async () => {
    const r = await waitForUnitState(
      "a.service",
      "inactive",
      async () => {
        throw new Error("connection refused");
      },
      { attempts: 1 },
      fakeClock(),
    );
    expect(r).toEqual({
      ok: false,
      error: "timed out waiting for unit a.service to report state inactive (last error: connection refused)",
    });
  });
});

describe("waitForSystemdActive", () => {
  const state = (active: string, load = "loaded"): WireUnitState => ({
    name: "a.service",
    systemdLoadState: load,
    systemdActiveState: active,
    systemdSubState: active === "active" ? "running" : "dead",
  });

  it("waits for loaded and active", async () => {
    const seq = [undefined, state("activating"), state("active", "not-found"), state("active")];
    const r = await waitForSystemdActive("a.service", async () => seq.shift(), { attempts: 1 }, fakeClock());
    expect(r).toEqual({ ok: true });
    expect(seq).toEqual([]);
  });

  it("reports the last systemd state seen", async () => {
    const r = await waitForSystemdActive(
      "a.service",
      async () => state("failed"),
      { attempts: 1 },
      fakeClock(),
    );
    expect(r).toEqual({
      ok: false,
      error: "timed out waiting for unit a.service to report active state (systemd: loaded/failed/dead)",
    });
  });
});
