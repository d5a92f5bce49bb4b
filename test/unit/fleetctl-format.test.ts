import { describe, expect, it } from "vitest";
import type { WireMachine, WireUnit, WireUnitState } from "../../agent/api/schema.js";
import {
  type FieldContext,
  fieldKeys,
  formatMetadata,
  isGlobalUnit,
  LIST_MACHINES_FIELDS,
  LIST_UNIT_FILES_FIELDS,
  LIST_UNITS_FIELDS,
  machineFullLegend,
  parseFields,
  renderTable,
} from "../../fleetctl/format.js";

// fleet's fixtures, whose hashes fleet v1.0 prints for them (3750b3e, a1ea262).
const HELLO = [
  {
    section: "Service",
    name: "ExecStart",
    value: '/bin/bash -c "while true; do echo Hello, World!; sleep 1; done"',
  },
];
const GLOBAL = [
  {
    section: "Service",
    name: "ExecStart",
    value: '/bin/bash -c "while true; do echo Hello, Global World!; sleep 1; done"',
  },
  { section: "X-Fleet", name: "Global", value: "true" },
];

const M103 = "113f16a7a5fb45a6b6e5b7f1e0a7c0d1";
const M101 = "e793afb9ce1a4d8f9c9c1b7d2f0e4a55";
const machines: WireMachine[] = [
  { id: M103, primaryIP: "172.17.8.103", metadata: { az: "us-west-1b" } },
  { id: M101, primaryIP: "172.17.8.101" },
];

function ctx(full = false, reasons: Record<string, string> = {}): FieldContext {
  return {
    full,
    machine: (id) => machines.find((m) => m.id === id),
    reason: (name) => reasons[name],
  };
}

function table<T>(
  fields: Record<string, (row: T, c: FieldContext) => string>,
  spec: string,
  rows: T[],
  c = ctx(),
) {
  const cols = parseFields(spec, fields);
  if ("error" in cols) throw new Error(cols.error);
  return renderTable(cols, rows, fields, c, false);
}

describe("fleet's observed tables, byte for byte", () => {
  it("list-machines", () => {
    expect(table(LIST_MACHINES_FIELDS, "machine,ip,metadata", machines)).toBe(
      "MACHINE\t\tIP\t\tMETADATA\n113f16a7...\t172.17.8.103\taz=us-west-1b\ne793afb9...\t172.17.8.101\t-\n",
    );
  });

  it("list-unit-files", () => {
    const units: WireUnit[] = [
      { name: "global.service", options: GLOBAL, desiredState: "launched" },
      {
        name: "hello.service",
        options: HELLO,
        desiredState: "launched",
        currentState: "launched",
        machineID: M103,
      },
    ];
    expect(table(LIST_UNIT_FILES_FIELDS, "unit,hash,dstate,state,target", units)).toBe(
      "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n" +
        "global.service\ta1ea262\tlaunched\t-\t\tglobal\n" +
        "hello.service\t3750b3e\tlaunched\tlaunched\t113f16a7.../172.17.8.103\n",
    );
  });

  it("list-units", () => {
    const states: WireUnitState[] = [
      {
        name: "hello.service",
        hash: "3750b3e9f3962a56c7582929426e9abb012754cf",
        machineID: M103,
        systemdLoadState: "loaded",
        systemdActiveState: "active",
        systemdSubState: "running",
      },
    ];
    expect(table(LIST_UNITS_FIELDS, "unit,machine,active,sub", states)).toBe(
      "UNIT\t\tMACHINE\t\t\t\tACTIVE\tSUB\nhello.service\t113f16a7.../172.17.8.103\tactive\trunning\n",
    );
  });

  it("drops the header with --no-legend", () => {
    const cols = ["machine", "ip"];
    expect(renderTable(cols, machines, LIST_MACHINES_FIELDS, ctx(), true)).toBe(
      "113f16a7...\t172.17.8.103\ne793afb9...\t172.17.8.101\n",
    );
  });
});

