import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import {
  checkFleetLockHead,
  FleetLockError,
  fleetLockError,
  parseFleetLockBody,
} from "../../agent/api/fleetlock.js";
import { fleetLockOp, resolveRoute } from "../../agent/api/routes.js";
import { checkTarget, parseGroupChange, toWireUpdates } from "../../agent/api/updates.js";
import { RegistryUnavailableError } from "../../agent/registry/registry.js";
import type { UpdateStatus } from "../../agent/update/records.js";

function thrown(fn: () => unknown): FleetLockError {
  try {
    fn();
  } catch (err) {
    if (err instanceof FleetLockError) return err;
    throw err;
  }
  throw new Error("did not throw");
}

describe("FleetLock requests", () => {
  it("routes exactly the two protocol paths", () => {
    expect(fleetLockOp("/v1/pre-reboot")).toBe("pre-reboot");
    expect(fleetLockOp("/v1/steady-state")).toBe("steady-state");
    expect(fleetLockOp("/v1/pre-reboot/")).toBeUndefined();
    expect(fleetLockOp("/v1/toString")).toBeUndefined();
    expect(fleetLockOp("/v1-alpha/machines")).toBeUndefined();
  });

  it("requires POST and the fleet-lock-protocol header set to true", () => {
    expect(() => checkFleetLockHead("POST", "true")).not.toThrow();
    expect(thrown(() => checkFleetLockHead("GET", "true"))).toMatchObject({
      status: 405,
      kind: "method_not_allowed",
      headers: { Allow: "POST" },
    });
    const missing = thrown(() => checkFleetLockHead("POST", undefined));
    expect(missing).toMatchObject({ status: 400, kind: "invalid_client_identity" });
    expect(missing.message).toBe('missing or wrong "fleet-lock-protocol" header: it must be "true"');
    expect(thrown(() => checkFleetLockHead("POST", "True")).message).toMatch(/got "True"$/);
  });

  it("parses client_params and names the field that is wrong", () => {
    expect(parseFleetLockBody('{"client_params":{"id":"c988d2509fdf","group":"workers"}}')).toEqual({
      id: "c988d2509fdf",
      group: "workers",
    });
    const cases: [string, RegExp][] = [
      ["", /body must be JSON/],
      ["[]", /^client_params: missing/],
      ['{"client_params":"x"}', /^client_params: missing or not an object/],
      ['{"client_params":{"group":"g"}}', /^client_params\.id: missing/],
      ['{"client_params":{"id":"","group":"g"}}', /^client_params\.id: must not be empty/],
      ['{"client_params":{"id":"a/b","group":"g"}}', /^client_params\.id: .*"\/"/],
      ['{"client_params":{"id":"a"}}', /^client_params\.group: missing/],
      ['{"client_params":{"id":"a","group":""}}', /^client_params\.group: must not be empty/],
      ['{"client_params":{"id":"a","group":"a b"}}', /^client_params\.group: "a b" must match/],
    ];
    for (const [body, message] of cases) {
      const err = thrown(() => parseFleetLockBody(body));
      expect(err.status, body).toBe(400);
      expect(err.kind).toBe("invalid_client_identity");
      expect(err.message, body).toMatch(message);
    }
  });

  it("maps failures to {kind, value} answers with a small set of kinds", () => {
    expect(fleetLockError(new FleetLockError(409, "failed_lock_semaphore_full", "full"))).toEqual({
      status: 409,
      body: { kind: "failed_lock_semaphore_full", value: "full" },
      headers: {},
      internal: false,
    });
    expect(fleetLockError(new RegistryUnavailableError(new Error("down")))).toMatchObject({
      status: 503,
      body: { kind: "etcd_unavailable", value: "etcd is unreachable: down" },
    });
    expect(fleetLockError(new ApiError(413, "too big", { Connection: "close" }))).toMatchObject({
      status: 413,
      body: { kind: "request_too_large" },
      headers: { Connection: "close" },
    });
    expect(fleetLockError(new TypeError("oops"))).toMatchObject({
      status: 500,
      body: { kind: "internal_error", value: "internal server error: oops" },
      internal: true,
    });
  });
});

describe("update routes", () => {
  it("resolves the update routes and refuses other methods", () => {
    expect(resolveRoute("GET", "/flotilla/v1/updates")).toEqual({ kind: "getUpdates" });
    expect(resolveRoute("POST", "/flotilla/v1/updates/check")).toEqual({ kind: "checkUpdates" });
    expect(resolveRoute("DELETE", "/flotilla/v1/updates/bad/1.2.3")).toEqual({
      kind: "clearBadVersion",
      version: "1.2.3",
    });
    expect(resolveRoute("PUT", "/flotilla/v1/update-groups/web")).toEqual({
      kind: "putUpdateGroup",
      group: "web",
    });
    expect(resolveRoute("DELETE", "/flotilla/v1/update-groups/web/holders/a%2Fb")).toEqual({
      kind: "releaseHolder",
      group: "web",
      holder: "a/b",
    });
    expect(() => resolveRoute("POST", "/flotilla/v1/updates")).toThrow(/only GET supported/);
    expect(() => resolveRoute("GET", "/flotilla/v1/update-groups/web")).toThrow(/only PUT supported/);
    expect(() => resolveRoute("DELETE", "/flotilla/v1/update-groups/web/holders")).toThrow(
      /no such resource/,
    );
    expect(() => resolveRoute("DELETE", "/flotilla/v1/updates/bad")).toThrow(/no such resource/);
  });

  it("targets one known machine or all for a check", () => {
    const known = new Set(["m1"]);
    expect(checkTarget(undefined, known)).toBe("all");
    expect(checkTarget({}, known)).toBe("all");
    expect(checkTarget({ MachineID: "m1" }, known)).toBe("m1");
    expect(() => checkTarget({ machineID: "m2" }, known)).toThrow("machine m2 is not in the cluster");
    expect(() => checkTarget({ machineID: 1 }, known)).toThrow("machineID must be a string");
    expect(() => checkTarget([], known)).toThrow(/body must be a JSON object/);
  });

  it("refuses an empty or bad group change with a 400 naming the field", () => {
    expect(parseGroupChange({ paused: true })).toEqual({ paused: true });
    for (const [body, message] of [
      [{}, /at least one/],
      [{ maxHolders: 1.5 }, /^maxHolders 1.5 must be a whole number/],
      [{ window: { days: [] } }, /^window: days/],
    ] as const) {
      try {
        parseGroupChange(body);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(ApiError);
        expect((err as ApiError).status).toBe(400);
        expect((err as ApiError).message).toMatch(message);
      }
    }
  });

  it("joins machines and status records by ID, marking machines that left", () => {
    const status = (machineId: string): UpdateStatus => ({
      machineId,
      version: "1.0.0",
      slot: "A",
      state: "idle",
      updatedAt: "2030-01-01T00:00:00Z",
    });
    const wire = toWireUpdates({ groups: [], statuses: [status("a"), status("c")], bad: [] }, [
      { id: "b", publicIP: "10.0.0.2", metadata: {}, version: "x" },
      { id: "a", publicIP: "", metadata: {}, version: "x" },
    ]);
    expect(wire.machines).toEqual([
      { machineID: "a", inCluster: true, status: status("a") },
      { machineID: "b", primaryIP: "10.0.0.2", inCluster: true },
      { machineID: "c", inCluster: false, status: status("c") },
    ]);
  });
});
