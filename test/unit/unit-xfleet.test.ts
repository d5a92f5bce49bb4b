import { describe, expect, it } from "vitest";
import type { Requirements } from "../../agent/model.js";
import { parseRequirements, parseUnitFile, validateRequirements } from "../../agent/unit/index.js";

/** Requirements and warnings of unit `name` whose [X-Fleet] section has the given lines. */
function xfleet(name: string, ...lines: string[]) {
  const text = `[Service]\nExecStart=/bin/true\n\n[X-Fleet]\n${lines.join("\n")}\n`;
  return parseRequirements(name, parseUnitFile(text, name));
}

const requirementsOf = (name: string, ...lines: string[]) => xfleet(name, ...lines).requirements;

const none: Requirements = { machineOf: [], metadata: {}, conflicts: [], global: false, replaces: [] };

/** validateRequirements of a unit with the given [X-Fleet] lines. */
const errorsOf = (name: string, ...lines: string[]) =>
  validateRequirements(name, requirementsOf(name, ...lines));

describe("parseRequirements", () => {
  it("has empty requirements without an [X-Fleet] section", () => {
    const options = parseUnitFile("[Service]\nExecStart=/bin/true\n", "a.service");
    expect(parseRequirements("a.service", options)).toEqual({ requirements: none, warnings: [] });
  });

  it("reads only the [X-Fleet] section", () => {
    const options = parseUnitFile("[Service]\nMachineID=abc\nGlobal=true\n", "a.service");
    expect(parseRequirements("a.service", options).requirements).toEqual(none);
  });

  describe("MachineID", () => {
    it("pins the unit", () => {
      expect(requirementsOf("a.service", "MachineID=113f16a7")).toEqual({ ...none, machineID: "113f16a7" });
    });

    it("takes the first value", () => {
      expect(requirementsOf("a.service", "MachineID=first", "MachineID=second").machineID).toBe("first");
      expect(requirementsOf("a.service", 'MachineID="one" "two"').machineID).toBe("one");
    });

    it("prefers MachineID, then X-ConditionMachineID, then X-ConditionMachineBootID, whatever the order", () => {
      const all = ["X-ConditionMachineBootID=boot", "X-ConditionMachineID=legacy", "MachineID=modern"];
      expect(requirementsOf("a.service", ...all).machineID).toBe("modern");
      expect(requirementsOf("a.service", ...all.slice(0, 2)).machineID).toBe("legacy");
      expect(requirementsOf("a.service", all[0] as string).machineID).toBe("boot");
    });

    it("ignores an empty value", () => {
      expect(requirementsOf("a.service", "MachineID=", "MachineID=abc").machineID).toBe("abc");
      expect(requirementsOf("a.service", "MachineID=")).toEqual(none);
    });

    it("warns about more than one value on a line", () => {
      const { requirements, warnings } = xfleet("a.service", "MachineID=abc def");
      expect(requirements.machineID).toBe("abc");
      expect(warnings).toEqual(['[X-Fleet] MachineID takes one value, got "abc def"']);
    });
  });

  describe("MachineOf", () => {
    it("collects peers from every line and both spellings, in file order", () => {
      expect(
        requirementsOf(
          "a.service",
          "MachineOf=b.service",
          "X-ConditionMachineOf=c.service",
          "MachineOf=d.service e.service",
        ).machineOf,
      ).toEqual(["b.service", "c.service", "d.service", "e.service"]);
    });

    it("drops duplicates", () => {
      expect(requirementsOf("a.service", "MachineOf=b.service", "MachineOf=b.service").machineOf).toEqual([
        "b.service",
      ]);
    });
  });

  describe("MachineMetadata", () => {
    it("reads one pair", () => {
      expect(requirementsOf("a.service", "MachineMetadata=region=us-east-1").metadata).toEqual({
        region: ["us-east-1"],
      });
    });

    it("reads several quoted pairs on one line (fleet's documented form)", () => {
      expect(
        requirementsOf("a.service", 'MachineMetadata="region=us-east-1" "diskType=SSD"').metadata,
      ).toEqual({
        region: ["us-east-1"],
        diskType: ["SSD"],
      });
    });

    it("reads several unquoted pairs on one line", () => {
      expect(requirementsOf("a.service", "MachineMetadata=region=us-east-1 diskType=SSD").metadata).toEqual({
        region: ["us-east-1"],
        diskType: ["SSD"],
      });
    });

    it("keeps spaces inside quotes", () => {
      expect(requirementsOf("a.service", 'MachineMetadata="role=web server" zone="a b"').metadata).toEqual({
        role: ["web server"],
        zone: ["a b"],
      });
    });

    it("collects the values of one key across lines and spellings (they are ORed)", () => {
      expect(
        requirementsOf(
          "a.service",
          "MachineMetadata=region=us-east-1",
          "X-ConditionMachineMetadata=region=us-west-1",
          "MachineMetadata=region=us-east-1",
        ).metadata,
      ).toEqual({ region: ["us-east-1", "us-west-1"] });
    });

    it("splits at the first '='", () => {
      expect(requirementsOf("a.service", "MachineMetadata=k=v=w").metadata).toEqual({ k: ["v=w"] });
    });

    it("keeps malformed pairs under the empty key, which no machine matches", () => {
      expect(requirementsOf("a.service", 'MachineMetadata=ok=1 bare =novalue nokey= ""').metadata).toEqual({
        ok: ["1"],
        "": ["bare", "=novalue", "nokey=", ""],
      });
    });

    it("treats __proto__ as an ordinary key", () => {
      const { metadata } = requirementsOf("a.service", "MachineMetadata=__proto__=x");
      expect(Object.keys(metadata)).toEqual(["__proto__"]);
      expect(Object.getPrototypeOf(metadata)).toBe(Object.prototype);
    });

    it("warns about an unterminated quote", () => {
      const { requirements, warnings } = xfleet("a.service", 'MachineMetadata="region=us east');
      expect(requirements.metadata).toEqual({ region: ["us east"] });
      expect(warnings).toEqual(['[X-Fleet] MachineMetadata has an unterminated quote: "\\"region=us east"']);
    });
  });

  describe("Conflicts and Replaces", () => {
    it("split on whitespace and accumulate across lines and spellings", () => {
      const requirements = requirementsOf(
        "a.service",
        "Conflicts=conflict.2.service conflict.1.service\tconflict.0.service",
        "X-Conflicts=old*.service",
        "Conflicts=web@*.service",
      );
      expect(requirements.conflicts).toEqual([
        "conflict.2.service",
        "conflict.1.service",
        "conflict.0.service",
        "old*.service",
        "web@*.service",
      ]);
    });

    it("read Replaces like Conflicts", () => {
      expect(
        requirementsOf("a.service", "Replaces=old.service", "Replaces=older*.service x.service").replaces,
      ).toEqual(["old.service", "older*.service", "x.service"]);
    });

    it("read a continued value as if the continuation were a space", () => {
      const text = "[X-Fleet]\nConflicts=a.service \\\n  b.service \\\n\n";
      const options = parseUnitFile(text, "x.service");
      expect(parseRequirements("x.service", options).requirements.conflicts).toEqual([
        "a.service",
        "b.service",
      ]);
    });
  });

  describe("Global", () => {
    it.each(["true", "yes", "1", "on", "t", "TRUE", "Yes", "On", "T", '"true"'])(
      "is true for %j",
      (value) => {
        expect(requirementsOf("a.service", `Global=${value}`).global).toBe(true);
      },
    );

    it.each(["false", "no", "0", "off", "", "y", "enabled", "truee"])("is false for %j", (value) => {
      expect(requirementsOf("a.service", `Global=${value}`).global).toBe(false);
    });

    it("takes the last value, so an empty one resets it", () => {
      expect(requirementsOf("a.service", "Global=false", "Global=true").global).toBe(true);
      expect(requirementsOf("a.service", "Global=true", "Global=false").global).toBe(false);
      expect(requirementsOf("a.service", "Global=true", "Global=").global).toBe(false);
    });

    it("warns about a line with several values and takes the last", () => {
      const { requirements, warnings } = xfleet("a.service", "Global=true # everywhere");
      expect(requirements.global).toBe(false);
      expect(warnings).toEqual(['[X-Fleet] Global takes one value, got "true # everywhere"']);
    });
  });

  describe("ServiceName (Flotilla)", () => {
    it("names the service for discovery", () => {
      expect(xfleet("api@1.service", "ServiceName=api")).toEqual({
        requirements: { ...none, serviceName: "api" },
        warnings: [],
      });
    });

    it("takes the last value, and an empty one restores the default", () => {
      expect(requirementsOf("a.service", "ServiceName=one", "ServiceName=two").serviceName).toBe("two");
      expect(requirementsOf("a.service", "ServiceName=one", "ServiceName=")).toEqual(none);
    });

    it("expands specifiers", () => {
      expect(requirementsOf("db@eu.service", "ServiceName=%p-%i").serviceName).toBe("db-eu");
    });
  });

  describe("specifiers", () => {
    it("expand %n %N %p %i for an instance", () => {
      const requirements = requirementsOf(
        "web@blue.service",
        "MachineOf=%p-sidekick@%i.service",
        "Conflicts=%n %N*",
      );
      expect(requirements.machineOf).toEqual(["web-sidekick@blue.service"]);
      expect(requirements.conflicts).toEqual(["web@blue.service", "web@blue*"]);
    });

    it("give %N the name without suffix and %i nothing for a plain unit", () => {
      const requirements = requirementsOf("hello.service", "Conflicts=%N-%i-%p.x");
      expect(requirements.conflicts).toEqual(["hello--hello.x"]);
    });

    it("keep the '@' in %N for a template", () => {
      expect(requirementsOf("hello@.service", "Conflicts=%N").conflicts).toEqual(["hello@"]);
    });

    it("serve fleet's pin@.service and metadata@.service fixtures", () => {
      expect(requirementsOf("pin@113f16a7.service", "MachineID=%i").machineID).toBe("113f16a7");
      expect(requirementsOf("metadata@smoke1.service", "MachineMetadata=hostname=%i").metadata).toEqual({
        hostname: ["smoke1"],
      });
    });

    it("leave a template's instance-dependent values to its instances", () => {
      // fleet's own fixture, as written: accepted on the template, checked per instance.
      expect(
        requirementsOf("metadata@.service", "MachineMetadata=hostname=%i", "MachineMetadata=disk=ssd"),
      ).toEqual({
        ...none,
        metadata: { disk: ["ssd"] },
      });
      expect(errorsOf("metadata@.service", "MachineMetadata=hostname=%i")).toEqual([]);
      expect(
        requirementsOf("pin@.service", "MachineID=%i", "ServiceName=db-%i", "Conflicts=%p@%i-*"),
      ).toEqual(none);
      // Values without %i still count on the template, and %n there is the template's own name.
      expect(requirementsOf("web@.service", "Conflicts=%n %p@*").conflicts).toEqual([
        "web@.service",
        "web@*",
      ]);
      expect(errorsOf("web@.service", "MachineMetadata=hostname=")).toEqual([
        'invalid MachineMetadata "hostname=": want key=value',
      ]);
      // An instance gets the value: an empty one is refused there.
      expect(errorsOf("metadata@x.service", "MachineMetadata=hostname=%i")).toEqual([]);
      expect(requirementsOf("metadata@x.service", "MachineMetadata=hostname=%i").metadata).toEqual({
        hostname: ["x"],
      });
    });

    it("are replaced one after another, as fleet's unitPrintf does", () => {
      // "%%n" becomes "%pod.service", whose "%p" is then expanded too.
      expect(requirementsOf("pod.service", "Conflicts=%%n").conflicts).toEqual(["podod.service"]);
    });

    it("are not expanded outside [X-Fleet]", () => {
      const options = parseUnitFile("[Service]\nExecStart=/bin/echo %i\n", "a@b.service");
      expect(options[0]?.value).toBe("/bin/echo %i");
    });

    it("leave other specifiers alone", () => {
      expect(requirementsOf("a@b.service", "Conflicts=%H%u%%").conflicts).toEqual(["%H%u%%"]);
    });
  });

  describe("warnings", () => {
    it("name an unrecognized option once, in fleet's words", () => {
      expect(xfleet("a.service", "Foo=1", "Foo=2", "machineid=x", "Weight=3").warnings).toEqual([
        'unrecognized requirement in [X-Fleet] section: "Foo"',
        'unrecognized requirement in [X-Fleet] section: "machineid"',
        'unrecognized requirement in [X-Fleet] section: "Weight"',
      ]);
    });

    it("quote names as Go's %q does", () => {
      expect(xfleet("a.service", "Fo\to=1", "Café☺=1", 'Say"hi"=1').warnings).toEqual([
        'unrecognized requirement in [X-Fleet] section: "Fo\\to"',
        'unrecognized requirement in [X-Fleet] section: "Café☺"',
        'unrecognized requirement in [X-Fleet] section: "Say\\"hi\\""',
      ]);
    });

    it("flag a section that differs from [X-Fleet] only in case, once", () => {
      const options = parseUnitFile("[X-FLEET]\nGlobal=true\nConflicts=x\n", "a.service");
      expect(parseRequirements("a.service", options)).toEqual({
        requirements: none,
        warnings: ["section [X-FLEET] is ignored: did you mean [X-Fleet]?"],
      });
    });

    it("are not given for any recognized option", () => {
      const { warnings } = xfleet(
        "a.service",
        "MachineID=m",
        "X-ConditionMachineID=m",
        "X-ConditionMachineBootID=b",
        "MachineOf=p.service",
        "X-ConditionMachineOf=p.service",
        "MachineMetadata=k=v",
        "X-ConditionMachineMetadata=k=v",
        "Conflicts=c*",
        "X-Conflicts=c*",
        "Global=false",
        "Replaces=r*",
        "ServiceName=s",
      );
      expect(warnings).toEqual([]);
    });
  });
});

