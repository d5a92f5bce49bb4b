import { describe, expect, it } from "vitest";
import { slotStatus } from "../../agent/update/slots.js";
import { jittered, localFacts, osReleaseVersion } from "../../agent/update/updater.js";

describe("osReleaseVersion", () => {
  it("reads the image's IMAGE_VERSION, not Debian's VERSION_ID", () => {
    const text =
      'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nIMAGE_ID=flotilla\nIMAGE_VERSION=0.1.0\n';
    expect(osReleaseVersion(text)).toBe("0.1.0");
    expect(osReleaseVersion('IMAGE_VERSION="1.2.3"\n')).toBe("1.2.3");
    expect(osReleaseVersion('VERSION_ID="12"\n')).toBeUndefined();
  });
});

describe("jittered", () => {
  it("spreads over ±25%", () => {
    expect(jittered(1000, () => 0)).toBe(750);
    expect(jittered(1000, () => 0.5)).toBe(1000);
    expect(jittered(1000, () => 0.999999)).toBe(1250);
  });
});

describe("localFacts", () => {
  const pending = {
    version: "1.1.0",
    slot: "B" as const,
    group: "default",
    installedAt: "2026-01-01T00:00:00Z",
  };

  it("nothing pending: nothing written", () => {
    expect(localFacts(undefined, slotStatus(["flotilla-a.conf"], "A"))).toEqual({});
  });

  it("written once the slot's entry exists with a try left", () => {
    expect(localFacts(pending, slotStatus(["flotilla-a.conf", "flotilla-b+1.conf"], "A"))).toEqual({
      pending: "1.1.0",
      written: "1.1.0",
    });
  });

  it("a crash before the entry was written: pending but not written, so it is installed again", () => {
    expect(localFacts(pending, slotStatus(["flotilla-a.conf"], "A"))).toEqual({ pending: "1.1.0" });
  });

  it("booted into it, or its tries spent: not written", () => {
    expect(localFacts(pending, slotStatus(["flotilla-a.conf", "flotilla-b+0-1.conf"], "B"))).toEqual({
      pending: "1.1.0",
    });
    expect(localFacts(pending, slotStatus(["flotilla-a.conf", "flotilla-b+0-1.conf"], "A"))).toEqual({
      pending: "1.1.0",
    });
  });
});
