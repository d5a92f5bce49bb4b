import { describe, expect, it } from "vitest";
import { insecureRegistriesConf, validateRegistryLocation } from "../../agent/containers/index.js";

describe("insecure registries drop-in", () => {
  it("lists each registry once as insecure, in registries.conf v2 syntax", () => {
    expect(insecureRegistriesConf(["10.0.0.1:5000", "reg.local", "10.0.0.1:5000"])).toBe(
      "# Written by flotilla-agent from its insecure-registries setting; replaced at every start.\n\n" +
        '[[registry]]\nlocation = "10.0.0.1:5000"\ninsecure = true\n\n' +
        '[[registry]]\nlocation = "reg.local"\ninsecure = true\n',
    );
  });

  it("is absent when there are none", () => {
    expect(insecureRegistriesConf([])).toBeUndefined();
  });

  it("accepts registry locations and refuses URLs, quotes and bad ports", () => {
    for (const ok of ["reg", "reg.example.com:5000", "10.0.0.1:5000/team/app", "[fd00::1]:5000"]) {
      expect(validateRegistryLocation(ok), ok).toBeUndefined();
    }
    for (const bad of ["", "http://reg:5000", 'reg"x', "reg:0", "reg:70000", "-reg", "reg name"]) {
      expect(validateRegistryLocation(bad), bad).toBeDefined();
    }
  });
});
