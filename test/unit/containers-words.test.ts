import { describe, expect, it } from "vitest";
import { execLine, execWord, splitWords } from "../../agent/containers/words.js";

/** What systemd makes of an ExecStart= value: specifiers (only %% here), unquoting, then $$. */
function systemdArgv(line: string): string[] {
  expect(line.replace(/%%/g, "")).not.toContain("%");
  const { words, unterminatedQuote } = splitWords(line.replace(/%%/g, "%"));
  expect(unterminatedQuote).toBe(false);
  return words.map((word) => {
    expect(word.replace(/\$\$/g, "")).not.toContain("$");
    return word.replace(/\$\$/g, "$");
  });
}

describe("splitWords", () => {
  it("splits on whitespace", () => {
    expect(splitWords("  a \tb\n c  ").words).toEqual(["a", "b", "c"]);
    expect(splitWords("").words).toEqual([]);
  });

  it("groups double and single quotes, also in mid-word, and keeps empty quoted words", () => {
    expect(splitWords(`"a b" 'c d' A="x y"z '' ""`).words).toEqual(["a b", "c d", "A=x yz", "", ""]);
    expect(splitWords(`"it's" 'say "hi"'`).words).toEqual(["it's", 'say "hi"']);
  });

  it("decodes C escapes inside and outside quotes", () => {
    expect(splitWords(String.raw`"q\"q" \n\t\\ \x41\101\u00e9 \s`).words).toEqual([
      'q"q',
      "\n\t\\",
      "AAé",
      " ",
    ]);
  });

  it("keeps the backslash of an unknown or incomplete escape", () => {
    expect(splitWords(String.raw`\d \x4 \9`).words).toEqual(["\\d", "\\x4", "\\9"]);
  });

  it("reads a kept line continuation (also one that ends the value) as a space", () => {
    expect(splitWords("a \\\nb").words).toEqual(["a", "b"]);
    expect(splitWords("end\\").words).toEqual(["end"]);
  });

  it("reports an unterminated quote", () => {
    expect(splitWords(`sh -c "echo`)).toEqual({ words: ["sh", "-c", "echo"], unterminatedQuote: true });
    expect(splitWords(`'a`).unterminatedQuote).toBe(true);
  });
});

describe("execWord", () => {
  it("leaves plain words alone", () => {
    expect(execWord("/usr/bin/podman")).toBe("/usr/bin/podman");
    expect(execWord("--publish=127.0.0.1:8080:80/tcp")).toBe("--publish=127.0.0.1:8080:80/tcp");
    expect(execWord("user@host,a+b")).toBe("user@host,a+b");
  });

  it("doubles % and $ so that systemd expands neither specifiers nor variables", () => {
    expect(execWord("100%")).toBe("100%%");
    expect(execWord("%n")).toBe("%%n");
    expect(execWord("$HOME")).toBe("$$HOME");
    // biome-ignore lint/suspicious/noTemplateCurlyInString: systemd's ${VAR} syntax, not a template
    expect(execWord("${A}")).toBe('"$${A}"');
  });

  it("quotes spaces, quotes, backslashes, control characters, a lone ; and the empty word", () => {
    expect(execWord("a b")).toBe('"a b"');
    expect(execWord(`say "hi"`)).toBe(String.raw`"say \"hi\""`);
    expect(execWord("it's")).toBe(`"it's"`);
    expect(execWord("a\\b")).toBe(String.raw`"a\\b"`);
    expect(execWord("l1\nl2\tx\x01")).toBe(String.raw`"l1\nl2\tx\x01"`);
    expect(execWord(";")).toBe('";"');
    expect(execWord("")).toBe('""');
  });
});

describe("execLine", () => {
  it("is read back by systemd's rules as the same argv", () => {
    const argv = [
      "/bin/sh",
      "-c",
      `echo "$HOME" 'x' \\ 100% %n $$ \${A};`,
      "",
      ";",
      "tab\there",
      "new\nline",
      "ünïcödé",
      "\\",
      "a'b\"c",
    ];
    expect(systemdArgv(execLine(argv))).toEqual(argv);
  });
});
