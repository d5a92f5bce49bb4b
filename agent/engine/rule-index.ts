// The Conflicts and Replaces relations between one pass's units, found without matching every
// pattern against every name. A pattern is matched against a name at most once per pass:
// patterns are grouped by their literal prefix (the characters before the first `*`, `?`, `[` or
// `\`, which every name a pattern matches starts with), and the names a pattern may match are the
// range of sorted names with that prefix. The rules themselves (which pattern applies to what)
// stay in eligibility.ts. Built once per pass over a fixed set of units.

import { matchGlob } from "../unit/index.js";
import type { RuleIndex, UnitRef } from "./eligibility.js";

export class RuleIndexOfUnits implements RuleIndex {
  private readonly byName = new Map<string, UnitRef>();
  /** All names in code-unit order, for prefix ranges. */
  private readonly names: string[];
  private readonly conflictPatterns = new PatternsByPrefix();
  private readonly replacePatterns = new PatternsByPrefix();
  /** The names each pattern matches. */
  private readonly matched = new Map<string, ReadonlySet<string>>();
  private readonly conflictingOf = new Map<string, readonly ReadonlySet<string>[]>();
  private readonly replacingOf = new Map<string, ReadonlySet<string>>();
  private readonly replacedOf = new Map<string, ReadonlySet<string>>();

  constructor(units: Iterable<UnitRef>) {
    for (const unit of units) this.byName.set(unit.name, unit);
    for (const unit of this.byName.values()) {
      for (const p of unit.requirements.conflicts) this.conflictPatterns.add(p, unit.name);
      for (const p of unit.requirements.replaces) this.replacePatterns.add(p, unit.name);
    }
    this.names = [...this.byName.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** The names unit's patterns match, and the owners of the patterns matching its name. */
  conflicting(unit: UnitRef): readonly ReadonlySet<string>[] {
    return memo(this.conflictingOf, unit.name, () => [
      ...unit.requirements.conflicts.map((p) => this.matching(p)),
      ...this.conflictPatterns.matching(unit.name),
    ]);
  }

  replacing(unit: UnitRef): ReadonlySet<string> {
    return memo(this.replacingOf, unit.name, () => {
      const out = new Set<string>();
      for (const owners of this.replacePatterns.matching(unit.name)) {
        for (const name of owners) if (name !== unit.name && !this.replacesName(unit, name)) out.add(name);
      }
      return out;
    });
  }

  /** Units that `unit` displaces: those `other` for which `replaces(unit, other)`. */
  replaced(unit: UnitRef): ReadonlySet<string> {
    return memo(this.replacedOf, unit.name, () => {
      const out = new Set<string>();
      for (const p of unit.requirements.replaces) {
        for (const name of this.matching(p)) {
          const other = this.byName.get(name);
          if (other && name !== unit.name && !this.replacesName(other, unit.name)) out.add(name);
        }
      }
      return out;
    });
  }

  private replacesName(unit: UnitRef, name: string): boolean {
    return unit.requirements.replaces.some((p) => this.matching(p).has(name));
  }

  private matching(pattern: string): ReadonlySet<string> {
    return memo(this.matched, pattern, () => {
      const prefix = literalPrefix(pattern);
      const out = new Set<string>();
      for (let i = lowerBound(this.names, prefix); i < this.names.length; i++) {
        const name = this.names[i] as string;
        if (!name.startsWith(prefix)) break;
        if (matchGlob(pattern, name)) out.add(name);
      }
      return out;
    });
  }
}

/** Patterns grouped by literal prefix, with the units that hold each. */
class PatternsByPrefix {
  private readonly byPrefix = new Map<string, Map<string, Set<string>>>();
  private readonly lengths = new Set<number>();

  add(pattern: string, owner: string): void {
    const prefix = literalPrefix(pattern);
    this.lengths.add(prefix.length);
    const patterns = this.byPrefix.get(prefix) ?? new Map<string, Set<string>>();
    this.byPrefix.set(prefix, patterns);
    const owners = patterns.get(pattern) ?? new Set<string>();
    patterns.set(pattern, owners);
    owners.add(owner);
  }

  /** The owners of each pattern that matches `name`. */
  matching(name: string): ReadonlySet<string>[] {
    const out: ReadonlySet<string>[] = [];
    for (const length of this.lengths) {
      if (length > name.length) continue;
      for (const [pattern, owners] of this.byPrefix.get(name.slice(0, length)) ?? []) {
        if (matchGlob(pattern, name)) out.push(owners);
      }
    }
    return out;
  }
}

function literalPrefix(pattern: string): string {
  const special = pattern.search(/[*?[\\]/);
  return special === -1 ? pattern : pattern.slice(0, special);
}

/** The first index whose name is not below `key`. */
function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function memo<V>(cache: Map<string, V>, key: string, make: () => V): V {
  let value = cache.get(key);
  if (value === undefined) {
    value = make();
    cache.set(key, value);
  }
  return value;
}
