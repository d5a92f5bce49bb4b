import { describe, expect, it } from "vitest";
import { compareVersions, type DecideInput, decide, parseVersion } from "../../agent/update/decide.js";
import type { Manifest } from "../../agent/update/manifest.js";

const manifest = (version: string) => ({ version }) as Manifest;
const now = new Date("2025-03-01T12:00:00Z");
const base: DecideInput = {
  currentVersion: "0.2.0",
  bootBlessed: true,
  badVersions: new Set(),
  paused: false,
  manifest: manifest("0.3.0"),
  now,
  eligibleAt: new Date("2025-03-01T11:00:00Z"),
  local: {},
};

describe("versions", () => {
  it("parses MAJOR.MINOR.PATCH only and compares numerically", () => {
    expect(parseVersion("1.10.0")).toEqual([1, 10, 0]);
    for (const bad of ["1.2", "v1.2.3", "1.2.3-rc1", "01.2.3", "1.2.3.4", ""])
      expect(parseVersion(bad)).toBeUndefined();
    expect(compareVersions("1.10.0", "1.9.9")).toBeGreaterThan(0);
    expect(compareVersions("0.2.0", "0.2.0")).toBe(0);
    expect(compareVersions("0.2.0", "1.0.0")).toBeLessThan(0);
    expect(() => compareVersions("0.2.0", "x")).toThrow("not a MAJOR.MINOR.PATCH version: x");
  });
});

describe("decide", () => {
  it("installs a newer release once its wave has started", () => {
    expect(decide(base)).toEqual({ kind: "install", version: "0.3.0", reason: "0.2.0 → 0.3.0" });
  });

  it("reboots once the release is written to the passive slot", () => {
    expect(decide({ ...base, local: { written: "0.3.0" } })).toMatchObject({
      kind: "reboot",
      version: "0.3.0",
    });
  });

  it("not blessed yet: waits and never touches the fallback slot", () => {
    expect(decide({ ...base, bootBlessed: false })).toEqual({
      kind: "wait",
      reason: "0.2.0 is not blessed yet",
    });
    expect(decide({ ...base, bootBlessed: false, pinnedVersion: "0.3.0" }).kind).toBe("wait");
  });

  it("after the reboot into the pending version: waits for the gate, then reports the update complete", () => {
    const after = { ...base, currentVersion: "0.3.0", local: { pending: "0.3.0" } };
    expect(decide({ ...after, bootBlessed: false })).toMatchObject({
      kind: "wait",
      reason: expect.stringMatching(/health gate/),
    });
    expect(decide(after)).toMatchObject({ kind: "blessed", version: "0.3.0" });
  });

  it("an older or equal release is ignored", () => {
    expect(decide({ ...base, manifest: manifest("0.1.9") })).toEqual({
      kind: "idle",
      reason: "running 0.2.0; the channel's newest is 0.1.9",
    });
    expect(decide({ ...base, manifest: manifest("0.2.0") }).kind).toBe("idle");
    expect(decide({ ...base, manifest: undefined })).toEqual({ kind: "idle", reason: "no release fetched" });
  });

  it("a bad version is never installed, and says how to clear it", () => {
    const a = decide({ ...base, badVersions: new Set(["0.3.0"]) });
    expect(a.kind).toBe("idle");
    expect(a.reason).toMatch(/0\.3\.0 is marked bad .*fleetctl update clear-bad 0\.3\.0/);
    expect(decide({ ...base, badVersions: new Set(["0.3.0"]), pinnedVersion: "0.3.0" }).kind).toBe("idle");
  });

  it("a paused group waits, also with the release already written", () => {
    expect(decide({ ...base, paused: true })).toMatchObject({
      kind: "wait",
      reason: expect.stringMatching(/paused/),
    });
    expect(decide({ ...base, paused: true, local: { written: "0.3.0" } }).kind).toBe("wait");
  });

  it("waits for the machine's wave", () => {
    const later = new Date("2025-03-01T14:00:00Z");
    expect(decide({ ...base, eligibleAt: later })).toEqual({
      kind: "wait",
      until: later,
      reason: "0.3.0: this machine's wave starts at 2025-03-01T14:00:00.000Z",
    });
  });

  it("pinned: installs exactly that version, even older, ignoring waves; idle when running it or offered another", () => {
    const pinOld = { ...base, pinnedVersion: "0.1.0", manifest: manifest("0.1.0") };
    expect(decide(pinOld)).toMatchObject({ kind: "install", version: "0.1.0" });
    expect(decide({ ...pinOld, eligibleAt: new Date("2030-01-01T00:00:00Z") }).kind).toBe("install");
    expect(decide({ ...base, pinnedVersion: "0.2.0" })).toEqual({
      kind: "idle",
      reason: "pinned to 0.2.0, running it",
    });
    expect(decide({ ...base, pinnedVersion: "0.2.5" })).toEqual({
      kind: "idle",
      reason: "pinned to 0.2.5; the fetched manifest is 0.3.0",
    });
  });
});
