import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import { resolveRoute, splitTarget } from "../../agent/api/routes.js";

function refused(method: string, path: string): { status: number; message: string; allow?: string } {
  try {
    resolveRoute(method, path);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    const e = err as ApiError;
    return {
      status: e.status,
      message: e.message,
      ...(e.headers.Allow !== undefined ? { allow: e.headers.Allow } : {}),
    };
  }
  throw new Error(`expected ${method} ${path} to be refused`);
}

describe("resolveRoute", () => {
  it.each(["/fleet/v1", "/v1-alpha"])("serves fleet's resources under %s", (prefix) => {
    expect(resolveRoute("GET", `${prefix}/units`)).toEqual({ kind: "listUnits" });
    expect(resolveRoute("GET", `${prefix}/units/a.service`)).toEqual({ kind: "getUnit", name: "a.service" });
    expect(resolveRoute("PUT", `${prefix}/units/a.service`)).toEqual({ kind: "putUnit", name: "a.service" });
    expect(resolveRoute("DELETE", `${prefix}/units/a.service`)).toEqual({
      kind: "deleteUnit",
      name: "a.service",
    });
    expect(resolveRoute("GET", `${prefix}/state`)).toEqual({ kind: "listStates" });
    expect(resolveRoute("GET", `${prefix}/state/a.service`)).toEqual({ kind: "getState", name: "a.service" });
    expect(resolveRoute("GET", `${prefix}/machines`)).toEqual({ kind: "listMachines" });
    expect(resolveRoute("PATCH", `${prefix}/machines`)).toEqual({ kind: "patchMachines" });
    expect(resolveRoute("GET", `${prefix}/discovery`)).toEqual({ kind: "discovery" });
  });

  it("decodes names, as fleetctl escapes '@' and '\\'", () => {
    expect(resolveRoute("GET", "/fleet/v1/units/hello%40.service")).toEqual({
      kind: "getUnit",
      name: "hello@.service",
    });
    expect(resolveRoute("GET", "/fleet/v1/units/a%5Cx2d.service")).toEqual({
      kind: "getUnit",
      name: "a\\x2d.service",
    });
    expect(refused("GET", "/fleet/v1/units/%E0%A4%A")).toEqual({
      status: 400,
      message: 'malformed percent-encoding in URL path segment "%E0%A4%A"',
    });
  });

  it("answers wrong methods with 405 and fleet's messages", () => {
    expect(refused("POST", "/fleet/v1/units")).toEqual({
      status: 405,
      message: "only GET supported against this resource",
      allow: "GET",
    });
    expect(refused("PATCH", "/fleet/v1/units/a.service")).toEqual({
      status: 405,
      message: "only GET, PUT and DELETE supported against this resource",
      allow: "GET, PUT, DELETE",
    });
    expect(refused("PUT", "/fleet/v1/state/a.service").status).toBe(405);
    expect(refused("DELETE", "/fleet/v1/machines")).toEqual({
      status: 405,
      message: "only GET and PATCH supported against this resource",
      allow: "GET, PATCH",
    });
  });

  it("answers non-GET /discovery with 400, as fleet does", () => {
    for (const method of ["POST", "PUT", "DELETE"]) {
      expect(refused(method, "/fleet/v1/discovery")).toEqual({
        status: 400,
        message: "only HTTP GET supported against this resource",
      });
    }
  });

  it("answers / and the bare prefixes with 405, anything unknown with 404", () => {
    expect(refused("GET", "/").status).toBe(405);
    expect(refused("GET", "/fleet/v1").status).toBe(405);
    expect(refused("GET", "/v1-alpha").status).toBe(405);
    for (const path of [
      "/fleet/v1/",
      "/fleet/v1/nope",
      "/fleet/v1/units/",
      "/fleet/v1/units/a.service/",
      "/fleet/v1/units/a/b",
      "/fleet/v1/machines/x",
      "/fleet/v1/discovery/x",
      "/fleet/v2/units",
      "/metrics/x",
      "/flotilla/v1/units/a.service",
      "/flotilla/v1/units/a.service/restart",
    ]) {
      expect(refused("GET", path), path).toEqual({ status: 404, message: "no such resource" });
    }
  });

  it("serves Prometheus metrics at /metrics, GET only", () => {
    expect(resolveRoute("GET", "/metrics")).toEqual({ kind: "metrics" });
    expect(refused("POST", "/metrics").status).toBe(405);
  });

  it("serves Flotilla's extensions", () => {
    expect(resolveRoute("GET", "/flotilla/v1/health")).toEqual({ kind: "health" });
    expect(resolveRoute("GET", "/flotilla/v1/services")).toEqual({ kind: "listServices" });
    expect(resolveRoute("GET", "/flotilla/v1/quarantine")).toEqual({ kind: "quarantine" });
    expect(() => resolveRoute("POST", "/flotilla/v1/quarantine")).toThrow(/only GET/);
    expect(refused("PUT", "/flotilla/v1/services").status).toBe(405);
    expect(refused("GET", "/flotilla/v1/services/web").status).toBe(404);
    expect(resolveRoute("GET", "/flotilla/v1/units/a%40b.service/status")).toEqual({
      kind: "unitStatus",
      name: "a@b.service",
    });
    expect(resolveRoute("GET", "/flotilla/v1/units/a.service/journal")).toEqual({
      kind: "unitJournal",
      name: "a.service",
    });
    expect(refused("POST", "/flotilla/v1/units/a.service/status").status).toBe(405);
  });
});

describe("splitTarget", () => {
  it("keeps the path encoded and parses the query", () => {
    const { path, query } = splitTarget("/fleet/v1/units/a%40.service?alt=json&nextPageToken=ZAACAA%3D%3D");
    expect(path).toBe("/fleet/v1/units/a%40.service");
    expect(query.get("nextPageToken")).toBe("ZAACAA==");
  });

  it("accepts absolute-form targets and leaves backslashes alone", () => {
    expect(splitTarget("http://domain-sock/fleet/v1/units?alt=json").path).toBe("/fleet/v1/units");
    expect(splitTarget("/fleet/v1/units/a\\x2d.service").path).toBe("/fleet/v1/units/a\\x2d.service");
    expect(splitTarget("http://h").path).toBe("/");
  });
});