describe("SingleInstance", () => {
  it("is off unless set to a true value; the last value wins", () => {
    expect(requirementsOf("a.service")).toEqual(none);
    for (const v of ["true", "yes", "1", "on", "t", "TRUE"])
      expect(requirementsOf("a.service", `SingleInstance=${v}`).singleInstance).toBe(true);
    for (const v of ["false", "no", "0", "off", ""])
      expect(requirementsOf("a.service", `SingleInstance=${v}`).singleInstance).toBeUndefined();
    expect(
      requirementsOf("a.service", "SingleInstance=true", "SingleInstance=false").singleInstance,
    ).toBeUndefined();
    expect(requirementsOf("a.service", "SingleInstance=false", "SingleInstance=yes").singleInstance).toBe(
      true,
    );
  });

  it("warns about a value that is neither true nor false, and leaves the unit without it", () => {
    const { requirements, warnings } = xfleet("a.service", "SingleInstance=maybe");
    expect(requirements.singleInstance).toBeUndefined();
    expect(warnings).toEqual(['[X-Fleet] SingleInstance must be true or false, got "maybe"']);
    expect(xfleet("a.service", "SingleInstance=true yes").warnings).toEqual([
      '[X-Fleet] SingleInstance takes one value, got "true yes"',
    ]);
  });

  it("combines with the placement options but not with Global", () => {
    expect(errorsOf("a.service", "SingleInstance=true", "MachineMetadata=disk=ssd", "Conflicts=b*")).toEqual(
      [],
    );
    expect(
      errorsOf("a.service", "SingleInstance=true", "MachineID=0123456789abcdef0123456789abcdef"),
    ).toEqual([]);
    expect(errorsOf("a.service", "SingleInstance=true", "Global=true")).toEqual([
      "SingleInstance cannot be used with Global",
    ]);
  });
});

