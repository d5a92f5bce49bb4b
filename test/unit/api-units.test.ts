import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import {
  checkUnitPut,
  decideUnitPut,
  deriveCurrentState,
  indexStates,
  optionProblems,
  parseUnitBody,
  toWireUnit,
  type UnitBody,
  unitReason,
} from "../../agent/api/units.js";
import type { FailureRecord, Placement, UnitOption, UnitRecord, UnitState } from "../../agent/model.js";
import type { PendingReason } from "../../agent/registry/registry.js";
import { unitHash } from "../../agent/unit/index.js";

const HELLO: UnitOption[] = [{ section: "Service", name: "ExecStart", value: "/bin/true" }];

function record(
  name: string,
  options = HELLO,
  desiredState: UnitRecord["desiredState"] = "launched",
): UnitRecord {
  return { name, options, hash: unitHash(options), desiredState };
}

function state(name: string, machineID: string, activeState = "active"): UnitState {
  return { name, machineID, hash: "h", loadState: "loaded", activeState, subState: "running" };
}

function placed(machineID: string): Placement {
  return { machineID, at: 0, reason: "least loaded" };
}

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error("expected an ApiError");
}

describe("parseUnitBody", () => {
  it("reads fleetctl's bodies", () => {
    expect(
      parseUnitBody({ name: "a.service", options: [{ name: "ExecStart", section: "Service", value: "x" }] }),
    ).toEqual({ name: "a.service", options: [{ section: "Service", name: "ExecStart", value: "x" }] });
    expect(parseUnitBody({ desiredState: "launched", name: "a.service" })).toEqual({
      name: "a.service",
      desiredState: "launched",
    });
  });

  it("matches keys case-insensitively and ignores unknown and read-only fields, like Go", () => {
    expect(
      parseUnitBody({
        Name: "a.service",
        DesiredState: "loaded",
        currentState: "launched",
        machineID: "m",
        x: 1,
      }),
    ).toEqual({ name: "a.service", desiredState: "loaded" });
  });

  it("treats null, empty strings and empty arrays as absent (Go's len==0)", () => {
    expect(parseUnitBody({ name: null, desiredState: "", options: [] })).toEqual({});
    expect(parseUnitBody({ options: null })).toEqual({});
  });

  it("says which field has the wrong type", () => {
    expect(apiError(() => parseUnitBody([])).message).toBe(
      "unable to decode body: expected a Unit object, got an array",
    );
    expect(apiError(() => parseUnitBody({ name: 3 })).message).toBe("name: expected a string, got a number");
    expect(apiError(() => parseUnitBody({ options: {} })).message).toBe(
      "options: expected an array, got an object",
    );
    expect(
      apiError(() => parseUnitBody({ options: [{ section: "S", name: "N", value: "v" }, "x"] })).message,
    ).toBe("options[1]: expected an object, got a string");
    expect(apiError(() => parseUnitBody({ options: [{ section: "S", name: "N", value: 1 }] })).message).toBe(
      "options[0].value: expected a string, got a number",
    );
  });

  it("refuses an unknown desiredState", () => {
    const err = apiError(() => parseUnitBody({ desiredState: "running" }));
    expect(err.status).toBe(400);
    expect(err.message).toBe('invalid desiredState "running": must be one of inactive, loaded, launched');
  });
});

describe("checkUnitPut", () => {
  it("refuses a body name that differs from the URL's", () => {
    const err = apiError(() => checkUnitPut("a.service", { name: "b.service" }));
    expect(err.status).toBe(400);
    expect(err.message).toBe('name in URL "a.service" differs from unit name in request body "b.service"');
  });

  it("refuses invalid names with fleet's messages", () => {
    expect(apiError(() => checkUnitPut("foo", {})).message).toBe('unit name must contain "."');
    expect(apiError(() => checkUnitPut("a.exe", {})).message).toBe('invalid unit type: "exe"');
  });

  it("refuses to activate a template, on every path", () => {
    for (const desiredState of ["loaded", "launched"] as const) {
      const err = apiError(() => checkUnitPut("foo@.service", { desiredState, options: HELLO }));
      expect(err.status).toBe(400);
      expect(err.message).toBe('cannot activate template "foo@.service"');
    }
    expect(() => checkUnitPut("foo@.service", { desiredState: "inactive" })).not.toThrow();
    expect(() => checkUnitPut("foo@1.service", { desiredState: "launched" })).not.toThrow();
  });
});

