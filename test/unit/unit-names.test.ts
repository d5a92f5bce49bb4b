import { describe, expect, it } from "vitest";
import {
  isTemplate,
  mangleUnitName,
  templateOf,
  unitNameParts,
  validateUnitName,
} from "../../agent/unit/index.js";

describe("validateUnitName (systemd's unit_name_is_valid, in fleet's words)", () => {
  it.each([
    "hello.service",
    "hello@.service",
    "hello@1.service",
    "a.b.c.socket",
    "x:y-z_w\\v.timer",
    "HELLO123.target",
    "data.mount",
    "web@10.0.0.1.service",
    `${"a".repeat(247)}.service`,
    "a@b@c.service",
    "-.mount",
    "x.device",
  ])("accepts %s", (name) => {
    expect(validateUnitName(name)).toBeUndefined();
  });

  it.each(["automount", "device", "mount", "path", "service", "slice", "socket", "swap", "target", "timer"])(
    "accepts the unit type %s",
    (type) => {
      expect(validateUnitName(`x.${type}`)).toBeUndefined();
    },
  );

  it.each([
    ["", "unit name cannot be empty"],
    [`${"a".repeat(248)}.service`, "unit name exceeds maximum length (255 bytes, got 256)"],
    [`${"é".repeat(124)}.service`, "unit name exceeds maximum length (255 bytes, got 256)"],
    [".service", 'unit name has nothing before ".service"'],
    [".timer", 'unit name has nothing before ".timer"'],
    ["x.busname", 'invalid unit type "busname": busname units were removed from systemd'],
    ["x.snapshot", 'invalid unit type "snapshot": snapshot units were removed from systemd'],
    [
      "x.scope",
      'invalid unit type "scope": scope units are created by programs through systemd\'s API, never from a unit file',
    ],
    ["hello\r.service", "invalid character '\\r' in unit name"],
    ["hello", 'unit name must contain "."'],
    ["hello.", 'unit name cannot end in "."'],
    ["hello.txt", 'invalid unit type: "txt"'],
    ["hello.Service", 'invalid unit type: "Service"'],
    ["hello world.service", "invalid character ' ' in unit name"],
    ["hello/x.service", "invalid character '/' in unit name"],
    ["it's.service", "invalid character '\\'' in unit name"],
    ["tab\there.service", "invalid character '\\t' in unit name"],
    ["café.service", "invalid character 'é' in unit name"],
    ["nul\u0000.service", "invalid character '\\x00' in unit name"],
    ["@.service", 'unit name cannot start in "@"'],
    ["@foo.service", 'unit name cannot start in "@"'],
    ["foo@.mount", 'unit type "mount" cannot be a template or an instance'],
    ["foo@bar.device", 'unit type "device" cannot be a template or an instance'],
  ])("rejects %j: %s", (name, message) => {
    expect(validateUnitName(name)).toBe(message);
  });

  it("reports the first problem in fleet's order", () => {
    // The type is checked before the characters, and the characters before the leading "@".
    expect(validateUnitName("@bad name.txt")).toBe('invalid unit type: "txt"');
    expect(validateUnitName("@bad name.service")).toBe("invalid character ' ' in unit name");
  });

  it("takes the suffix after the last dot", () => {
    expect(validateUnitName("hello.service.txt")).toBe('invalid unit type: "txt"');
  });
});

describe("mangleUnitName (fleetctl's unitNameMangle)", () => {
  it.each([
    ["hello", "hello.service"],
    ["hello.service", "hello.service"],
    ["units/hello.service", "hello.service"],
    ["/abs/path/hello.socket", "hello.socket"],
    ["dir/hello", "hello.service"],
    ["dir/", "dir.service"],
    ["hello.timer", "hello.timer"],
    ["hello.path", "hello.path"],
    ["dev-sda.device", "dev-sda.device"],
    ["data.mount", "data.mount"],
    ["data.automount", "data.automount"],
    ["hello@1", "hello@1.service"],
    ["hello@.service", "hello@.service"],
    // Valid unit types that fleetctl does not recognise still get ".service".
    ["multi-user.target", "multi-user.target.service"],
    ["x.slice", "x.slice.service"],
    ["hello.txt", "hello.txt.service"],
    // path.Base edge cases.
    ["", "..service"],
    ["/", "/.service"],
    ["a//b//", "b.service"],
  ])("%j -> %j", (arg, name) => {
    expect(mangleUnitName(arg)).toBe(name);
  });
});

describe("templates and instances", () => {
  it.each([
    ["foo@.service", true],
    ["foo@.socket", true],
    ["foo@1.service", false],
    ["foo.service", false],
    ["foo@", false],
    ["foo@bar@.service", false],
  ])("isTemplate(%j) is %s", (name, expected) => {
    expect(isTemplate(name)).toBe(expected);
  });

  it.each([
    ["foo@1.service", "foo@.service"],
    ["foo@bar.socket", "foo@.socket"],
    ["foo@10.0.0.1.service", "foo@.service"],
    ["foo@a@b.service", "foo@.service"],
  ])("templateOf(%j) is %j", (name, template) => {
    expect(templateOf(name)).toBe(template);
  });

  it.each(["foo@.service", "foo.service", "foo@1"])("templateOf(%j) is undefined", (name) => {
    expect(templateOf(name)).toBeUndefined();
  });
});

describe("unitNameParts (the values of %n %N %p %i)", () => {
  it("splits an instance", () => {
    expect(unitNameParts("foo@bar.service")).toEqual({
      full: "foo@bar.service",
      base: "foo@bar",
      prefix: "foo",
      instance: "bar",
    });
  });

  it("splits a template", () => {
    expect(unitNameParts("foo@.service")).toEqual({
      full: "foo@.service",
      base: "foo@",
      prefix: "foo",
      instance: "",
    });
  });

  it("gives a plain unit its base as prefix and no instance", () => {
    expect(unitNameParts("foo.service")).toEqual({
      full: "foo.service",
      base: "foo",
      prefix: "foo",
      instance: "",
    });
  });

  it("takes the suffix from the last dot and the instance from the first '@'", () => {
    expect(unitNameParts("web@10.0.0.1.service")).toEqual({
      full: "web@10.0.0.1.service",
      base: "web@10.0.0.1",
      prefix: "web",
      instance: "10.0.0.1",
    });
    expect(unitNameParts("a@b@c.service")).toMatchObject({ prefix: "a", instance: "b@c" });
  });

  it("treats a name without a dot as all base", () => {
    expect(unitNameParts("foo@bar")).toEqual({
      full: "foo@bar",
      base: "foo@bar",
      prefix: "foo",
      instance: "bar",
    });
  });
});
