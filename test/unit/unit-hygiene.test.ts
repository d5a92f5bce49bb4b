// The bounds on what a unit may be: control characters, size, option and pattern counts, and the
// glob cache that only stored units feed.

import { describe, expect, it } from "vitest";
import { ApiError } from "../../agent/api/errors.js";
import { decideUnitPut, optionProblems, parseUnitBody } from "../../agent/api/units.js";
import type { UnitOption } from "../../agent/model.js";
import {
  GLOB_CACHE_MAX_CHARS,
  GLOB_CACHE_MAX_ENTRIES,
  globCacheSize,
  globMatcher,
  matchGlob,
} from "../../agent/unit/glob.js";
import {
  controlCharacterIn,
  parseRequirements,
  parseUnitFile,
  UNIT_MAX_BYTES,
  UNIT_MAX_OPTIONS,
  validateRequirements,
} from "../../agent/unit/index.js";
import { MAX_PATTERNS } from "../../agent/unit/xfleet.js";

const HELLO: UnitOption[] = [{ section: "Service", name: "ExecStart", value: "/bin/true" }];

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("expected an ApiError");
}

describe("control characters", () => {
  it("finds C0 and C1 controls and DEL, but not tab or printable text", () => {
    for (const char of ["\0", "\x01", "\b", "\n", "\v", "\f", "\r", "\x1b", "\x7f", "\u0085", "\u009f"]) {
      expect(controlCharacterIn(`a${char}b`)).toBe(char);
    }
    expect(controlCharacterIn("a\tb c=d é \u00a0 \u2028 😀")).toBeUndefined();
  });

  it("a unit file with one is refused, naming the line and the character", () => {
    expect(() =>
      parseUnitFile("[Service]\nExecStart=/bin/true\rExecStartPre=/bin/evil\n", "a.service"),
    ).toThrow("a.service:2: control character '\\r' (U+000D) is not allowed in a unit file");
    expect(() => parseUnitFile("[Service]\nExecStart=/bin/true\0x\n", "a.service")).toThrow(
      "a.service:2: control character '\\x00' (U+0000) is not allowed in a unit file",
    );
    // CRLF line ends are line ends, not control characters in a value.
    expect(parseUnitFile("[Service]\r\nExecStart=/bin/true\r\n", "a.service")).toEqual(HELLO);
  });

  it("an option with one in its section, name or value is refused, naming the field", () => {
    const problems = optionProblems("a.service", [
      { section: "Service", name: "ExecStart", value: "/bin/true\rExecStartPre=/bin/evil" },
      { section: "Serv\x1bice", name: "Type", value: "simple" },
      { section: "Service", name: "Exec\0Stop", value: "/bin/true" },
      { section: "Service", name: "Exec\tStop", value: "/bin/true" },
    ]);
    expect(problems).toEqual([
      "options[0].value: control character '\\r' (U+000D) is not allowed in a unit",
      "options[1].section: control character '\\x1b' (U+001B) is not allowed in a unit",
      "options[2].name: control character '\\x00' (U+0000) is not allowed in a unit",
      "options[3].name: control character '\\t' (U+0009) is not allowed in a unit",
    ]);
  });

  it("a value's line continuation and a tab are allowed", () => {
    const options = [{ section: "Service", name: "ExecStart", value: "/bin/echo a \\\n  b\tc" }];
    expect(optionProblems("a.service", options)).toEqual([]);
    expect(decideUnitPut("a.service", { options }, undefined).kind).toBe("create");
  });
});