describe("decideUnitPut", () => {
  it("creates a new unit, inactive unless told otherwise (201)", () => {
    expect(decideUnitPut("a.service", { options: HELLO }, undefined)).toEqual({
      kind: "create",
      unit: { name: "a.service", options: HELLO, hash: unitHash(HELLO), desiredState: "inactive" },
      warnings: [],
    });
    const put = decideUnitPut("a.service", { options: HELLO, desiredState: "launched" }, undefined);
    expect(put.kind === "create" && put.unit.desiredState).toBe("launched");
  });

  it("answers 409 for a new unit without options", () => {
    const err = apiError(() => decideUnitPut("a.service", { desiredState: "launched" }, undefined));
    expect(err.status).toBe(409);
    expect(err.message).toBe("unit does not exist and options field empty");
  });

  it("refuses invalid [X-Fleet] combinations and unserializable options with 400", () => {
    const options = [
      ...HELLO,
      { section: "X-Fleet", name: "MachineID", value: "abc" },
      { section: "X-Fleet", name: "Global", value: "true" },
    ];
    const err = apiError(() => decideUnitPut("a.service", { options }, undefined));
    expect(err.status).toBe(400);
    expect(err.message).toBe("invalid unit options: MachineID cannot be used with Global");
    const bad = [{ section: "Service", name: "ExecStart", value: "a\nb" }];
    expect(apiError(() => decideUnitPut("a.service", { options: bad }, undefined)).message).toBe(
      "invalid unit options: options[0].value: control character '\\n' (U+000A) is not allowed in a unit",
    );
    const split = [{ section: "Service", name: "Exec=Start", value: "a" }];
    expect(apiError(() => decideUnitPut("a.service", { options: split }, undefined)).message).toMatch(
      /^invalid unit options: options\[0\] \("\[Service\] Exec=Start=a"\) does not survive serialization/,
    );
  });

  it("accepts a template whose [X-Fleet] values name its instance, and checks each instance (fleet's metadata@.service)", () => {
    const options = [...HELLO, { section: "X-Fleet", name: "MachineMetadata", value: "hostname=%i" }];
    expect(decideUnitPut("metadata@.service", { options }, undefined).kind).toBe("create");
    expect(
      decideUnitPut("metadata@smoke1.service", { options, desiredState: "launched" }, undefined).kind,
    ).toBe("create");
    // The same value with no specifier is as malformed on the template as anywhere.
    const empty = [...HELLO, { section: "X-Fleet", name: "MachineMetadata", value: "hostname=" }];
    expect(apiError(() => decideUnitPut("metadata@.service", { options: empty }, undefined)).message).toBe(
      'invalid unit options: invalid MachineMetadata "hostname=": want key=value',
    );
  });

  it("refuses an invalid [Container] section with 400, naming every problem", () => {
    const options = [
      { section: "Container", name: "Network", value: "bridged" },
      { section: "Container", name: "PublishPort", value: "80:http" },
    ];
    const err = apiError(() => decideUnitPut("web.service", { options }, undefined));
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/^invalid unit options: /);
    expect(err.message).toContain("web.service: [Container] has no Image=");
    expect(err.message).toContain('web.service: [Container] Network=bridged: unknown network mode "bridged"');
    expect(err.message).toContain('web.service: [Container] PublishPort=80:http: container port "http"');
    // The same check on a replace.
    const existing = record("web.service");
    expect(apiError(() => decideUnitPut("web.service", { options }, existing)).status).toBe(400);
  });

  it("accepts a valid [Container] unit as written (rendering happens on the machine)", () => {
    const options = [
      { section: "Container", name: "Image", value: "10.0.0.1:5000/flotilla/busybox:latest" },
      { section: "Container", name: "PublishPort", value: "8080:80" },
      { section: "X-Fleet", name: "ServiceName", value: "Web-Front" },
    ];
    const put = decideUnitPut("web@1.service", { options }, undefined);
    expect(put.kind === "create" && put.unit.options).toEqual(options);
  });

  it("refuses a ServiceName= that is not a DNS label, but not a unit whose prefix is none", () => {
    const options = [...HELLO, { section: "X-Fleet", name: "ServiceName", value: "my_app" }];
    const err = apiError(() => decideUnitPut("a.service", { options }, undefined));
    expect(err.status).toBe(400);
    expect(err.message).toBe(
      'invalid unit options: invalid [X-Fleet] ServiceName=my_app: service name "my_app" must be lowercase letters, digits and inner hyphens (a DNS label)',
    );
    expect(decideUnitPut("my_app.service", { options: HELLO }, undefined).kind).toBe("create");
  });

  it("passes [X-Fleet] warnings on", () => {
    const options = [...HELLO, { section: "X-Fleet", name: "Foo", value: "bar" }];
    const put = decideUnitPut("a.service", { options }, undefined);
    expect(put.kind === "create" && put.warnings).toEqual([
      'unrecognized requirement in [X-Fleet] section: "Foo"',
    ]);
  });

  it("replaces an existing unit sent with other options, resetting its desiredState (201)", () => {
    const other = [{ section: "Service", name: "ExecStart", value: "/bin/false" }];
    const existing = record("a.service");
    expect(decideUnitPut("a.service", { options: other }, existing)).toMatchObject({
      kind: "replace",
      unit: { hash: unitHash(other), desiredState: "inactive" },
    });
    expect(decideUnitPut("a.service", { options: other, desiredState: "loaded" }, existing)).toMatchObject({
      kind: "replace",
      unit: { desiredState: "loaded" },
    });
  });

  it("sets only the desiredState of an existing unit (204), which must be given (409)", () => {
    const existing = record("a.service");
    expect(decideUnitPut("a.service", { desiredState: "loaded" }, existing)).toEqual({
      kind: "setDesiredState",
      desiredState: "loaded",
    });
    // The same options again count as no options, as in fleet.
    expect(decideUnitPut("a.service", { options: HELLO, desiredState: "inactive" }, existing)).toEqual({
      kind: "setDesiredState",
      desiredState: "inactive",
    });
    for (const body of [{}, { options: HELLO }] as UnitBody[]) {
      const err = apiError(() => decideUnitPut("a.service", body, existing));
      expect(err.status).toBe(409);
      expect(err.message).toBe("must provide DesiredState to update existing unit");
    }
  });
});

