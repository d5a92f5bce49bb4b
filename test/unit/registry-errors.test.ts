import { EtcdPermissionDeniedError, GRPCResourceExhastedError, GRPCUnavailableError } from "etcd3";
import { describe, expect, it } from "vitest";
import { asRegistryError, isConnectionFailure } from "../../agent/registry/etcd-source.js";
import { RegistryUnavailableError } from "../../agent/registry/registry.js";

describe("which etcd errors mean 'etcd unreachable'", () => {
  it.each([
    ["UNAVAILABLE", new GRPCUnavailableError("14 UNAVAILABLE: No connection established")],
    ["a refused connection", new Error("connect ECONNREFUSED 10.0.0.1:2379")],
    [
      "a TLS stream ended without a gRPC status (etcd killed mid-call)",
      new Error("13 INTERNAL: Received RST_STREAM with code 0 (Call ended without gRPC status)"),
    ],
  ])("%s is a connection failure (503)", (_what, err) => {
    expect(isConnectionFailure(err)).toBe(true);
    expect(asRegistryError(err)).toBeInstanceOf(RegistryUnavailableError);
  });

  it.each([
    ["a permission refusal", new EtcdPermissionDeniedError("7 PERMISSION_DENIED: permission denied")],
    ["a reply over gRPC's size limit", new GRPCResourceExhastedError("8 RESOURCE_EXHAUSTED: too large")],
    ["another INTERNAL error", new Error("13 INTERNAL: something the server said")],
  ])("%s is reported as what it is", (_what, err) => {
    expect(isConnectionFailure(err)).toBe(false);
    expect(asRegistryError(err)).toBe(err);
  });
});