describe("unit size caps", () => {
  const filler = (count: number, valueLength: number): UnitOption[] =>
    Array.from({ length: count }, (_, i) => ({
      section: "Service",
      name: "Environment",
      value: `V${i}=${"x".repeat(valueLength)}`,
    }));

  it("a body with more options than the cap is refused with 400 before any option is read", () => {
    const options = [...Array.from({ length: UNIT_MAX_OPTIONS }, () => HELLO[0]), "not even an option"];
    const err = apiError(() => parseUnitBody({ options }));
    expect(err.status).toBe(400);
    expect(err.message).toBe(
      `too many options: ${UNIT_MAX_OPTIONS + 1}, at most ${UNIT_MAX_OPTIONS} per unit`,
    );
    expect(
      parseUnitBody({ options: Array.from({ length: UNIT_MAX_OPTIONS }, () => HELLO[0]) }).options,
    ).toHaveLength(UNIT_MAX_OPTIONS);
  });

  it("a unit larger than 64 KiB as a unit file is refused with 413, one at the cap is taken", () => {
    // "[Service]\n" is 10 bytes; each "Environment=V0=xxx\n" 16 bytes plus the value and index.
    const big = filler(40, 2000);
    const err = apiError(() => parseUnitBody({ options: big }));
    expect(err.status).toBe(413);
    expect(err.message).toMatch(/^unit is too large: 8\d{4} bytes as a unit file, at most 65536 \(64 KiB\)$/);
    const header = "[Service]\n".length;
    const line = (value: string) => `Environment=${value}\n`.length;
    const exact: UnitOption[] = [{ section: "Service", name: "Environment", value: "" }];
    exact[0] = { ...exact[0], value: "x".repeat(UNIT_MAX_BYTES - header - line("")) } as UnitOption;
    expect(parseUnitBody({ options: exact }).options).toEqual(exact);
    exact[0] = { ...exact[0], value: `${exact[0]?.value}y` } as UnitOption;
    expect(apiError(() => parseUnitBody({ options: exact })).status).toBe(413);
  });

  it("a unit file larger than the cap or with too many options is refused by the parser", () => {
    const text = `[Service]\n${"A=b\n".repeat(UNIT_MAX_OPTIONS + 1)}`;
    expect(() => parseUnitFile(text, "a.service")).toThrow(
      `a.service: too many options: ${UNIT_MAX_OPTIONS + 1}, at most ${UNIT_MAX_OPTIONS}`,
    );
    const large = `[Service]\n${`A=${"x".repeat(2000)}\n`.repeat(40)}`;
    expect(() => parseUnitFile(large, "a.service")).toThrow(
      /^a.service: unit file is too large: 80\d{3} bytes, at most 65536$/,
    );
  });
});

describe("Conflicts and Replaces pattern caps", () => {
  const withPatterns = (option: string, count: number): UnitOption[] => [
    ...HELLO,
    {
      section: "X-Fleet",
      name: option,
      value: Array.from({ length: count }, (_, i) => `p${i}-*.service`).join(" "),
    },
  ];

  it.each(["Conflicts", "Replaces"])("%s: at most MAX_PATTERNS patterns, 400 beyond", (option) => {
    const ok = parseRequirements("a.service", withPatterns(option, MAX_PATTERNS)).requirements;
    expect(validateRequirements("a.service", ok)).toEqual([]);
    const tooMany = parseRequirements("a.service", withPatterns(option, MAX_PATTERNS + 1)).requirements;
    expect(validateRequirements("a.service", tooMany)).toEqual([
      `too many ${option} patterns: ${MAX_PATTERNS + 1}, at most ${MAX_PATTERNS}`,
    ]);
    const err = apiError(() => decideUnitPut("a.service", { options: withPatterns(option, 100) }, undefined));
    expect(err.status).toBe(400);
    expect(err.message).toBe(
      `invalid unit options: too many ${option} patterns: 100, at most ${MAX_PATTERNS}`,
    );
  });
});

describe("the glob cache", () => {
  it("stays within its entry bound however many patterns are matched, and still matches", () => {
    for (let i = 0; i < GLOB_CACHE_MAX_ENTRIES + 500; i++)
      expect(matchGlob(`lru-${i}-*`, `lru-${i}-x`)).toBe(true);
    const { entries, chars } = globCacheSize();
    expect(entries).toBe(GLOB_CACHE_MAX_ENTRIES);
    expect(chars).toBeLessThanOrEqual(GLOB_CACHE_MAX_CHARS);
    // The oldest went out first; matching it again still works (and caches it again).
    expect(matchGlob("lru-0-*", "lru-0-y")).toBe(true);
    expect(matchGlob("lru-0-*", "lru-1-y")).toBe(false);
  });

  it("stays within its character bound with long patterns", () => {
    const long = (i: number) => `${"[a-z]".repeat(300)}-${i}*`;
    for (let i = 0; i < 400; i++) matchGlob(long(i), "x");
    expect(globCacheSize().chars).toBeLessThanOrEqual(GLOB_CACHE_MAX_CHARS);
    expect(globCacheSize().chars).toBeGreaterThan(GLOB_CACHE_MAX_CHARS - 2000);
  });

  it("is not fed by checking a request, refused or not", () => {
    const before = globCacheSize();
    const options: UnitOption[] = [
      ...HELLO,
      { section: "X-Fleet", name: "MachineOf", value: "peer.service" },
      { section: "X-Fleet", name: "Conflicts", value: "fresh-a-* fresh-b-* peer.*" },
      { section: "X-Fleet", name: "Global", value: "true" },
    ];
    const err = apiError(() => decideUnitPut("a.service", { options }, undefined));
    expect(err.message).toContain('peer "peer.service" matches conflict "peer.*"');
    expect(err.message).toContain("Global cannot be used with Peers");
    expect(globCacheSize()).toEqual(before);
    expect(globMatcher("fresh-a-*")?.("fresh-a-1")).toBe(true);
    expect(globMatcher("[")).toBeUndefined();
    expect(globCacheSize()).toEqual(before);
  });
});
