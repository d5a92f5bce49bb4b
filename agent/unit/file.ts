// Unit file text <-> options, byte-compatible with the go-systemd `unit` package that fleet uses
// (Deserialize after go-systemd PR #108, which keeps line continuations in values, and Serialize).
// The hash of a unit is the SHA1 of its serialization, so any difference here would split the
// registry's content-addressed unit bodies from fleet's.
//
// Where go-systemd silently drops text (anything before the first section, the line after a
// comment ending in "\") or accepts nonsense (a section name spanning lines, an empty key, an
// empty file), this parser raises a UnitFileError instead, so no content is lost unnoticed. It also
// takes CRLF line ends, where go-systemd keeps the "\r" and so misses a "\" continuation, and it
// refuses control characters (see controlCharacterIn).

import { createHash } from "node:crypto";
import type { UnitOption } from "../model.js";
import { goQuote, goQuoteRune, goTrimLeft, goTrimSpace } from "./go.js";

/** go-systemd rejects lines of this many bytes or more: systemd silently truncated them. */
const LINE_MAX_BYTES = 2048;

/**
 * A unit, serialized, may have at most this many bytes, and at most UNIT_MAX_OPTIONS options. Real
 * units are a few KiB; the caps keep one unit from filling etcd's replies and every agent's memory.
 */
export const UNIT_MAX_BYTES = 64 * 1024;
export const UNIT_MAX_OPTIONS = 1024;

export class UnitFileError extends Error {
  override readonly name = "UnitFileError";

  /** `message` is the bare problem; the error's message is prefixed `source:line: `. */
  constructor(
    message: string,
    readonly source: string,
    readonly line?: number,
  ) {
    super(`${line === undefined ? source : `${source}:${line}`}: ${message}`);
  }
}

/**
 * The first control character in `text` that a unit may not hold, or undefined. systemd reads a
 * lone "\r" or a "\0" as the end of a line, so one inside a value would run the text after it as a
 * directive of its own while `fleetctl cat` shows a single line; the other C0 and C1 controls and
 * DEL belong in no directive and could rewrite the terminal that shows the unit. A tab is allowed
 * (systemd reads it as a blank). "\n" counts: a value's line continuation ("\" then "\n") is the
 * caller's to strip first.
 */
export function controlCharacterIn(text: string): string | undefined {
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    if ((code < 0x20 && code !== 0x09) || (code >= 0x7f && code <= 0x9f)) return char;
  }
  return undefined;
}

