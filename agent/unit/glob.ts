// Go's path.Match semantics, which fleet uses for Conflicts= and Replaces= patterns:
// `*` matches any run of non-'/' characters and `?` one non-'/' character; `[...]` is a class
// of characters and ranges, negated by a leading `^`, that (unlike `?`) can match '/'; `\`
// escapes the next character, also inside a class. In a class, an unescaped `-` or `]` cannot
// start a range, so `[]a]`, `[-a]` and `[a-]` are malformed, while a reversed range such as
// `[z-a]` is well-formed and matches nothing. A malformed pattern (Go's ErrBadPattern) matches
// nothing. Characters are code points, as Go's are runes.

export function matchGlob(pattern: string, name: string): boolean {
  return compiled(pattern)?.test(name) ?? false;
}

export function isValidGlob(pattern: string): boolean {
  return compiled(pattern) !== undefined;
}

/** Compiled patterns, undefined for malformed ones; scheduling matches the same few patterns often. */
const cache = new Map<string, RegExp | undefined>();

function compiled(pattern: string): RegExp | undefined {
  if (!cache.has(pattern)) cache.set(pattern, compile(pattern));
  return cache.get(pattern);
}

function compile(pattern: string): RegExp | undefined {
  const chars = Array.from(pattern);
  let source = "";
  for (let i = 0; i < chars.length; i++) {
    const char = chars[i];
    if (char === "*") {
      source += "[^/]*";
    } else if (char === "?") {
      source += "[^/]";
    } else if (char === "[") {
      const charClass = compileClass(chars, i + 1);
      if (charClass === undefined) return undefined;
      source += charClass.source;
      i = charClass.close;
    } else {
      const literal = char === "\\" ? chars[++i] : char;
      if (literal === undefined) return undefined;
      source += literal.replace(/[\\^$.*+?()[\]{}|/]/, "\\$&");
    }
  }
  return new RegExp(`^${source}$`, "u");
}

/** The class whose body starts at `start`, and the index of its closing "]". */
function compileClass(chars: string[], start: number): { source: string; close: number } | undefined {
  let i = start;
  const negated = chars[i] === "^";
  if (negated) i++;

  // Go's getEsc: one possibly escaped character that must be followed by more pattern.
  const classChar = (): string | undefined => {
    let char = chars[i];
    if (char === "-" || char === "]") return undefined;
    if (char === "\\") char = chars[++i];
    i++;
    return i < chars.length ? char : undefined;
  };

  let ranges = "";
  let rangeCount = 0;
  while (!(chars[i] === "]" && rangeCount > 0)) {
    const low = classChar();
    if (low === undefined) return undefined;
    let high = low;
    if (chars[i] === "-") {
      i++;
      const end = classChar();
      if (end === undefined) return undefined;
      high = end;
    }
    // A reversed range is not an error in Go, it just matches nothing; a JavaScript class rejects it.
    if ((low.codePointAt(0) ?? 0) <= (high.codePointAt(0) ?? 0)) {
      ranges += `${escapeInClass(low)}-${escapeInClass(high)}`;
    }
    rangeCount++;
  }
  // An empty JavaScript class matches nothing, and a negated empty one any character: as in Go.
  return { source: `[${negated ? "^" : ""}${ranges}]`, close: i };
}

function escapeInClass(char: string): string {
  return char.replace(/[\\\]^[-]/, "\\$&");
}
