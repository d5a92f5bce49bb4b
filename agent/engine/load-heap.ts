// Machines ordered by load, then ID: the scheduler's "least loaded, ties to the lower ID" without
// scanning every machine. Loads change as units are placed and moved; `touch` records a machine's
// new load and the outdated entries are dropped when they reach the top.

import { compare } from "./eligibility.js";

interface Entry {
  load: number;
  id: string;
}

export class LoadHeap {
  private readonly heap: Entry[] = [];

  /** `load` gives a machine's current load. */
  constructor(private readonly load: (id: string) => number) {}

  /** Records that a machine's load may have changed (or that it is there at all). */
  touch(id: string): void {
    this.push({ load: this.load(id), id });
  }

  /** The first machine in (load, ID) order that `fits`, or undefined when none does. */
  first(fits: (id: string) => boolean): string | undefined {
    const seen = new Set<string>();
    const keep: Entry[] = [];
    let found: string | undefined;
    while (this.heap.length > 0) {
      const top = this.pop();
      if (top.load !== this.load(top.id) || seen.has(top.id)) continue; // outdated or duplicate
      seen.add(top.id);
      keep.push(top);
      if (fits(top.id)) {
        found = top.id;
        break;
      }
    }
    for (const entry of keep) this.push(entry);
    return found;
  }

  private push(entry: Entry): void {
    const h = this.heap;
    h.push(entry);
    for (let i = h.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!before(h[i] as Entry, h[parent] as Entry)) break;
      [h[i], h[parent]] = [h[parent] as Entry, h[i] as Entry];
      i = parent;
    }
  }

  private pop(): Entry {
    const h = this.heap;
    const top = h[0] as Entry;
    const last = h.pop() as Entry;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let min = i;
        if (l < h.length && before(h[l] as Entry, h[min] as Entry)) min = l;
        if (r < h.length && before(h[r] as Entry, h[min] as Entry)) min = r;
        if (min === i) break;
        [h[i], h[min]] = [h[min] as Entry, h[i] as Entry];
        i = min;
      }
    }
    return top;
  }
}

function before(a: Entry, b: Entry): boolean {
  return a.load !== b.load ? a.load < b.load : compare(a.id, b.id) < 0;
}
