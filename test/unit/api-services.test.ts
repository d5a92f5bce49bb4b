import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import { listServices } from "../../agent/api/services.js";
import { ServiceCache } from "../../agent/discovery/cache.js";
import type { ServiceRecord } from "../../agent/discovery/record.js";
import { Keys } from "../../agent/registry/keys.js";

const keys = new Keys();
const M1 = "11111111aaaaaaaaaaaaaaaaaaaaaaaa";
const M2 = "22222222bbbbbbbbbbbbbbbbbbbbbbbb";

function record(service: string, machineID: string, unit: string, ip: string, port?: number): ServiceRecord {
  return {
    service,
    machineID,
    unit,
    ip,
    ports: port === undefined ? [] : [{ container: 80, host: port, protocol: "tcp" }],
  };
}

function cacheOf(...records: ServiceRecord[]): ServiceCache {
  const cache = new ServiceCache(keys);
  cache.load(
    records.map((r) => ({ key: keys.service(r.service, r.machineID, r.unit), value: JSON.stringify(r) })),
  );
  return cache;
}

const web2 = record("web", M2, "web@2.service", "10.0.0.2", 8081);
const web1 = record("web", M1, "web@1.service", "10.0.0.1", 8080);
const db = record("db", M1, "db.service", "10.0.0.1");
const q = (text = "") => new URLSearchParams(text);

describe("GET /flotilla/v1/services", () => {
  it("lists every record by service, machine and unit", () => {
    expect(listServices(cacheOf(web2, db, web1), q())).toEqual({ services: [db, web1, web2] });
  });

  it("filters by service, case-insensitively; an unknown one is an empty list", () => {
    const cache = cacheOf(web2, db, web1);
    expect(listServices(cache, q("service=web"))).toEqual({ services: [web1, web2] });
    expect(listServices(cache, q("service=WEB"))).toEqual({ services: [web1, web2] });
    expect(listServices(cache, q("service=nope"))).toEqual({ services: [] });
    expect(listServices(cache, q("service="))).toEqual({ services: [db, web1, web2] });
  });

  it("keeps the wire keys in a fixed order and omits an unknown container port", () => {
    const hostOnly: ServiceRecord = {
      service: "dns",
      machineID: M1,
      unit: "dns.service",
      ip: "10.0.0.1",
      ports: [{ host: 53, protocol: "udp" }],
    };
    expect(JSON.stringify(listServices(cacheOf(hostOnly), q()))).toBe(
      `{"services":[{"service":"dns","machineID":"${M1}","unit":"dns.service","ip":"10.0.0.1","ports":[{"host":53,"protocol":"udp"}]}]}`,
    );
  });

  it("refuses a name that cannot be a service, or two of them, with 400", () => {
    for (const text of ["service=my_app", "service=a&service=b"]) {
      let err: unknown;
      try {
        listServices(cacheOf(), q(text));
      } catch (e) {
        err = e;
      }
      expect(err, text).toBeInstanceOf(ApiError);
      expect((err as ApiError).status).toBe(400);
    }
  });
});
