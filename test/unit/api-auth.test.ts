import { describe, expect, it } from "vitest";
import { checkAccess, type Principal, type Role, roleOf } from "../../agent/api/auth.js";
import { ApiError } from "../../agent/api/errors.js";

const cert = (role: Role | undefined): Principal => ({
  kind: "certificate",
  name: "alice",
  role,
});

function refusal(p: Principal, method: string, path: string): string | undefined {
  try {
    checkAccess(p, method, path);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(403);
    return (err as ApiError).message;
  }
}

describe("API roles", () => {
  it("reads the role from the subject OU", () => {
    expect(roleOf("admin")).toBe("admin");
    expect(roleOf(["reader"])).toBe("reader");
    expect(roleOf("machine")).toBe("machine");
    expect(roleOf(undefined)).toBeUndefined();
    expect(roleOf("root")).toBeUndefined();
    // Two roles is ambiguous: neither is granted.
    expect(roleOf(["admin", "reader"])).toBeUndefined();
  });

  it("lets the local socket and admin do everything", () => {
    for (const p of [{ kind: "local" } as const, cert("admin")]) {
      expect(refusal(p, "PUT", "/fleet/v1/units/a.service")).toBeUndefined();
      expect(refusal(p, "DELETE", "/fleet/v1/units/a.service")).toBeUndefined();
      expect(refusal(p, "POST", "/v1/pre-reboot")).toBeUndefined();
    }
  });

  it("lets reader only read, naming its role", () => {
    expect(refusal(cert("reader"), "GET", "/fleet/v1/units")).toBeUndefined();
    expect(refusal(cert("reader"), "GET", "/flotilla/v1/units/a.service/journal")).toBeUndefined();
    expect(refusal(cert("reader"), "PUT", "/fleet/v1/units/a.service")).toBe(
      "role reader (certificate alice) may only read (GET); PUT needs role admin",
    );
    expect(refusal(cert("reader"), "PATCH", "/fleet/v1/machines")).toMatch(/^role reader/);
    expect(refusal(cert("reader"), "POST", "/v1/pre-reboot")).toMatch(/^role reader/);
  });

  it("keeps machine certificates to the agent-to-agent routes", () => {
    expect(refusal(cert("machine"), "GET", "/flotilla/v1/units/a.service/status")).toBeUndefined();
    expect(refusal(cert("machine"), "GET", "/flotilla/v1/units/a%40b.service/journal")).toBeUndefined();
    expect(refusal(cert("machine"), "GET", "/flotilla/v1/health")).toBeUndefined();
    expect(refusal(cert("machine"), "GET", "/fleet/v1/units")).toMatch(/^role machine .* needs role admin$/);
    expect(refusal(cert("machine"), "PUT", "/fleet/v1/units/a.service")).toMatch(/^role machine/);
  });

  it("refuses a certificate without a role and plain TCP", () => {
    expect(refusal(cert(undefined), "GET", "/fleet/v1/units")).toBe(
      "certificate alice has no Flotilla role: its subject OU must be one of admin, reader, machine",
    );
    expect(refusal({ kind: "anonymous" }, "GET", "/fleet/v1/units")).toBe(
      "the API needs a client certificate (TLS)",
    );
  });
});
