import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import { goField, goJSON, lineAndColumn, locateJSONError, parseJSONBody } from "../../agent/api/json.js";

function decodeError(text: string): string {
  try {
    parseJSONBody(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(400);
    return (err as ApiError).message;
  }
  throw new Error("expected a decode error");
}

describe("goJSON", () => {
  it("escapes what Go's json.Marshal escapes and adds no newline", () => {
    expect(goJSON({ v: "<a href='x'>&</a>\u2028" })).toBe(
      '{"v":"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e\\u2028"}',
    );
    expect(JSON.parse(goJSON({ v: "<&>" }))).toEqual({ v: "<&>" });
  });
});

describe("parseJSONBody", () => {
  it("parses valid JSON", () => {
    expect(parseJSONBody('{"a":[1,true,null,"x"]}')).toEqual({ a: [1, true, null, "x"] });
  });

  it("names the line and column of a syntax error and what was found", () => {
    expect(decodeError('{"name":}')).toBe(
      "unable to decode body: invalid JSON at line 1, column 9: expected a value, found '}'",
    );
    expect(decodeError('{\n  "name": "a.service",\n  "options": [\n    {"section" "Service"}\n  ]\n}')).toBe(
      "unable to decode body: invalid JSON at line 4, column 16: expected ':' after a property name, found '\"'",
    );
  });

  it("reports truncated bodies, trailing garbage and empty bodies", () => {
    expect(decodeError('{"a":1')).toBe(
      "unable to decode body: invalid JSON at line 1, column 7: unexpected end of the body",
    );
    expect(decodeError('{"a":1} x')).toBe(
      "unable to decode body: invalid JSON at line 1, column 9: unexpected 'x' after the JSON value",
    );
    expect(decodeError("  ")).toBe("unable to decode body: the body is empty");
  });
});

describe("locateJSONError", () => {
  it.each([
    ["[1,2,,]", 5, "expected a value, found ','"],
    ["{'a':1}", 1, 'expected a property name in double quotes, found "\'"'],
    ['{"a":1,}', 7, "expected a property name in double quotes, found '}'"],
    ['{"a":1 "b":2}', 7, "expected ',' or '}', found '\"'"],
    ["[1 2]", 3, "expected ',' or ']', found '2'"],
    ['"a\tb"', 2, "control character inside a string (escape it)"],
    ['"\\x"', 1, "invalid escape '\\x'"],
    ['"\\u12G4"', 1, "invalid \\u escape: expected four hex digits"],
    ['"abc', 4, "unterminated string"],
    ["01", 0, "invalid number"],
    ["[1] 2", 4, "unexpected '2' after the JSON value"],
    ["[\u0001]", 1, "expected a value, found '\\u0001'"],
    ["1.", 0, "invalid number"],
    ["-", 0, "invalid number"],
    ["nul", 0, "expected a value, found 'n'"],
    ["[".repeat(100_000), 100_000, "unexpected end of the body"],
  ])("%j fails at %i: %s", (text, offset, problem) => {
    expect(() => JSON.parse(text)).toThrow();
    expect(locateJSONError(text)).toEqual({ offset, problem });
  });

  it("counts lines and columns from 1", () => {
    expect(lineAndColumn("ab\ncd", 0)).toEqual({ line: 1, column: 1 });
    expect(lineAndColumn("ab\ncd", 4)).toEqual({ line: 2, column: 2 });
  });
});

describe("goField", () => {
  it("matches keys case-insensitively, the last match winning, as Go's decoder does", () => {
    expect(goField({ Value: { value: "bar" } }, "value")).toEqual({ value: "bar" });
    expect(goField({ name: "a", NAME: "b" }, "name")).toBe("b");
    expect(goField({ other: 1 }, "name")).toBeUndefined();
  });
});