describe("cells", () => {
  it("shows full machine IDs and 40-character hashes with --full", () => {
    const unit: WireUnit = { name: "hello.service", options: HELLO, machineID: M103 };
    expect(LIST_UNIT_FILES_FIELDS.hash?.(unit, ctx(true))).toBe("3750b3e9f3962a56c7582929426e9abb012754cf");
    expect(LIST_UNIT_FILES_FIELDS.target?.(unit, ctx(true))).toBe(`${M103}/172.17.8.103`);
    expect(LIST_MACHINES_FIELDS.machine?.(machines[0] as WireMachine, ctx(true))).toBe(M103);
  });

  it("falls back to the bare machine ID when the machine is unknown", () => {
    const state: WireUnitState = { name: "a.service", machineID: "0123456789abcdef" };
    expect(LIST_UNITS_FIELDS.machine?.(state, ctx())).toBe("01234567...");
    expect(machineFullLegend({ id: "0123456789abcdef" }, false)).toBe("01234567...");
  });

  it("prints - for missing values", () => {
    const state: WireUnitState = { name: "a.service" };
    for (const f of ["load", "active", "sub", "machine", "hash", "reason"]) {
      expect(LIST_UNITS_FIELDS[f]?.(state, ctx())).toBe("-");
    }
    const unit: WireUnit = { name: "a.service", options: HELLO };
    for (const f of ["dstate", "state", "target", "desc", "reason"]) {
      expect(LIST_UNIT_FILES_FIELDS[f]?.(unit, ctx())).toBe("-");
    }
  });

  it("sorts metadata by key", () => {
    expect(formatMetadata({ region: "us", az: "b", disk: "ssd" })).toBe("az=b,disk=ssd,region=us");
  });

  it("shows global units as target global with state -", () => {
    const unit: WireUnit = { name: "g.service", options: GLOBAL, currentState: "launched", machineID: M101 };
    expect(isGlobalUnit(unit)).toBe(true);
    expect(LIST_UNIT_FILES_FIELDS.global?.(unit, ctx())).toBe("true");
    expect(LIST_UNIT_FILES_FIELDS.state?.(unit, ctx())).toBe("-");
    expect(LIST_UNIT_FILES_FIELDS.target?.(unit, ctx())).toBe("global");
  });

  it("reads the description and Flotilla's reason, kept on one line", () => {
    const unit: WireUnit = {
      name: "a.service",
      options: [...HELLO, { section: "Unit", name: "Description", value: "Hello" }],
      reason: "no machine\tmatches\nMachineMetadata=disk=ssd",
    };
    expect(LIST_UNIT_FILES_FIELDS.desc?.(unit, ctx())).toBe("Hello");
    expect(LIST_UNIT_FILES_FIELDS.reason?.(unit, ctx())).toBe("no machine matches MachineMetadata=disk=ssd");
    expect(LIST_UNITS_FIELDS.reason?.({ name: "b.service" }, ctx(false, { "b.service": "pending" }))).toBe(
      "pending",
    );
  });
});

describe("--fields", () => {
  it("accepts known keys in the given order, including Flotilla's reason", () => {
    expect(parseFields("sub,unit,reason", LIST_UNITS_FIELDS)).toEqual(["sub", "unit", "reason"]);
  });

  it("rejects unknown and empty specs with fleet's messages", () => {
    expect(parseFields("unit,foo", LIST_UNITS_FIELDS)).toEqual({
      error: 'Invalid key in output format: "foo"',
    });
    expect(parseFields("", LIST_UNITS_FIELDS)).toEqual({ error: "Must define output format" });
  });

  it("lists the valid keys sorted", () => {
    expect(fieldKeys(LIST_UNITS_FIELDS)).toBe("active,hash,load,machine,reason,sub,unit");
    expect(fieldKeys(LIST_UNIT_FILES_FIELDS)).toBe(
      "desc,dstate,global,hash,reason,state,target,tmachine,unit",
    );
    expect(fieldKeys(LIST_MACHINES_FIELDS)).toBe("checked,ip,machine,metadata,os,rollback,slot,update");
  });
});
