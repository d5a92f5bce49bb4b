import { describe, expect, it } from "vitest";
import {
  applyGroupConfigChange,
  DEFAULT_GROUP_CONFIG,
  groupProblem,
  holderProblem,
  parseGroupConfig,
  parseGroupConfigChange,
  updateRecordProblem,
} from "../../agent/update/records.js";
import { formatTime, formatUpdateState, formatWindow } from "../../fleetctl/format.js";

const WINDOW = {
  days: ["sat", "sun"],
  start: "02:00",
  lengthMinutes: 120,
  timeZone: "Europe/Berlin",
} as const;

describe("group config", () => {
  it("applies only the fields a change gives, and null removes the window", () => {
    const base = applyGroupConfigChange(
      { ...DEFAULT_GROUP_CONFIG },
      { window: { ...WINDOW, days: ["sat", "sun"] } },
    );
    expect(base).toEqual({ strategy: "etcd-lock", maxHolders: 1, paused: false, window: WINDOW });
    expect(applyGroupConfigChange(base, { paused: true })).toEqual({ ...base, paused: true });
    expect(applyGroupConfigChange(base, { maxHolders: 3, strategy: "reboot" })).toMatchObject({
      maxHolders: 3,
      strategy: "reboot",
      window: WINDOW,
    });
    expect(applyGroupConfigChange(base, { window: null })).not.toHaveProperty("window");
  });

  it("validates a change field by field", () => {
    expect(parseGroupConfigChange({ strategy: "off", maxHolders: 2, paused: false, window: null })).toEqual({
      strategy: "off",
      maxHolders: 2,
      paused: false,
      window: null,
    });
    expect(() => parseGroupConfigChange(null)).toThrow(/JSON object/);
    expect(() => parseGroupConfigChange({ max: 1 })).toThrow('unknown field "max"');
    expect(() => parseGroupConfigChange({ strategy: "best-effort" })).toThrow(/strategy "best-effort"/);
    expect(() => parseGroupConfigChange({ maxHolders: 0 })).toThrow(/maxHolders 0/);
    expect(() => parseGroupConfigChange({ maxHolders: "2" })).toThrow(/maxHolders "2"/);
    expect(() => parseGroupConfigChange({ paused: 1 })).toThrow(/paused 1/);
    expect(() => parseGroupConfigChange({ window: { ...WINDOW, start: "25:00" } })).toThrow(/^window: start/);
  });

  it("reads a stored config leniently: defaults when absent, corrupt or partly wrong", () => {
    expect(parseGroupConfig(undefined)).toEqual(DEFAULT_GROUP_CONFIG);
    expect(parseGroupConfig("{not json")).toEqual(DEFAULT_GROUP_CONFIG);
    expect(parseGroupConfig(JSON.stringify({ maxHolders: 0, paused: true, window: WINDOW }))).toEqual({
      strategy: "etcd-lock",
      maxHolders: 1,
      paused: true,
      window: WINDOW,
    });
  });

  it("checks group names and holder IDs", () => {
    expect(groupProblem("default")).toBeUndefined();
    expect(groupProblem("tier-1.eu")).toBeUndefined();
    expect(groupProblem("")).toBe("must not be empty");
    expect(groupProblem("a/b")).toMatch(/must match/);
    expect(holderProblem("c988d2509fdf4cdcbed39037c56406fb")).toBeUndefined();
    expect(holderProblem("node a")).toBeUndefined();
    expect(holderProblem("a/b")).toMatch(/"\/"/);
    expect(holderProblem("a\nb")).toMatch(/control/);
    expect(holderProblem("x".repeat(257))).toMatch(/at most 256/);
  });
});

describe("update records under quarantine", () => {
  const status = {
    machineId: "m1",
    version: "1.2.3",
    slot: "A",
    state: "idle",
    updatedAt: "2026-12-04T22:00:00Z",
  };
  it("names what is wrong with each kind of record, and passes good ones", () => {
    expect(updateRecordProblem("status/m1", JSON.stringify(status))).toBeUndefined();
    expect(updateRecordProblem("status/m1", "null")).toBe("want a JSON object, got null");
    expect(updateRecordProblem("status/m1", JSON.stringify({ ...status, state: 3 }))).toBe(
      "field state: want a string, got number 3",
    );
    expect(updateRecordProblem("status/m2", JSON.stringify(status))).toBe(
      "field machineId differs from the key's",
    );
    expect(updateRecordProblem("bad/1.2.3", "\u0001garbage")).toMatch(/^not JSON: /);
    expect(updateRecordProblem("groups/default/config", '{"maxHolders":"two"}')).toMatch(/^maxHolders/);
    expect(updateRecordProblem("groups/default/holders/h1", '{"since":5}')).toBe(
      "field since: want a string, got number 5",
    );
    expect(updateRecordProblem("groups/default/seq", "anything")).toBeUndefined();
    expect(updateRecordProblem("check/all", '{"nonce":"n","at":"t"}')).toBeUndefined();
  });
});

describe("update cells", () => {
  const status = { machineId: "m", version: "1.0.0", slot: "A", updatedAt: "" } as const;

  it("shows progress while bytes move, else the state and its detail on one line", () => {
    expect(
      formatUpdateState({ ...status, state: "downloading", progress: { bytes: 999, total: 1000 } }),
    ).toBe("downloading 99%");
    expect(formatUpdateState({ ...status, state: "writing", progress: { bytes: 10, total: 10 } })).toBe(
      "writing",
    );
    expect(formatUpdateState({ ...status, state: "waiting", detail: "window\nopens at 02:00" })).toBe(
      "waiting (window opens at 02:00)",
    );
  });

  it("prints times in UTC to the second and windows compactly", () => {
    expect(formatTime("2030-01-02T04:04:05.678+01:00")).toBe("2030-01-02T03:04:05Z");
    expect(formatTime(undefined)).toBe("-");
    expect(formatTime("yesterday")).toBe("yesterday");
    expect(formatWindow({ ...WINDOW, days: ["sat", "sun"] })).toBe("sat,sun 02:00+120m Europe/Berlin");
    expect(formatWindow(undefined)).toBe("-");
  });
});
