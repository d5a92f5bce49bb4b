// systemd's command-line syntax in both directions: splitting a value into words the way systemd
// splits ExecStart= and Environment= (extract_first_word with UNQUOTE|CUNESCAPE|RELAX), and
// writing an argv back as an ExecStart= value that systemd reads as exactly that argv.

/** A line continuation kept in a value by the unit parser reads as a space, as systemd reads it. */
const CONTINUATION = /\\(\n|$)/g;

const WHITESPACE = new Set([" ", "\t", "\n", "\r"]);

const SIMPLE_ESCAPES: Record<string, string> = {
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
  s: " ",
  "\\": "\\",
  '"': '"',
  "'": "'",
};

export interface SplitResult {
  words: string[];
  /** The value ended inside a quote; `words` then holds what was read up to there. */
  unterminatedQuote: boolean;
}

/**
 * Words of `value`: separated by whitespace; single or double quotes group (and are dropped, also
 * in mid-word: `A="b c"` is one word); C escapes (`\n`, `\x41`, `\101`, `\u00e9`, `\"`) are decoded
 * inside and outside quotes, and an unknown escape keeps its backslash.
 */
export function splitWords(value: string): SplitResult {
  const text = value.replace(CONTINUATION, " ");
  const words: string[] = [];
  let word: string | undefined;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const char = text.charAt(i);
    if (char === "\\") {
      const { decoded, length } = unescapeAt(text, i + 1);
      word = (word ?? "") + decoded;
      i += length;
    } else if (quote !== undefined) {
      if (char === quote) quote = undefined;
      else word = (word ?? "") + char;
    } else if (char === '"' || char === "'") {
      quote = char;
      word ??= "";
    } else if (WHITESPACE.has(char)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      word = (word ?? "") + char;
    }
  }
  if (word !== undefined) words.push(word);
  return { words, unterminatedQuote: quote !== undefined };
}

/** Hex escapes and their digit counts. */
const HEX_ESCAPES: Record<string, number> = { x: 2, u: 4, U: 8 };

/** Decodes the escape whose letter is at `at`; `length` is how many characters it used after the backslash. */
function unescapeAt(text: string, at: number): { decoded: string; length: number } {
  const letter = text.charAt(at);
  if (letter === "") return { decoded: "\\", length: 0 };
  const simple = SIMPLE_ESCAPES[letter];
  if (simple !== undefined) return { decoded: simple, length: 1 };
  const hexDigits = HEX_ESCAPES[letter];
  if (hexDigits !== undefined) {
    const digits = text.slice(at + 1, at + 1 + hexDigits);
    const value = Number.parseInt(digits, 16);
    if (digits.length === hexDigits && /^[0-9a-fA-F]+$/.test(digits) && value <= 0x10ffff) {
      return { decoded: String.fromCodePoint(value), length: 1 + hexDigits };
    }
  }
  const octal = text.slice(at, at + 3);
  if (/^[0-3][0-7]{2}$/.test(octal))
    return { decoded: String.fromCharCode(Number.parseInt(octal, 8)), length: 3 };
  return { decoded: `\\${letter}`, length: 1 };
}

/** Characters that need no quoting in an ExecStart= word (after % and $ are doubled). */
const PLAIN_WORD = /^[A-Za-z0-9_@%$+=:,./-]+$/;

/**
 * One ExecStart= word that systemd turns back into exactly `word`: `%` becomes `%%` (no specifier
 * expansion), `$` becomes `$$` (no environment substitution), and anything but plain characters is
 * double-quoted with C escapes, which also covers spaces, quotes, backslashes, a lone `;` (a command
 * separator otherwise) and the empty word.
 */
export function execWord(word: string): string {
  const doubled = word.replace(/[%$]/g, (char) => char + char);
  if (PLAIN_WORD.test(word)) return doubled;
  let quoted = '"';
  for (const char of doubled) {
    if (char === "\\" || char === '"') quoted += `\\${char}`;
    else if (char === "\n") quoted += "\\n";
    else if (char === "\t") quoted += "\\t";
    else if (char < " " || char === "\x7f")
      quoted += `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`;
    else quoted += char;
  }
  return `${quoted}"`;
}

/** An ExecStart=-style command line for `argv`. */
export function execLine(argv: readonly string[]): string {
  return argv.map(execWord).join(" ");
}