describe("validateRequirements", () => {
  it("accepts each option on its own", () => {
    for (const line of [
      "MachineID=abc",
      "MachineOf=b.service",
      "MachineMetadata=k=v",
      "Conflicts=b*",
      "Global=true",
      "Replaces=b.service",
      "ServiceName=x",
    ]) {
      expect(errorsOf("a.service", line)).toEqual([]);
    }
    expect(validateRequirements("a.service", none)).toEqual([]);
  });

  it.each([
    [["MachineID=abc", "MachineOf=b.service"], "MachineID cannot be used with Peers"],
    [["MachineID=abc", "Conflicts=b*"], "MachineID cannot be used with Conflicts"],
    [["MachineID=abc", "Global=true"], "MachineID cannot be used with Global"],
    [["MachineID=abc", "Replaces=b.service"], "MachineID cannot be used with Replaces"],
    [["Global=true", "MachineOf=b.service"], "Global cannot be used with Peers"],
    [["Global=true", "Replaces=b.service"], "Global cannot be used with Replaces"],
    [["Conflicts=b*", "Replaces=c.service"], "Conflicts cannot be used with Replaces"],
    [["X-ConditionMachineID=abc", "X-ConditionMachineOf=b.service"], "MachineID cannot be used with Peers"],
    [["X-ConditionMachineBootID=abc", "X-Conflicts=b*"], "MachineID cannot be used with Conflicts"],
  ])("rejects %j: %s", (lines, message) => {
    expect(errorsOf("a.service", ...lines)).toEqual([message]);
  });

  it.each([
    [["MachineID=abc", "MachineMetadata=k=v"]],
    [["Global=true", "MachineMetadata=k=v"]],
    [["Global=true", "Conflicts=b*"]],
    [["MachineOf=b.service", "Conflicts=c*"]],
    [["MachineOf=b.service", "Replaces=c*"]],
    [["MachineOf=b.service", "MachineMetadata=k=v"]],
    [["Global=false", "MachineID=abc"]],
  ])("allows %j", (lines) => {
    expect(errorsOf("a.service", ...lines)).toEqual([]);
  });

  it("rejects a peer that matches a conflict", () => {
    expect(errorsOf("a.service", "MachineOf=db.service", "Conflicts=web* db*")).toEqual([
      'unresolvable requirements: peer "db.service" matches conflict "db*"',
    ]);
  });

  it("rejects a peer that matches a replace", () => {
    expect(errorsOf("a.service", "MachineOf=db.service", "Replaces=db.service")).toEqual([
      'unresolvable requirements: peer "db.service" matches replace "db.service"',
    ]);
  });

  it("rejects a unit that is its own peer", () => {
    expect(errorsOf("a@1.service", "MachineOf=%n")).toEqual([
      'unresolvable requirements: unit "a@1.service" is its own peer',
    ]);
  });

  it("allows a unit to conflict with or replace its own name (spreading instances)", () => {
    expect(errorsOf("web@1.service", "Conflicts=web@*.service")).toEqual([]);
    expect(errorsOf("web@1.service", "Replaces=web@*.service")).toEqual([]);
  });

  it("rejects malformed metadata", () => {
    expect(errorsOf("a.service", 'MachineMetadata=ok=1 bare =novalue nokey= ""')).toEqual([
      'invalid MachineMetadata "bare": want key=value',
      'invalid MachineMetadata "=novalue": want key=value',
      'invalid MachineMetadata "nokey=": want key=value',
      'invalid MachineMetadata "": want key=value',
    ]);
  });

  it("rejects invalid glob patterns", () => {
    expect(errorsOf("a.service", "Conflicts=ok* [ trailing\\ ok?")).toEqual([
      'invalid Conflicts pattern "[": syntax error in pattern',
      'invalid Conflicts pattern "trailing\\\\": syntax error in pattern',
    ]);
    expect(errorsOf("a.service", "Replaces=[]a]")).toEqual([
      'invalid Replaces pattern "[]a]": syntax error in pattern',
    ]);
  });

  it("rejects MachineOf names that are not unit names", () => {
    expect(errorsOf("a.service", "MachineOf=db", "MachineOf=x@.mount")).toEqual([
      'invalid MachineOf unit "db": unit name must contain "."',
      'invalid MachineOf unit "x@.mount": unit type "mount" cannot be a template or an instance',
    ]);
  });

  it("reports every problem, syntax first and then fleet's checks in fleet's order", () => {
    expect(
      errorsOf(
        "a.service",
        "MachineID=m",
        "Global=yes",
        "MachineOf=p.service",
        "Conflicts=p* [",
        "Replaces=p.service",
      ),
    ).toEqual([
      'invalid Conflicts pattern "[": syntax error in pattern',
      'unresolvable requirements: peer "p.service" matches conflict "p*"',
      'unresolvable requirements: peer "p.service" matches replace "p.service"',
      "MachineID cannot be used with Peers",
      "MachineID cannot be used with Conflicts",
      "MachineID cannot be used with Global",
      "MachineID cannot be used with Replaces",
      "Global cannot be used with Peers",
      "Global cannot be used with Replaces",
      "Conflicts cannot be used with Replaces",
    ]);
  });
});
