// Go's path.Match semantics, which fleet uses for Conflicts= and Replaces= patterns:
// `*` matches any run of non-'/' characters and `?` one non-'/' character; `[...]` is a class
// of characters and ranges, negated by a leading `^`, that (unlike `?`) can match '/'; `\`
// escapes the next character, also inside a class. In a class, an unescaped `-` or `]` cannot
// start a range, so `[]a]`, `[-a]` and `[a-]` are malformed, while a reversed range such as
// `[z-a]` is well-formed and matches nothing. A malformed pattern (Go's ErrBadPattern) matches
// nothing. Characters are code points, as Go's are runes.
//
// Matching follows Go's algorithm rather than a regular expression: a pattern splits at its stars
// into fixed-length chunks, and each chunk after a star takes the leftmost place it fits, so
// matching is linear in pattern times name, where a backtracking RegExp can take exponential
// time on a pattern such as `a*a*a*a*b`.

/** Matches through the cache of parsed patterns: for scheduling, which matches stored units' patterns. */
export function matchGlob(pattern: string, name: string): boolean {
  const chunks = compiled(pattern);
  return chunks !== undefined && matchChunks(chunks, Array.from(name));
}

/** Checks a pattern without caching it: what a request brings may yet be refused. */
export function isValidGlob(pattern: string): boolean {
  return parse(pattern) !== undefined;
}

/** A matcher for one pattern that bypasses the cache (for checking a request); undefined if malformed. */
export function globMatcher(pattern: string): ((name: string) => boolean) | undefined {
  const chunks = parse(pattern);
  return chunks === undefined ? undefined : (name) => matchChunks(chunks, Array.from(name));
}

type Item =
  | { kind: "anyButSlash" }
  | { kind: "char"; char: string }
  | { kind: "class"; negated: boolean; ranges: [low: number, high: number][] };

/** Items that must match consecutive characters, after a star when `afterStar`. */
interface Chunk {
  afterStar: boolean;
  items: Item[];
}

/**
 * Parsed patterns, undefined for malformed ones: scheduling matches the same few patterns often.
 * Bounded, least recently used out first, both in entries and in pattern characters (a parsed
 * character costs tens of bytes), so however many patterns units carry the cache stays a few MB.
 */
export const GLOB_CACHE_MAX_ENTRIES = 4096;
export const GLOB_CACHE_MAX_CHARS = 256 * 1024;
const cache = new Map<string, Chunk[] | undefined>();
let cachedChars = 0;

function compiled(pattern: string): Chunk[] | undefined {
  if (cache.has(pattern)) {
    const chunks = cache.get(pattern);
    // A Map iterates in insertion order: re-inserting makes this the most recently used.
    cache.delete(pattern);
    cache.set(pattern, chunks);
    return chunks;
  }
  const chunks = parse(pattern);
  if (pattern.length > GLOB_CACHE_MAX_CHARS) return chunks;
  cache.set(pattern, chunks);
  cachedChars += pattern.length;
  for (const oldest of cache.keys()) {
    if (cache.size <= GLOB_CACHE_MAX_ENTRIES && cachedChars <= GLOB_CACHE_MAX_CHARS) break;
    cache.delete(oldest);
    cachedChars -= oldest.length;
  }
  return chunks;
}

/** How full the cache is, for tests and diagnostics. */
export function globCacheSize(): { entries: number; chars: number } {
  return { entries: cache.size, chars: cachedChars };
}

function parse(pattern: string): Chunk[] | undefined {
  const chars = Array.from(pattern);
  const chunks: Chunk[] = [];
  let chunk: Chunk = { afterStar: false, items: [] };
  for (let i = 0; i < chars.length; i++) {
    const char = chars[i];
    if (char === "*") {
      // Consecutive stars are one star.
      if (chunk.items.length > 0) {
        chunks.push(chunk);
        chunk = { afterStar: true, items: [] };
      }
      chunk.afterStar = true;
    } else if (char === "?") {
      chunk.items.push({ kind: "anyButSlash" });
    } else if (char === "[") {
      const charClass = parseClass(chars, i + 1);
      if (charClass === undefined) return undefined;
      chunk.items.push(charClass.item);
      i = charClass.close;
    } else {
      const literal = char === "\\" ? chars[++i] : char;
      if (literal === undefined) return undefined;
      chunk.items.push({ kind: "char", char: literal });
    }
  }
  if (chunk.afterStar || chunk.items.length > 0) chunks.push(chunk);
  return chunks;
}

/** The class whose body starts at `start`, and the index of its closing "]". */
function parseClass(chars: string[], start: number): { item: Item; close: number } | undefined {
  let i = start;
  const negated = chars[i] === "^";
  if (negated) i++;

  // Go's getEsc: one possibly escaped character that must be followed by more pattern.
  const classChar = (): number | undefined => {
    let char = chars[i];
    if (char === "-" || char === "]") return undefined;
    if (char === "\\") char = chars[++i];
    i++;
    return char !== undefined && i < chars.length ? char.codePointAt(0) : undefined;
  };

  const ranges: [number, number][] = [];
  while (!(chars[i] === "]" && ranges.length > 0)) {
    const low = classChar();
    if (low === undefined) return undefined;
    let high = low;
    if (chars[i] === "-") {
      i++;
      const end = classChar();
      if (end === undefined) return undefined;
      high = end;
    }
    ranges.push([low, high]);
  }
  return { item: { kind: "class", negated, ranges }, close: i };
}

/** Go's Match loop over chunks. */
function matchChunks(chunks: Chunk[], name: string[]): boolean {
  let position = 0;
  for (const [index, { afterStar, items }] of chunks.entries()) {
    const isLast = index === chunks.length - 1;
    // A trailing star takes the rest of the name, as long as it has no '/'.
    if (afterStar && items.length === 0) return !name.slice(position).includes("/");
    // The last chunk must end at the end of the name; an earlier one may end anywhere.
    const fits = (end: number | undefined): end is number =>
      end !== undefined && (!isLast || end === name.length);

    let end = matchChunk(items, name, position);
    if (!fits(end) && afterStar) {
      for (let skip = position; skip < name.length && name[skip] !== "/"; skip++) {
        end = matchChunk(items, name, skip + 1);
        if (fits(end)) break;
      }
    }
    if (!fits(end)) return false;
    position = end;
  }
  return position === name.length;
}

/** Where `items` stop matching `name` from `start`, or undefined when they do not match there. */
function matchChunk(items: Item[], name: string[], start: number): number | undefined {
  if (start + items.length > name.length) return undefined;
  for (const [offset, item] of items.entries()) {
    if (!matchItem(item, name[start + offset] ?? "")) return undefined;
  }
  return start + items.length;
}

function matchItem(item: Item, char: string): boolean {
  switch (item.kind) {
    case "anyButSlash":
      return char !== "/";
    case "char":
      return char === item.char;
    case "class": {
      const code = char.codePointAt(0) ?? -1;
      const inRange = item.ranges.some(([low, high]) => low <= code && code <= high);
      return inRange !== item.negated;
    }
  }
}
