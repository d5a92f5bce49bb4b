// Go's path.Match semantics, which fleet uses for Conflicts= and Replaces= patterns:
// `*` matches any run of non-'/' characters, `?` one non-'/' character, `[...]` a class
// (with `^` negation and `a-z` ranges), and `\` escapes. A malformed pattern matches nothing.

export function matchGlob(pattern: string, name: string): boolean {
  const re = globToRegExp(pattern);
  return re !== undefined && re.test(name);
}

/** Returns undefined for a malformed pattern (Go's ErrBadPattern). */
export function isValidGlob(pattern: string): boolean {
  return globToRegExp(pattern) !== undefined;
}

const cache = new Map<string, RegExp | undefined>();

function globToRegExp(pattern: string): RegExp | undefined {
  if (cache.has(pattern)) return cache.get(pattern);
  const re = compile(pattern);
  cache.set(pattern, re);
  return re;
}

function compile(pattern: string): RegExp | undefined {
  let out = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else if (c === "\\") {
      const next = pattern[++i];
      if (next === undefined) return undefined;
      out += escape(next);
    } else if (c === "[") {
      const end = classEnd(pattern, i + 1);
      if (end < 0) return undefined;
      const cls = compileClass(pattern.slice(i + 1, end));
      if (cls === undefined) return undefined;
      out += cls;
      i = end;
    } else out += escape(c);
  }
  return new RegExp(`${out}$`, "s");
}

function classEnd(pattern: string, from: number): number {
  let i = from;
  if (pattern[i] === "^") i++;
  for (let first = true; i < pattern.length; i++, first = false) {
    if (pattern[i] === "\\") i++;
    else if (pattern[i] === "]" && !first) return i;
  }
  return -1;
}

function compileClass(body: string): string | undefined {
  let i = 0;
  let out = "[";
  if (body[0] === "^") {
    out += "^/";
    i = 1;
  }
  let any = false;
  while (i < body.length) {
    let lo = body[i++] as string;
    if (lo === "\\") {
      if (i >= body.length) return undefined;
      lo = body[i++] as string;
    }
    out += escapeClass(lo);
    if (body[i] === "-" && i + 1 < body.length) {
      let hi = body[i + 1] as string;
      i += 2;
      if (hi === "\\") {
        if (i >= body.length) return undefined;
        hi = body[i++] as string;
      }
      if (hi < lo) return undefined;
      out += `-${escapeClass(hi)}`;
    }
    any = true;
  }
  return any ? `${out}]` : undefined;
}

function escape(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

function escapeClass(c: string): string {
  return c.replace(/[\]\\^-]/g, "\\$&");
}