/** How a control character is named in errors: `'\r' (U+000D)`. */
export function describeControlCharacter(char: string): string {
  const code = (char.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0");
  return `control character ${goQuoteRune(char)} (U+${code})`;
}

export function parseUnitFile(text: string, source: string): UnitOption[] {
  const size = Buffer.byteLength(text);
  if (size > UNIT_MAX_BYTES) {
    throw new UnitFileError(`unit file is too large: ${size} bytes, at most ${UNIT_MAX_BYTES}`, source);
  }
  // A leading byte-order mark is editor noise (go-systemd skips it with the other pre-section text).
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (const [index, line] of lines.entries()) {
    if (Buffer.byteLength(line) >= LINE_MAX_BYTES) {
      throw new UnitFileError(`line too long (max ${LINE_MAX_BYTES} bytes)`, source, index + 1);
    }
    const control = controlCharacterIn(line);
    if (control !== undefined) {
      throw new UnitFileError(
        `${describeControlCharacter(control)} is not allowed in a unit file`,
        source,
        index + 1,
      );
    }
  }

  const options: UnitOption[] = [];
  let section: string | undefined;
  let index = 0;
  while (index < lines.length) {
    const content = goTrimLeft(lines[index] ?? "");
    const lineError = (message: string) => new UnitFileError(message, source, index + 1);
    if (content === "") {
      index++;
    } else if (isCommentStart(content)) {
      index = endOfComment(lines, index, source);
    } else if (content.startsWith("[")) {
      section = sectionName(content, lineError);
      index++;
    } else {
      if (section === undefined) throw lineError("line is outside any [Section]");
      const equals = content.indexOf("=");
      if (equals === -1) throw lineError(`expected "Name=Value", found no "=" in ${goQuote(content)}`);
      const name = goTrimSpace(content.slice(0, equals));
      if (name === "") throw lineError("option has an empty name");
      const { value, next } = readValue(lines, index, content.slice(equals + 1));
      options.push({ section, name, value });
      index = next;
    }
  }
  if (options.length === 0) throw new UnitFileError("unit file has no options", source);
  if (options.length > UNIT_MAX_OPTIONS) {
    throw new UnitFileError(`too many options: ${options.length}, at most ${UNIT_MAX_OPTIONS}`, source);
  }
  return options;
}

/**
 * go-systemd Serialize: sections in first-seen order, each `[Section]\n` followed by its options'
 * `Name=Value\n` in their original order, with one blank line between sections.
 */
export function serializeUnit(options: UnitOption[]): string {
  const bySection = new Map<string, UnitOption[]>();
  for (const option of options) {
    const group = bySection.get(option.section);
    if (group) group.push(option);
    else bySection.set(option.section, [option]);
  }
  return [...bySection]
    .map(([section, group]) => `[${section}]\n${group.map((o) => `${o.name}=${o.value}\n`).join("")}`)
    .join("\n");
}

export function unitHash(options: UnitOption[]): string {
  return createHash("sha1").update(serializeUnit(options), "utf8").digest("hex");
}

function isCommentStart(content: string): boolean {
  return content.startsWith("#") || content.startsWith(";");
}

function sectionName(content: string, lineError: (message: string) => UnitFileError): string {
  const close = content.indexOf("]");
  // go-systemd would read on to a "]" on a later line and make the newline part of the name.
  if (close === -1) throw lineError(`unterminated section header ${goQuote(content)}`);
  const name = content.slice(1, close);
  if (name === "") throw lineError("empty section name");
  const trailing = goTrimSpace(content.slice(close + 1));
  if (trailing !== "") throw lineError(`unexpected text after section header: ${goQuote(trailing)}`);
  return name;
}

/**
 * go-systemd treats a comment ending in "\" (ignoring one trailing space) as continuing onto the
 * next line, which it then ignores too. That is harmless for commented-out continuations, but would
 * silently drop an option or header, so a continued comment may only swallow comments or blanks.
 * Returns the index of the first line after the comment.
 */
function endOfComment(lines: string[], start: number, source: string): number {
  let index = start;
  while (continuesComment(lines[index] ?? "") && index + 1 < lines.length) {
    index++;
    const swallowed = goTrimLeft(lines[index] ?? "");
    if (swallowed !== "" && !isCommentStart(swallowed)) {
      throw new UnitFileError(
        `this line would be ignored: the comment on line ${index} ends with "\\" and continues onto it`,
        source,
        index + 1,
      );
    }
  }
  return index + 1;
}

function continuesComment(line: string): boolean {
  return (line.endsWith(" ") ? line.slice(0, -1) : line).endsWith("\\");
}

/**
 * An option value as go-systemd reads it. A line ending in "\" continues the value onto the next
 * line, and the value keeps the backslash, the newline and the next line verbatim (so serializing
 * reproduces the continuation). A blank line ends a continuation. The whole value is trimmed, except
 * that a newline left by a continuation followed by a blank line, or by the end of the file, stays.
 * Returns the value and the index of the first line after it.
 */
function readValue(lines: string[], start: number, afterEquals: string): { value: string; next: number } {
  let value = "";
  let index = start;
  let segment = afterEquals;
  while (goTrimSpace(segment) !== "") {
    value += segment;
    const isLastLine = index === lines.length - 1;
    if (!segment.endsWith("\\") || isLastLine) break;
    value += "\n";
    index++;
    segment = lines[index] ?? "";
  }
  const trimmed = goTrimSpace(value);
  return { value: value.endsWith("\n") ? `${trimmed}\n` : trimmed, next: index + 1 };
}
