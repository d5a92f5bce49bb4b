import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import {
  filterStates,
  parseMetadataOps,
  stateOfUnit,
  toWireMachine,
  toWireUnitState,
} from "../../agent/api/machines.js";
import type { UnitState } from "../../agent/model.js";

const M = "0123456789abcdef0123456789abcdef";

function opsError(body: unknown): string {
  try {
    parseMetadataOps(body);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    return (err as ApiError).message;
  }
  throw new Error("expected the ops to be refused");
}

function state(name: string, machineID: string): UnitState {
  return { name, machineID, hash: "abc", loadState: "loaded", activeState: "active", subState: "running" };
}

describe("parseMetadataOps", () => {
  it("reads fleet's wire form, with the value nested", () => {
    expect(
      parseMetadataOps([
        { op: "add", path: `/${M}/metadata/foo`, value: { value: "bar" } },
        { op: "replace", path: `/${M}/metadata/a.b-c_d`, value: { value: "x" } },
        { op: "remove", path: `/${M}/metadata/foo` },
      ]),
    ).toEqual([
      { machineID: M, key: "foo", value: "bar" },
      { machineID: M, key: "a.b-c_d", value: "x" },
      { machineID: M, key: "foo", value: undefined },
    ]);
  });

  it("accepts the capitalised keys fleet's own functional tests send", () => {
    expect(parseMetadataOps([{ op: "add", Path: `/${M}/metadata/foo`, Value: { Value: "bar" } }])).toEqual([
      { machineID: M, key: "foo", value: "bar" },
    ]);
  });

  it("refuses bad ops, paths and values with fleet's messages", () => {
    expect(opsError([{ op: "noop", path: `/${M}/metadata/foo`, value: { value: "bar" } }])).toBe(
      "invalid op: expect add, remove, or replace",
    );
    expect(opsError([{ op: "add", path: `/${M}/foo`, value: { value: "bar" } }])).toBe(
      "machine metadata path invalid",
    );
    expect(opsError([{ op: "add", path: `/${M}/metadata/b@d`, value: { value: "bar" } }])).toBe(
      "machine metadata path invalid",
    );
    expect(opsError([{ op: "add", path: `/${M}/metadata/foo`, value: { value: "" } }])).toBe(
      "invalid value: add and replace require a value",
    );
    expect(opsError([{ op: "replace", path: `/${M}/metadata/foo` }])).toBe(
      "invalid value: add and replace require a value",
    );
  });

  it("explains the nesting to a client that followed api-v1.md", () => {
    expect(opsError([{ op: "add", path: `/${M}/metadata/foo`, value: "bar" }])).toBe(
      'invalid value: fleet expects "value":{"value":"…"}, not a plain string',
    );
  });

  it("checks every op before any is applied, and wants an array", () => {
    expect(
      opsError([
        { op: "add", path: `/${M}/metadata/ok`, value: { value: "1" } },
        { op: "add", path: "bad", value: { value: "1" } },
      ]),
    ).toBe("machine metadata path invalid");
    expect(opsError({ op: "add" })).toBe(
      "unable to decode body: expected an array of operations, got an object",
    );
    expect(opsError([1])).toBe("operation 0: expected an object, got a number");
  });
});

describe("wire shapes", () => {
  it("shows a machine in Go's key order, omitting empty fields", () => {
    expect(
      JSON.stringify(toWireMachine({ id: M, publicIP: "10.0.0.1", metadata: { az: "b" }, version: "0.1.0" })),
    ).toBe(`{"id":"${M}","metadata":{"az":"b"},"primaryIP":"10.0.0.1"}`);
    expect(JSON.stringify(toWireMachine({ id: M, publicIP: "", metadata: {}, version: "0.1.0" }))).toBe(
      `{"id":"${M}"}`,
    );
  });

  it("shows a unit state with fleet's systemd* names", () => {
    expect(JSON.stringify(toWireUnitState(state("a.service", M)))).toBe(
      `{"hash":"abc","machineID":"${M}","name":"a.service",` +
        '"systemdActiveState":"active","systemdLoadState":"loaded","systemdSubState":"running"}',
    );
  });
});

describe("states", () => {
  const states = [state("a.service", "m1"), state("a.service", "m2"), state("b.service", "m1")];

  it("filters by machine and unit, exactly; empty filters match all", () => {
    expect(filterStates(states, {})).toEqual(states);
    expect(filterStates(states, { machineID: "m1" })).toEqual([states[0], states[2]]);
    expect(filterStates(states, { unitName: "a.service", machineID: "m2" })).toEqual([states[1]]);
    expect(filterStates(states, { unitName: "a" })).toEqual([]);
  });

  it("answers GET /state/{name} from the target machine, else the first machine", () => {
    const schedule = new Map([["a.service", { machineID: "m2", at: 0, reason: "" }]]);
    expect(stateOfUnit("a.service", { schedule, states })).toEqual(states[1]);
    expect(stateOfUnit("a.service", { schedule: new Map(), states })).toEqual(states[0]);
    expect(stateOfUnit("c.service", { schedule, states })).toBeUndefined();
  });
});
