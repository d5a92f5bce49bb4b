// Go standard-library behaviour that fleet's parsing and messages depend on. JavaScript's
// built-ins differ in small ways (trim() strips U+FEFF but keeps U+0085, JSON quoting is not %q),
// and those differences would change option values, and so hashes, or error texts.

/** The characters Go's unicode.IsSpace accepts. */
const GO_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

export function isGoSpace(char: string): boolean {
  return GO_SPACE.test(char);
}

/** strings.TrimSpace. None of Go's space characters is astral, so UTF-16 indexing is safe. */
export function goTrimSpace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isGoSpace(text.charAt(start))) start++;
  while (end > start && isGoSpace(text.charAt(end - 1))) end--;
  return text.slice(start, end);
}

/** strings.TrimLeftFunc(text, unicode.IsSpace). */
export function goTrimLeft(text: string): string {
  let start = 0;
  while (start < text.length && isGoSpace(text.charAt(start))) start++;
  return text.slice(start);
}

/** fmt's %q for a string (strconv.Quote). */
export function goQuote(text: string): string {
  let out = '"';
  for (const char of text) out += char === '"' ? '\\"' : escapeForGo(char);
  return `${out}"`;
}

/** fmt's %q for a rune (strconv.QuoteRune). */
export function goQuoteRune(char: string): string {
  return `'${char === "'" ? "\\'" : escapeForGo(char)}'`;
}

/** path.Base: the last slash-separated element; "." for "" and "/" for all slashes. */
export function goPathBase(path: string): string {
  if (path === "") return ".";
  const trimmed = path.replace(/\/+$/, "");
  if (trimmed === "") return "/";
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

const NAMED_ESCAPES = new Map([
  ["\x07", "\\a"],
  ["\b", "\\b"],
  ["\f", "\\f"],
  ["\n", "\\n"],
  ["\r", "\\r"],
  ["\t", "\\t"],
  ["\v", "\\v"],
  ["\\", "\\\\"],
]);

/** Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space. */
const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;

function escapeForGo(char: string): string {
  const named = NAMED_ESCAPES.get(char);
  if (named !== undefined) return named;
  if (PRINTABLE.test(char)) return char;
  const code = char.codePointAt(0) ?? 0;
  if (code < 0x80) return `\\x${hex(code, 2)}`;
  if (code <= 0xffff) return `\\u${hex(code, 4)}`;
  return `\\U${hex(code, 8)}`;
}

function hex(code: number, width: number): string {
  return code.toString(16).padStart(width, "0");
}
