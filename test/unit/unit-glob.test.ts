import { describe, expect, it } from "vitest";
import { isValidGlob, matchGlob } from "../../agent/unit/index.js";

// Go's path.Match test table (src/path/match_test.go): pattern, name, match, malformed.
const goMatchTests: [pattern: string, name: string, match: boolean, malformed: boolean][] = [
  ["abc", "abc", true, false],
  ["*", "abc", true, false],
  ["*c", "abc", true, false],
  ["a*", "a", true, false],
  ["a*", "abc", true, false],
  ["a*", "ab/c", false, false],
  ["a*/b", "abc/b", true, false],
  ["a*/b", "a/c/b", false, false],
  ["a*b*c*d*e*/f", "axbxcxdxe/f", true, false],
  ["a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false],
  ["a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false],
  ["a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false],
  ["a*b?c*x", "abxbbxdbxebxczzx", true, false],
  ["a*b?c*x", "abxbbxdbxebxczzy", false, false],
  ["ab[c]", "abc", true, false],
  ["ab[b-d]", "abc", true, false],
  ["ab[e-g]", "abc", false, false],
  ["ab[^c]", "abc", false, false],
  ["ab[^b-d]", "abc", false, false],
  ["ab[^e-g]", "abc", true, false],
  ["a\\*b", "a*b", true, false],
  ["a\\*b", "ab", false, false],
  ["a?b", "a☺b", true, false],
  ["a[^a]b", "a☺b", true, false],
  ["a???b", "a☺b", false, false],
  ["a[^a][^a][^a]b", "a☺b", false, false],
  ["[a-ζ]*", "α", true, false],
  ["*[a-ζ]", "A", false, false],
  ["a?b", "a/b", false, false],
  ["a*b", "a/b", false, false],
  ["[\\]a]", "]", true, false],
  ["[\\-]", "-", true, false],
  ["[x\\-]", "x", true, false],
  ["[x\\-]", "-", true, false],
  ["[x\\-]", "z", false, false],
  ["[\\-x]", "x", true, false],
  ["[\\-x]", "-", true, false],
  ["[\\-x]", "a", false, false],
  ["[]a]", "]", false, true],
  ["[-]", "-", false, true],
  ["[x-]", "x", false, true],
  ["[x-]", "-", false, true],
  ["[x-]", "z", false, true],
  ["[-x]", "x", false, true],
  ["[-x]", "-", false, true],
  ["[-x]", "a", false, true],
  ["\\", "a", false, true],
  ["[a-b-c]", "a", false, true],
  ["[", "a", false, true],
  ["[^", "a", false, true],
  ["[^bc", "a", false, true],
  ["a[", "a", false, true],
  ["a[", "ab", false, true],
  ["a[", "x", false, true],
  ["a/b[", "x", false, true],
  ["*x", "xxx", true, false],
];

describe("matchGlob follows Go's path.Match", () => {
  it.each(goMatchTests)("%j against %j", (pattern, name, match, malformed) => {
    expect(matchGlob(pattern, name)).toBe(match);
    expect(isValidGlob(pattern)).toBe(!malformed);
  });
});

describe("fleet patterns", () => {
  it.each([
    ["web@*.service", "web@1.service", true],
    ["web@*.service", "web@.service", true],
    ["web@*.service", "api@1.service", false],
    ["conflict.*.service", "conflict.0.service", true],
    ["monitor*", "monitor.service", true],
    ["*.service", "hello.socket", false],
    ["hello.service", "hello.service", true],
    ["hello.service", "hello.servicex", false],
    ["hello?service", "hello.service", true],
    ["web@[0-9].service", "web@7.service", true],
    ["web@[0-9].service", "web@10.service", false],
  ])("%j against %j is %s", (pattern, name, match) => {
    expect(matchGlob(pattern, name)).toBe(match);
  });
});

describe("Go's class rules", () => {
  it("lets a negated class match '/', which only * and ? refuse", () => {
    expect(matchGlob("a[^x]b", "a/b")).toBe(true);
    expect(matchGlob("a[/]b", "a/b")).toBe(true);
  });

  it("accepts a reversed range, which matches nothing", () => {
    expect(isValidGlob("[z-a]")).toBe(true);
    expect(matchGlob("[z-a]", "m")).toBe(false);
    expect(matchGlob("[z-ab]", "b")).toBe(true);
    expect(matchGlob("[^z-a]", "m")).toBe(true);
    expect(matchGlob("[^z-a]", "/")).toBe(true);
  });

  it("rejects a class starting with an unescaped ']' or '-'", () => {
    expect(isValidGlob("[]]")).toBe(false);
    expect(isValidGlob("[^]a]")).toBe(false);
    expect(isValidGlob("[^-a]")).toBe(false);
  });

  it("treats characters as code points", () => {
    expect(matchGlob("?", "😀")).toBe(true);
    expect(matchGlob("[😀]", "😀")).toBe(true);
    expect(matchGlob("[^a]", "😀")).toBe(true);
    expect(matchGlob("??", "😀")).toBe(false);
  });
});

describe("pattern syntax", () => {
  it("escapes in and out of classes", () => {
    expect(matchGlob("\\[x\\]", "[x]")).toBe(true);
    expect(matchGlob("\\?", "?")).toBe(true);
    expect(matchGlob("\\?", "a")).toBe(false);
    expect(matchGlob("[\\^]", "^")).toBe(true);
    expect(matchGlob("[\\\\]", "\\")).toBe(true);
    expect(isValidGlob("[\\")).toBe(false);
    expect(isValidGlob("[a\\")).toBe(false);
  });

  it("treats a star inside a class as a character", () => {
    expect(matchGlob("[*]", "*")).toBe(true);
    expect(matchGlob("[*]", "a")).toBe(false);
  });

  it("treats regular-expression characters literally", () => {
    expect(matchGlob("a.b", "a.b")).toBe(true);
    expect(matchGlob("a.b", "axb")).toBe(false);
    expect(matchGlob("(a|b)+$^{1}", "(a|b)+$^{1}")).toBe(true);
    expect(matchGlob("]", "]")).toBe(true);
    expect(matchGlob("a-b", "a-b")).toBe(true);
    expect(matchGlob("[.]", "x")).toBe(false);
  });

  it("needs the whole name to match", () => {
    expect(matchGlob("ab", "abc")).toBe(false);
    expect(matchGlob("bc", "abc")).toBe(false);
  });

  it("handles empty patterns and names", () => {
    expect(matchGlob("", "")).toBe(true);
    expect(matchGlob("", "a")).toBe(false);
    expect(matchGlob("*", "")).toBe(true);
    expect(matchGlob("?", "")).toBe(false);
  });

  it("gives the same answers from its cache", () => {
    for (let i = 0; i < 3; i++) {
      expect(matchGlob("web@*.service", "web@1.service")).toBe(true);
      expect(matchGlob("[", "[")).toBe(false);
    }
  });

  it("does not backtrack exponentially on many stars", () => {
    expect(matchGlob(`${"a*".repeat(100)}b`, "a".repeat(10_000))).toBe(false);
    expect(matchGlob(`${"a*".repeat(100)}b`, `${"a".repeat(10_000)}b`)).toBe(true);
  });
});
