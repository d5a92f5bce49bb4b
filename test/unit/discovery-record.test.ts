import { describe, expect, it } from "vitest";
import {
  encodeServiceRecord,
  parseServiceRecord,
  type ServiceRecord,
  serviceNameFor,
  validateServiceName,
} from "../../agent/discovery/record.js";
import { Keys } from "../../agent/registry/keys.js";

const web: ServiceRecord = {
  service: "web",
  machineID: "0123456789abcdef0123456789abcdef",
  unit: "web@3.service",
  ip: "10.1.0.2",
  ports: [
    { container: 80, host: 8080, protocol: "tcp" },
    { host: 5353, protocol: "udp" },
  ],
};

describe("service names", () => {
  it("default to the unit's prefix, lowercased", () => {
    expect(serviceNameFor("web@3.service")).toBe("web");
    expect(serviceNameFor("db.service")).toBe("db");
    expect(serviceNameFor("API-v2@blue.service")).toBe("api-v2");
  });

  it("take [X-Fleet] ServiceName= when set", () => {
    expect(serviceNameFor("web@3.service", "Frontend")).toBe("frontend");
  });

  it("must be one DNS label", () => {
    for (const ok of ["web", "a", "3d", "a-b-c", "x".repeat(63)])
      expect(validateServiceName(ok)).toBeUndefined();
    for (const bad of ["", "-web", "web-", "my_app", "a.b", "_web", "Web", "x".repeat(64), "wéb", "a b"]) {
      expect(validateServiceName(bad), bad).toBeDefined();
    }
    expect(validateServiceName(serviceNameFor("my_app.service"))).toMatch(/DNS label/);
  });
});

describe("service record values", () => {
  it("round-trip through their etcd JSON", () => {
    expect(parseServiceRecord(encodeServiceRecord(web))).toEqual(web);
  });

  it("reject anything the DNS could not serve", () => {
    const bad: unknown[] = [
      "not json",
      null,
      [],
      { ...web, service: "Bad_Name" },
      { ...web, machineID: "" },
      { ...web, unit: 3 },
      { ...web, ip: "fd00::1" },
      { ...web, ip: "10.0.0" },
      { ...web, ports: "8080" },
      { ...web, ports: [{ host: 0, protocol: "tcp" }] },
      { ...web, ports: [{ host: 70000, protocol: "tcp" }] },
      { ...web, ports: [{ host: 80, protocol: "sctp" }] },
      { ...web, ports: [{ host: 80, container: 1.5, protocol: "tcp" }] },
    ];
    for (const value of bad) {
      const text = typeof value === "string" ? value : JSON.stringify(value);
      expect(parseServiceRecord(text), text).toBeUndefined();
    }
  });

  it("drop unknown fields", () => {
    expect(parseServiceRecord(JSON.stringify({ ...web, extra: 1 }))).toEqual(web);
  });
});

describe("service keys", () => {
  const keys = new Keys("/t/");

  it("are services/<service>/<machineID>/<unit> and split back", () => {
    const key = keys.service("web", "m1", "web@3.service");
    expect(key).toBe("/t/services/web/m1/web@3.service");
    expect(key.startsWith(keys.serviceInstances("web"))).toBe(true);
    expect(keys.classify(key)).toEqual({ family: "services", rest: "web/m1/web@3.service" });
    expect(keys.parseServiceKey(key)).toEqual({ service: "web", machineID: "m1", unit: "web@3.service" });
  });

  it("reject keys of another shape", () => {
    for (const key of [
      "/t/services/web/m1",
      "/t/services/web//u.service",
      "/t/services/a/b/c/d",
      "/t/states/a/b",
    ]) {
      expect(keys.parseServiceKey(key), key).toBeUndefined();
    }
  });
});
