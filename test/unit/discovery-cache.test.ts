import { describe, expect, it } from "vitest";
import { ServiceCache } from "../../agent/discovery/cache.js";
import type { ServiceRecord } from "../../agent/discovery/record.js";
import { Keys } from "../../agent/registry/keys.js";
import { Quarantine } from "../../agent/registry/quarantine.js";

const keys = new Keys("/t/");
const M1 = "11111111aaaaaaaaaaaaaaaaaaaaaaaa";
const M2 = "22222222bbbbbbbbbbbbbbbbbbbbbbbb";

function record(service: string, machineID: string, unit: string, ip: string): ServiceRecord {
  return { service, machineID, unit, ip, ports: [{ host: 8080, container: 80, protocol: "tcp" }] };
}
function entry(r: ServiceRecord) {
  return { key: keys.service(r.service, r.machineID, r.unit), value: JSON.stringify(r) };
}
function put(r: ServiceRecord) {
  return { type: "put" as const, ...entry(r) };
}
function del(r: ServiceRecord) {
  return { type: "delete" as const, key: keys.service(r.service, r.machineID, r.unit) };
}

describe("ServiceCache", () => {
  const web1 = record("web", M1, "web@1.service", "10.0.0.1");
  const web2 = record("web", M2, "web@2.service", "10.0.0.2");
  const db = record("db", M1, "db.service", "10.0.0.1");

  it("loads a snapshot and answers by service and by node", () => {
    const cache = new ServiceCache(keys);
    expect(cache.load([entry(web2), entry(web1), entry(db)])).toEqual([]);
    expect(cache.service("web")).toEqual([web1, web2]);
    expect(cache.service("db")).toEqual([db]);
    expect(cache.service("nope")).toEqual([]);
    expect(cache.node("11111111")).toEqual(["10.0.0.1"]);
    expect(cache.node("22222222")).toEqual(["10.0.0.2"]);
    expect(cache.all().map((r) => r.unit)).toEqual(["db.service", "web@1.service", "web@2.service"]);
  });

  it("follows puts and deletes, including a moved unit", () => {
    const cache = new ServiceCache(keys);
    cache.apply([put(web1), put(web2)]);
    const before = cache.service("web");
    expect(cache.service("web")).toBe(before);

    // web@1 moves from M1 to M2: the new record appears, then the old one goes.
    const moved = record("web", M2, "web@1.service", "10.0.0.2");
    cache.apply([put(moved), del(web1)]);
    expect(cache.service("web")).toEqual([moved, web2]);
    expect(cache.node("11111111")).toEqual([]);
    expect(cache.node("22222222")).toEqual(["10.0.0.2"]);

    cache.apply([del(moved), del(web2), del(web2)]);
    expect(cache.service("web")).toEqual([]);
    expect(cache.all()).toEqual([]);
  });

  it("replaces an instance on a new put of the same key", () => {
    const cache = new ServiceCache(keys);
    cache.apply([put(web1), put({ ...web1, ip: "10.9.9.9" })]);
    expect(cache.service("web").map((r) => r.ip)).toEqual(["10.9.9.9"]);
  });

  it("rejects corrupt or mismatched values, dropping what the key held", () => {
    const cache = new ServiceCache(keys);
    cache.apply([put(web1)]);
    const key = keys.service("web", M1, "web@1.service");
    const rejected = cache.apply([
      { type: "put", key, value: "{broken" },
      { type: "put", key: keys.service("web", M2, "x.service"), value: JSON.stringify(web2) },
      { type: "put", key: "/t/services/web", value: JSON.stringify(web2) },
    ]);
    expect(rejected).toEqual([key, keys.service("web", M2, "x.service"), "/t/services/web"]);
    expect(cache.service("web")).toEqual([]);
  });

  it("quarantines a rejected value with its reason until a good value or a delete", () => {
    const quarantine = new Quarantine();
    const cache = new ServiceCache(keys, quarantine);
    const key = keys.service("web", M1, "web@1.service");
    const reasons = () => quarantine.list().map((q) => [q.key, q.family, q.reason, q.revision]);
    cache.load([{ key, value: "null", revision: 4 }]);
    expect(reasons()).toEqual([[key, "services", "want a JSON object, got null", 4]]);
    cache.apply([{ type: "put", key, value: JSON.stringify({ ...web1, ip: 7 }), revision: 5 }]);
    expect(reasons()).toEqual([[key, "services", "field ip: want a string, got number 7", 5]]);
    cache.apply([{ type: "put", key, value: JSON.stringify(web2), revision: 6 }]);
    expect(reasons()).toEqual([
      [key, "services", "fields service, machineID and unit differ from the key's", 6],
    ]);
    cache.apply([put(web1)]);
    expect(reasons()).toEqual([]);
    cache.apply([
      { type: "put", key, value: "\u0000\u0001", revision: 8 },
      { type: "delete", key },
    ]);
    expect(reasons()).toEqual([]);
  });

  it("load replaces everything, so a reload after a compacted watch forgets deleted records", () => {
    const cache = new ServiceCache(keys);
    cache.apply([put(web1), put(db)]);
    cache.load([entry(web2)]);
    expect(cache.all()).toEqual([web2]);
    expect(cache.node("11111111")).toEqual([]);
  });
});
