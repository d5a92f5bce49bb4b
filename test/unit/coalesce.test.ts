import { describe, expect, it } from "vitest";
import { coalesced } from "../../agent/coalesce.js";

describe("coalesced", () => {
  it("never overlaps runs, and folds calls made during a run into one more run", async () => {
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const release: (() => void)[] = [];
    const run = coalesced(async () => {
      runs++;
      active++;
      maxActive = Math.max(maxActive, active);
      await new Promise<void>((r) => release.push(r));
      active--;
    });
    const first = run();
    const second = run();
    const third = run();
    expect(runs).toBe(1);
    release.shift()?.();
    await new Promise((r) => setTimeout(r, 0));
    expect(runs).toBe(2);
    release.shift()?.();
    await Promise.all([first, second, third]);
    expect(runs).toBe(2);
    expect(maxActive).toBe(1);
  });

  it("starts afresh after a run that threw", async () => {
    let runs = 0;
    const run = coalesced(async () => {
      runs++;
      if (runs === 1) throw new Error("boom");
    });
    await expect(run()).rejects.toThrow("boom");
    await run();
    expect(runs).toBe(2);
  });
});