describe("optionProblems", () => {
  it("accepts options that survive serialization, line continuations included", () => {
    expect(optionProblems("a.service", HELLO)).toEqual([]);
    const continued = [{ section: "Service", name: "ExecStart", value: "/bin/sh -c \\\n  'sleep 1'" }];
    expect(optionProblems("a.service", continued)).toEqual([]);
    // Blanks around a value are trimmed by systemd; fleet stored them, so they pass.
    expect(optionProblems("a.service", [{ section: "Service", name: "A", value: " x " }])).toEqual([]);
  });

  it("names empty sections and names", () => {
    expect(
      optionProblems("a.service", [
        { section: "", name: "A", value: "x" },
        { section: "S", name: "", value: "x" },
      ]),
    ).toEqual(["options[0]: section is empty", "options[1]: name is empty"]);
  });

  it("refuses options that would turn into others or break the file", () => {
    expect(optionProblems("a.service", [{ section: "Service", name: "A=B", value: "x" }])[0]).toMatch(
      /^options\[0\] .* does not survive serialization/,
    );
    expect(optionProblems("a.service", [{ section: "Serv]ice", name: "A", value: "x" }])[0]).toMatch(
      /unexpected text after section header/,
    );
    expect(optionProblems("a.service", [{ section: "Service", name: "A", value: "x".repeat(3000) }])).toEqual(
      ["a.service as serialized:2: line too long (max 2048 bytes)"],
    );
  });
});

