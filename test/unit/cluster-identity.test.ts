import { describe, expect, it } from "vitest";
import { decideJoin, expiryGraceMs } from "../../agent/cluster/identity.js";
import type { Machine } from "../../agent/model.js";

const TTL = 5;
const me: Machine = { id: "aaaa", publicIP: "10.0.0.2", metadata: {}, version: "1", runID: "run-1" };

describe("joining when the machine key is taken", () => {
  it("takes the key over from an earlier run of this agent on this boot at once", () => {
    const d = decideJoin(me, { record: { ...me }, lease: "7", modRevision: "3" }, 0, 0, TTL);
    expect(d.kind).toBe("take-over");
  });

  it("waits up to one TTL and a margin for another holder's lease to expire", () => {
    const other = { record: { ...me, publicIP: "10.0.0.3", runID: "run-2" }, lease: "9", modRevision: "3" };
    expect(decideJoin(me, other, 1000, 1000 + expiryGraceMs(TTL) - 1, TTL).kind).toBe("wait");
    // A record without a run ID (an older agent) is not ours either.
    expect(
      decideJoin(me, { record: { ...me, runID: undefined }, lease: "9", modRevision: "3" }, 0, 10, TTL).kind,
    ).toBe("wait");
  });

  it("refuses once the other holder has kept its lease alive past that, naming the ID and its address", () => {
    const other = { record: { ...me, publicIP: "10.0.0.3", runID: "run-2" }, lease: "9", modRevision: "3" };
    const d = decideJoin(me, other, 1000, 1000 + expiryGraceMs(TTL), TTL);
    expect(d.kind).toBe("refuse");
    expect(d.kind === "refuse" && d.message).toMatch(
      /machine ID aaaa is already a live member of the cluster at 10\.0\.0\.3/,
    );
  });

  it("refuses an unreadable record's holder too, without an address", () => {
    const d = decideJoin(me, { record: undefined, lease: "9", modRevision: "3" }, 0, expiryGraceMs(TTL), TTL);
    expect(d.kind === "refuse" && d.message).toMatch(
      /^machine ID aaaa is already a live member of the cluster \(lease 9/,
    );
  });
});
