import { describe, expect, it } from "vitest";
import { ConfigError, DEFAULT_CONFIG, resolveConfig } from "../../agent/config.js";

describe("agent config", () => {
  it("uses defaults when nothing is given", () => {
    expect(resolveConfig(undefined, {}, [])).toEqual(DEFAULT_CONFIG);
  });

  it("layers file < environment < flags", () => {
    const cfg = resolveConfig(
      { ttl: 9, metadata: { region: "eu" }, "etcd-endpoints": ["http://10.0.0.1:2379"] },
      { FLOTILLA_TTL: "7", FLOTILLA_METADATA: "region=us,disk=ssd" },
      ["--ttl=3"],
    );
    expect(cfg.ttlSeconds).toBe(3);
    expect(cfg.metadata).toEqual({ region: "us", disk: "ssd" });
    expect(cfg.etcdEndpoints).toEqual(["http://10.0.0.1:2379"]);
  });

  it("names every problem and where it came from", () => {
    let err: unknown;
    try {
      resolveConfig(
        { tll: 3 },
        { FLOTILLA_TTL: "soon", FLOTILLA_ETCD_ENDPOINTS: "etcd:2379" },
        ["--metadata=region", "--api-listen"],
        "/etc/flotilla/agent.json",
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain('/etc/flotilla/agent.json: "tll": unknown setting');
    expect(msg).toContain('environment FLOTILLA_TTL: must be a positive integer, got "soon"');
    expect(msg).toContain("environment FLOTILLA_ETCD_ENDPOINTS: must be a comma-separated list");
    expect(msg).toContain('flag --metadata: must be k=v pairs separated by commas, got "region"');
    expect(msg).toContain("flag --api-listen: expected --key=value");
  });

  it("reads insecure registries from a JSON list or a comma-separated value, and checks each", () => {
    expect(
      resolveConfig({ "insecure-registries": ["10.0.0.1:5000", "reg.local"] }, {}, []).insecureRegistries,
    ).toEqual(["10.0.0.1:5000", "reg.local"]);
    expect(
      resolveConfig(undefined, { FLOTILLA_INSECURE_REGISTRIES: "10.0.0.1:5000, [fd00::1]:5000/team" }, [])
        .insecureRegistries,
    ).toEqual(["10.0.0.1:5000", "[fd00::1]:5000/team"]);
    expect(() => resolveConfig(undefined, {}, ["--insecure-registries=http://10.0.0.1:5000"])).toThrow(
      /flag --insecure-registries: "http:\/\/10.0.0.1:5000" is not a registry location/,
    );
    expect(() => resolveConfig(undefined, {}, ["--insecure-registries=reg:99999"])).toThrow(/port 99999/);
  });

  it("rejects a machine ID that is not 32 hex characters", () => {
    expect(() => resolveConfig(undefined, { FLOTILLA_MACHINE_ID: "abc" }, [])).toThrow(/32 lowercase hex/);
  });
});