describe("deriveCurrentState (fleet's job state)", () => {
  const m1 = "m1";
  const launched = (s: UnitState): UnitState => ({ ...s, launched: true });
  it.each([
    [undefined, undefined, "inactive"],
    [placed(m1), undefined, "inactive"],
    [placed(m1), launched(state("a.service", "m2")), "inactive"],
    [placed(m1), state("a.service", m1), "loaded"],
    [placed(m1), state("a.service", m1, "inactive"), "loaded"],
    // Still active but no longer started by the agent's account: a stop is in progress.
    [placed(m1), { ...state("a.service", m1, "active"), launched: false }, "loaded"],
    [placed(m1), launched(state("a.service", m1, "active")), "launched"],
    // A started unit that failed or exited is still launched, as in fleet.
    [placed(m1), launched(state("a.service", m1, "failed")), "launched"],
    [placed(m1), launched(state("a.service", m1, "inactive")), "launched"],
  ] as const)("placement %j, state %j → %s", (placement, target, expected) => {
    expect(deriveCurrentState(placement, target)).toBe(expected);
  });
});

describe("unitReason", () => {
  const unit = record("a.service");
  const snap = (pending?: PendingReason, failures?: FailureRecord) => ({
    pending: new Map(pending ? [["a.service", pending]] : []),
    failures: new Map(failures ? [["a.service", failures]] : []),
  });

  it("is empty when nothing went wrong", () => {
    expect(unitReason(unit, snap())).toBeUndefined();
  });

  it("prefers giving up, then pending, then the last failure move", () => {
    const moves = [
      { from: "m1", at: Date.UTC(2024, 0, 1) },
      { from: "m2", at: Date.UTC(2024, 0, 2) },
    ];
    const pending = { reason: "no machine has metadata region=eu", at: 1 };
    expect(unitReason(unit, snap(pending, { hash: unit.hash, moves, gaveUp: "failed 3 times" }))).toBe(
      "failed 3 times",
    );
    expect(unitReason(unit, snap(pending, { hash: unit.hash, moves }))).toBe(pending.reason);
    expect(unitReason(unit, snap(undefined, { hash: unit.hash, moves }))).toBe(
      "moved off machine m2 after it failed there at 2024-01-02T00:00:00.000Z",
    );
  });

  it("ignores failures of an older version of the unit", () => {
    expect(
      unitReason(unit, snap(undefined, { hash: "old", moves: [{ from: "m1", at: 0 }], gaveUp: "x" })),
    ).toBe(undefined);
  });
});

describe("toWireUnit", () => {
  it("shows the unit with Go's key order, omitting empty fields", () => {
    const unit = record("a.service");
    const idle = { schedule: new Map(), pending: new Map(), failures: new Map() };
    expect(JSON.stringify(toWireUnit(unit, idle, indexStates([])))).toBe(
      '{"currentState":"inactive","desiredState":"launched","name":"a.service",' +
        '"options":[{"name":"ExecStart","section":"Service","value":"/bin/true"}]}',
    );
    const running = { ...idle, schedule: new Map([["a.service", placed("m1")]]) };
    expect(
      toWireUnit(unit, running, indexStates([{ ...state("a.service", "m1"), launched: true }])),
    ).toMatchObject({
      currentState: "launched",
      machineID: "m1",
    });
    const pending = { ...idle, pending: new Map([["a.service", { reason: "no eligible machine", at: 0 }]]) };
    expect(toWireUnit(unit, pending, indexStates([])).reason).toBe("no eligible machine");
  });

  it("shows why the target machine refused the unit", () => {
    const unit = record("a.service");
    const placedThere = {
      schedule: new Map([["a.service", placed("m1")]]),
      pending: new Map(),
      failures: new Map(),
    };
    const refused = { ...state("a.service", "m1"), loadState: "refused", reason: "refused: an OS unit" };
    expect(toWireUnit(unit, placedThere, indexStates([refused])).reason).toBe("refused: an OS unit");
  });
});
