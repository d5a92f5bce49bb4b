import { describe, expect, it } from "vitest";
import { ConfigError, etcdSecurity, resolveConfig, tlsNeededBy } from "../../agent/config.js";

describe("agent config: cluster PKI", () => {
  it("defaults to the files under /etc/flotilla/tls", () => {
    const cfg = resolveConfig(undefined, {}, []);
    expect([cfg.tlsCaFile, cfg.tlsCertFile, cfg.tlsKeyFile]).toEqual([
      "/etc/flotilla/tls/ca.pem",
      "/etc/flotilla/tls/machine.pem",
      "/etc/flotilla/tls/machine-key.pem",
    ]);
  });

  it("takes paths from file, environment and flags, and refuses relative ones", () => {
    const cfg = resolveConfig({ "tls-ca-file": "/a/ca.pem" }, { FLOTILLA_TLS_CERT_FILE: "/a/m.pem" }, [
      "--tls-key-file=/a/m-key.pem",
    ]);
    expect([cfg.tlsCaFile, cfg.tlsCertFile, cfg.tlsKeyFile]).toEqual([
      "/a/ca.pem",
      "/a/m.pem",
      "/a/m-key.pem",
    ]);
    expect(() => resolveConfig({}, {}, ["--tls-ca-file=ca.pem"])).toThrow(
      'flag --tls-ca-file: must be an absolute path, got "ca.pem"',
    );
  });

  it("needs the files for the TCP API and for https etcd, not otherwise", () => {
    expect(tlsNeededBy(resolveConfig({}, {}, []))).toBeUndefined();
    expect(tlsNeededBy(resolveConfig({}, {}, ["--api-listen=0.0.0.0:7480"]))).toBe(
      "the TCP API (api-listen)",
    );
    expect(tlsNeededBy(resolveConfig({}, {}, ["--etcd-endpoints=https://10.0.0.1:2379"]))).toBe(
      "etcd over https",
    );
  });

  it("refuses mixed etcd schemes and a password without a user", () => {
    expect(() =>
      resolveConfig({}, {}, ["--etcd-endpoints=https://a:2379,http://b:2379", "--etcd-password=x"]),
    ).toThrow(ConfigError);
    try {
      resolveConfig({}, {}, ["--etcd-endpoints=https://a:2379,http://b:2379", "--etcd-password=x"]);
    } catch (err) {
      expect((err as Error).message).toContain("etcd-endpoints: mix http:// and https://");
      expect((err as Error).message).toContain("etcd-password: set without etcd-username");
    }
  });

  it("passes the user to etcd only when one is set", () => {
    const tls = { ca: Buffer.from("c"), cert: Buffer.from("m"), key: Buffer.from("k") };
    expect(etcdSecurity(resolveConfig({}, {}, []), tls)).toEqual({ tls });
    expect(
      etcdSecurity(resolveConfig({}, {}, ["--etcd-username=agent", "--etcd-password=pw"]), undefined),
    ).toEqual({ username: "agent", password: "pw" });
  });
});
