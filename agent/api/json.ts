// JSON in and out the way fleet's Go server does it: object keys match field names
// case-insensitively (encoding/json), HTML-sensitive characters are escaped on output
// (json.Marshal), and a body that does not parse is reported with the line and column.

import { ApiError } from "./errors.js";

/** json.Marshal's output for `value`: no trailing newline, `<`, `>`, `&`, U+2028/9 escaped. */
export function goJSON(value: unknown): string {
  // These characters can only occur inside string literals, so escaping them is always safe.
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Parses a request body; a syntax error becomes a 400 naming where the body went wrong. */
export function parseJSONBody(text: string): unknown {
  if (text.trim() === "") throw new ApiError(400, "unable to decode body: the body is empty");
  try {
    return JSON.parse(text);
  } catch {
    const { offset, problem } = locateJSONError(text);
    const { line, column } = lineAndColumn(text, offset);
    throw new ApiError(
      400,
      `unable to decode body: invalid JSON at line ${line}, column ${column}: ${problem}`,
    );
  }
}

/**
 * The value of field `name` as Go's decoder would pick it: keys equal to `name` ignoring case
 * match, and the last one wins. (fleet's own functional tests send `"Value"` for `value`.)
 */
export function goField(obj: Record<string, unknown>, name: string): unknown {
  const folded = name.toLowerCase();
  let found: unknown;
  for (const [key, value] of Object.entries(obj)) {
    if (key.toLowerCase() === folded) found = value;
  }
  return found;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function describeType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

type Expect = "value" | "valueOrClose" | "key" | "keyOrClose" | "colon" | "commaOrClose" | "end";

/**
 * Offset and description of the first syntax error in `text`. V8's JSON.parse messages often
 * carry no position, so this scanner re-reads the text (only ever called after JSON.parse failed).
 * It is iterative, so deeply nested input cannot overflow the stack.
 */
export function locateJSONError(text: string): { offset: number; problem: string } {
  const stack: ("{" | "[")[] = [];
  let expect: Expect = "value";
  let i = 0;
  const afterValue = (): Expect => (stack.length === 0 ? "end" : "commaOrClose");
  const found = (at: number) => (at >= text.length ? "the end of the body" : quoteChar(text[at] as string));

  for (;;) {
    while (i < text.length && " \t\n\r".includes(text[i] as string)) i++;
    if (i >= text.length) {
      return {
        offset: text.length,
        problem: expect === "end" ? "invalid JSON" : "unexpected end of the body",
      };
    }
    const c = text[i] as string;
    switch (expect) {
      case "end":
        return { offset: i, problem: `unexpected ${quoteChar(c)} after the JSON value` };
      case "colon":
        if (c !== ":") return { offset: i, problem: `expected ':' after a property name, found ${found(i)}` };
        i++;
        expect = "value";
        break;
      case "commaOrClose": {
        const close = stack[stack.length - 1] === "{" ? "}" : "]";
        if (c === ",") {
          i++;
          expect = close === "}" ? "key" : "value";
        } else if (c === close) {
          i++;
          stack.pop();
          expect = afterValue();
        } else {
          return { offset: i, problem: `expected ',' or '${close}', found ${found(i)}` };
        }
        break;
      }
      case "key":
      case "keyOrClose": {
        if (expect === "keyOrClose" && c === "}") {
          i++;
          stack.pop();
          expect = afterValue();
          break;
        }
        if (c !== '"') {
          return { offset: i, problem: `expected a property name in double quotes, found ${found(i)}` };
        }
        const err = scanString(text, i);
        if (typeof err !== "number") return err;
        i = err;
        expect = "colon";
        break;
      }
      case "value":
      case "valueOrClose": {
        if (expect === "valueOrClose" && c === "]") {
          i++;
          stack.pop();
          expect = afterValue();
          break;
        }
        if (c === "{" || c === "[") {
          stack.push(c);
          i++;
          expect = c === "{" ? "keyOrClose" : "valueOrClose";
          break;
        }
        let end: number | { offset: number; problem: string };
        if (c === '"') end = scanString(text, i);
        else if (c === "-" || (c >= "0" && c <= "9")) end = scanNumber(text, i);
        else end = scanLiteral(text, i);
        if (typeof end !== "number") return end;
        i = end;
        expect = afterValue();
        break;
      }
    }
  }
}

function scanString(text: string, start: number): number | { offset: number; problem: string } {
  let i = start + 1;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '"') return i + 1;
    if (c < " ") return { offset: i, problem: "control character inside a string (escape it)" };
    if (c === "\\") {
      const e = text[i + 1];
      if (e === "u") {
        if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          return { offset: i, problem: "invalid \\u escape: expected four hex digits" };
        }
        i += 6;
        continue;
      }
      if (e === undefined || !'"\\/bfnrt'.includes(e)) {
        return {
          offset: i,
          problem: `invalid escape ${e === undefined ? "at the end of the body" : `'\\${e}'`}`,
        };
      }
      i += 2;
      continue;
    }
    i++;
  }
  return { offset: text.length, problem: "unterminated string" };
}

function scanNumber(text: string, start: number): number | { offset: number; problem: string } {
  const re = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  re.lastIndex = start;
  const m = re.exec(text);
  if (!m) return { offset: start, problem: "invalid number" };
  const end = start + m[0].length;
  // "1." or "1e" stop the regex early; name the number rather than the character after it.
  if (/[.eE0-9]/.test(text[end] ?? "")) return { offset: start, problem: "invalid number" };
  return end;
}

function scanLiteral(text: string, start: number): number | { offset: number; problem: string } {
  for (const literal of ["true", "false", "null"]) {
    if (text.startsWith(literal, start)) return start + literal.length;
  }
  return { offset: start, problem: `expected a value, found ${quoteChar(text[start] as string)}` };
}

function quoteChar(c: string): string {
  if (c === "'") return `"'"`;
  // Control characters are shown escaped; anything else as itself.
  return c < " " || c === "\x7f" ? `'${JSON.stringify(c).slice(1, -1)}'` : `'${c}'`;
}

/** 1-based line and column (in characters) of `offset`. */
export function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === "\n") {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}
