import { describe, expect, it } from "vitest";
import { forEachBounded } from "../../agent/bounded.js";

describe("forEachBounded", () => {
  it("keeps at most `limit` calls in flight and calls every item once", async () => {
    let inFlight = 0;
    let most = 0;
    const seen: number[] = [];
    await forEachBounded([...Array(20).keys()], 4, async (i) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 1));
      seen.push(i);
      inFlight--;
    });
    expect(most).toBe(4);
    expect(seen.sort((a, b) => a - b)).toEqual([...Array(20).keys()]);
  });

  it("finishes the other items when one fails, then throws the first error", async () => {
    const done: number[] = [];
    await expect(
      forEachBounded([1, 2, 3, 4], 2, async (i) => {
        if (i === 2) throw new Error("item 2 failed");
        done.push(i);
      }),
    ).rejects.toThrow("item 2 failed");
    expect(done.sort()).toEqual([1, 3, 4]);
  });
});
