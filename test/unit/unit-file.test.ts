import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { UnitOption } from "../../agent/model.js";
import { parseUnitFile, serializeUnit, UnitFileError, unitHash } from "../../agent/unit/index.js";

const opt = (section: string, name: string, value: string): UnitOption => ({ section, name, value });

/** The thrown UnitFileError, so tests can check its message, source and line. */
function parseError(text: string, source = "hello.service"): UnitFileError {
  try {
    parseUnitFile(text, source);
  } catch (error) {
    if (error instanceof UnitFileError) return error;
    throw error;
  }
  throw new Error("expected a UnitFileError");
}

describe("compatibility with fleet's hashes", () => {
  // fleet's functional/fixtures/units, byte for byte, and the hash prefixes fleetctl listed for them.
  it("hello.service hashes to 3750b3e9…", () => {
    const text = '[Service]\nExecStart=/bin/bash -c "while true; do echo Hello, World!; sleep 1; done"\n';
    const options = parseUnitFile(text, "hello.service");
    expect(serializeUnit(options)).toBe(text);
    expect(unitHash(options).startsWith("3750b3e9")).toBe(true);
  });

  it("hello@.service hashes to 79699e3…", () => {
    const text = '[Service]\nExecStart=/bin/bash -c "while true; do echo Hello, World %i!; sleep 1; done"\n';
    expect(unitHash(parseUnitFile(text, "hello@.service")).startsWith("79699e3")).toBe(true);
  });

  it("global.service, two sections, hashes to a1ea262…", () => {
    const text =
      '[Service]\nExecStart=/bin/bash -c "while true; do echo Hello, Global World!; sleep 1; done"\n\n' +
      "[X-Fleet]\nGlobal=true\n";
    expect(unitHash(parseUnitFile(text, "global.service")).startsWith("a1ea262")).toBe(true);
  });

  it("is the full SHA1 hex of the serialization", () => {
    const options = [opt("Unit", "Description", "x"), opt("Service", "ExecStart", "/bin/true")];
    const expected = createHash("sha1").update(serializeUnit(options)).digest("hex");
    expect(unitHash(options)).toBe(expected);
    expect(unitHash(options)).toMatch(/^[0-9a-f]{40}$/);
  });

  it("hashes UTF-8 bytes", () => {
    const options = [opt("Unit", "Description", "café ☺")];
    expect(unitHash(options)).toBe(
      createHash("sha1").update("[Unit]\nDescription=café ☺\n", "utf8").digest("hex"),
    );
  });
});

describe("parseUnitFile", () => {
  it("reads sections and options in file order", () => {
    const text = "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n";
    expect(parseUnitFile(text, "a.service")).toEqual([
      opt("Unit", "Description", "Hello"),
      opt("Service", "ExecStart", "/bin/a"),
      opt("Service", "ExecStart", "/bin/b"),
    ]);
  });

  it("trims around names and values, keeping inner whitespace", () => {
    const text = "[Service]\n  Exec Start  =   /bin/echo  a   b  \t\n";
    expect(parseUnitFile(text, "a.service")).toEqual([opt("Service", "Exec Start", "/bin/echo  a   b")]);
  });

  it("splits at the first '=' only", () => {
    expect(parseUnitFile("[Service]\nEnvironment=A=1 B=2\n", "a.service")).toEqual([
      opt("Service", "Environment", "A=1 B=2"),
    ]);
  });

  it("keeps empty values", () => {
    expect(parseUnitFile("[Service]\nExecStart=\nExecStart=  \n", "a.service")).toEqual([
      opt("Service", "ExecStart", ""),
      opt("Service", "ExecStart", ""),
    ]);
  });

  it("skips # and ; comments and blank lines, also before the first section", () => {
    const text = "# leading\n; also\n\n[Unit]\n  # indented comment\nDescription=x # not a comment\n\n\n";
    expect(parseUnitFile(text, "a.service")).toEqual([opt("Unit", "Description", "x # not a comment")]);
  });

  it("keeps a section name verbatim, including spaces", () => {
    expect(parseUnitFile("[ X-Fleet ]\nGlobal=true\n", "a.service")).toEqual([
      opt(" X-Fleet ", "Global", "true"),
    ]);
  });

  it("accepts whitespace after a section header and indented headers", () => {
    expect(parseUnitFile("  [Unit]  \t\nA=1\n", "a.service")).toEqual([opt("Unit", "A", "1")]);
  });

  it("keeps repeated sections as separate runs of options", () => {
    expect(parseUnitFile("[A]\nX=1\n[B]\nY=2\n[A]\nZ=3\n", "a.service")).toEqual([
      opt("A", "X", "1"),
      opt("B", "Y", "2"),
      opt("A", "Z", "3"),
    ]);
  });

  it("reads a file without a final newline", () => {
    expect(parseUnitFile("[Unit]\nA=1", "a.service")).toEqual([opt("Unit", "A", "1")]);
  });

  it("accepts CRLF line endings", () => {
    expect(parseUnitFile("[Unit]\r\nA=1\r\n\r\n[Service]\r\nB=x \\\r\n  y\r\n", "a.service")).toEqual([
      opt("Unit", "A", "1"),
      opt("Service", "B", "x \\\n  y"),
    ]);
  });

  it("ignores a leading byte-order mark", () => {
    expect(parseUnitFile("\uFEFF[Unit]\nA=1\n", "a.service")).toEqual([opt("Unit", "A", "1")]);
  });

  it("trims Go's whitespace, not JavaScript's", () => {
    // Go's TrimSpace keeps U+FEFF, which String.prototype.trim strips. (It also strips U+0085, which
    // trim keeps, but that is a control character and refused.)
    expect(parseUnitFile("[Unit]\nA= x\uFEFF\n", "a.service")).toEqual([opt("Unit", "A", "x\uFEFF")]);
  });

  describe("line continuations, as go-systemd keeps them", () => {
    it("keeps the backslash, the newline and the next line verbatim", () => {
      const text = "[Service]\nExecStart=/bin/echo a \\\n    b \\\n  c\nType=simple\n";
      expect(parseUnitFile(text, "a.service")).toEqual([
        opt("Service", "ExecStart", "/bin/echo a \\\n    b \\\n  c"),
        opt("Service", "Type", "simple"),
      ]);
    });

    it("does not treat continuation lines as comments or headers", () => {
      const text = "[Service]\nExecStart=a \\\n# b \\\n[Unit]\n";
      expect(parseUnitFile(text, "a.service")).toEqual([opt("Service", "ExecStart", "a \\\n# b \\\n[Unit]")]);
    });

    it("ends at a blank line and keeps the trailing newline", () => {
      const text = "[Service]\nExecStart=a \\\n\nType=simple\n";
      expect(parseUnitFile(text, "a.service")).toEqual([
        opt("Service", "ExecStart", "a \\\n"),
        opt("Service", "Type", "simple"),
      ]);
    });

    it("keeps the newline when the file ends after the backslash line", () => {
      expect(parseUnitFile("[Service]\nExecStart=a \\\n", "a.service")).toEqual([
        opt("Service", "ExecStart", "a \\\n"),
      ]);
    });

    it("keeps just the backslash at the very end of the file", () => {
      expect(parseUnitFile("[Service]\nExecStart=a \\", "a.service")).toEqual([
        opt("Service", "ExecStart", "a \\"),
      ]);
    });

    it("only continues when the backslash is the last character", () => {
      const text = '[Service]\nExecStart=echo \\"ping\\" \\ \nType=simple\n';
      expect(parseUnitFile(text, "a.service")).toEqual([
        opt("Service", "ExecStart", 'echo \\"ping\\" \\'),
        opt("Service", "Type", "simple"),
      ]);
    });

    it("round-trips through serialization with the same hash", () => {
      const text = "[Service]\nExecStart=/bin/echo a \\\n  b\nExecStop=x \\\n\nType=simple\n";
      const options = parseUnitFile(text, "a.service");
      const again = parseUnitFile(serializeUnit(options), "a.service");
      expect(again).toEqual(options);
      expect(unitHash(again)).toBe(unitHash(options));
    });
  });

  describe("comments ending in a backslash", () => {
    it("may swallow comments and blank lines, as go-systemd does", () => {
      const text = "[Service]\n#ExecStart=/bin/a \\\n#   --flag \\\n\nType=simple\n";
      expect(parseUnitFile(text, "a.service")).toEqual([opt("Service", "Type", "simple")]);
    });

    it("is an error when it would swallow an option", () => {
      const error = parseError("[Service]\n# note \\\nExecStart=/bin/a\n");
      expect(error.line).toBe(3);
      expect(error.message).toBe(
        'hello.service:3: this line would be ignored: the comment on line 2 ends with "\\" and continues onto it',
      );
    });

    it("is an error when it would swallow a section header", () => {
      expect(parseError("# top \\\n[Service]\nA=1\n").line).toBe(2);
    });

    it("counts a backslash followed by one space, not two, as go-systemd does", () => {
      expect(parseError("[Service]\n# note \\ \nA=1\n").line).toBe(3);
      expect(parseUnitFile("[Service]\n# note \\  \nA=1\n", "a.service")).toEqual([opt("Service", "A", "1")]);
    });

    it("is harmless on the last line", () => {
      expect(parseUnitFile("[Service]\nA=1\n# end \\", "a.service")).toEqual([opt("Service", "A", "1")]);
    });
  });

  describe("malformed input", () => {
    it("rejects text before the first section", () => {
      const error = parseError("# hello\n\nExecStart=/bin/true\n[Service]\n");
      expect(error).toBeInstanceOf(UnitFileError);
      expect(error).toBeInstanceOf(Error);
      expect(error.name).toBe("UnitFileError");
      expect(error.source).toBe("hello.service");
      expect(error.line).toBe(3);
      expect(error.message).toBe("hello.service:3: line is outside any [Section]");
    });

    it("rejects a line without '='", () => {
      expect(parseError("[Service]\nExecStart /bin/true\n").message).toBe(
        'hello.service:2: expected "Name=Value", found no "=" in "ExecStart /bin/true"',
      );
      expect(parseError("[Service]\nA=1\nB").line).toBe(3);
    });

    it("rejects an empty option name", () => {
      expect(parseError("[Service]\n  = value\n").message).toBe("hello.service:2: option has an empty name");
    });

    it("rejects an unterminated section header", () => {
      expect(parseError("[Unit]\nA=1\n[Service\nB=2]\n").message).toBe(
        'hello.service:3: unterminated section header "[Service"',
      );
    });

    it("rejects an empty section name", () => {
      expect(parseError("[]\nA=1\n").message).toBe("hello.service:1: empty section name");
    });

    it("rejects text after a section header", () => {
      expect(parseError("[Unit] extra\nA=1\n").message).toBe(
        'hello.service:1: unexpected text after section header: "extra"',
      );
      expect(parseError("[Unit]]\nA=1\n").line).toBe(1);
    });

    it("rejects a file without options", () => {
      for (const text of ["", "\n\n", "# only a comment\n", "[Unit]\n", "[Unit]\n[Service]\n# none\n"]) {
        const error = parseError(text);
        expect(error.message).toBe("hello.service: unit file has no options");
        expect(error.line).toBeUndefined();
      }
    });

    it("rejects lines of 2048 bytes or more, like go-systemd", () => {
      const head = "[Service]\nExecStart=";
      expect(() => parseUnitFile(`${head}${"x".repeat(2047 - 10)}\n`, "a.service")).not.toThrow();
      expect(parseError(`${head}${"x".repeat(2048 - 10)}\n`).message).toBe(
        "hello.service:2: line too long (max 2048 bytes)",
      );
    });

    it("measures line length in UTF-8 bytes", () => {
      // 683 three-byte characters are 2049 bytes in 683 UTF-16 units.
      expect(parseError(`[Service]\nA=${"☺".repeat(683)}\n`).line).toBe(2);
    });

    it("limits each physical line, so a continuation can carry a longer value", () => {
      const long = "x".repeat(2000);
      const options = parseUnitFile(`[Service]\nA=${long} \\\n${long}\n`, "a.service");
      expect(options[0]?.value.length).toBe(4003);
    });

    it("checks comment lines too", () => {
      expect(parseError(`[Service]\nA=1\n#${"x".repeat(2047)}\n`).line).toBe(3);
    });
  });
});

describe("serializeUnit", () => {
  it("groups options by section in first-seen order, keeping their order", () => {
    const options = [
      opt("Unit", "Description", "d"),
      opt("Service", "ExecStart", "/bin/a"),
      opt("Unit", "After", "b.service"),
      opt("X-Fleet", "Global", "true"),
      opt("Service", "ExecStop", "/bin/b"),
    ];
    expect(serializeUnit(options)).toBe(
      "[Unit]\nDescription=d\nAfter=b.service\n\n[Service]\nExecStart=/bin/a\nExecStop=/bin/b\n\n[X-Fleet]\nGlobal=true\n",
    );
  });

  it("is empty for no options", () => {
    expect(serializeUnit([])).toBe("");
  });

  it("writes names and values verbatim, including empty values", () => {
    expect(serializeUnit([opt("S", "A", ""), opt("S", "B", " spaced = value ")])).toBe(
      "[S]\nA=\nB= spaced = value \n",
    );
  });

  it("drops comments and layout, so equivalent files hash the same", () => {
    const tidy = "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\n";
    const messy = "# header\n[Unit]\n  Description =  x\n; note\n\n\n[Service]\n\tExecStart=/bin/true   \n";
    expect(serializeUnit(parseUnitFile(messy, "a.service"))).toBe(tidy);
    expect(unitHash(parseUnitFile(messy, "a.service"))).toBe(unitHash(parseUnitFile(tidy, "a.service")));
  });

  it("hashes differently when option order within a section changes", () => {
    const ab = parseUnitFile("[S]\nA=1\nB=2\n", "a.service");
    const ba = parseUnitFile("[S]\nB=2\nA=1\n", "a.service");
    expect(unitHash(ab)).not.toBe(unitHash(ba));
  });

  it("hashes the same when only the interleaving of sections changes", () => {
    const interleaved = parseUnitFile("[A]\nX=1\n[B]\nY=2\n[A]\nZ=3\n", "a.service");
    const grouped = parseUnitFile("[A]\nX=1\nZ=3\n[B]\nY=2\n", "a.service");
    expect(serializeUnit(interleaved)).toBe("[A]\nX=1\nZ=3\n\n[B]\nY=2\n");
    expect(unitHash(interleaved)).toBe(unitHash(grouped));
  });

  it("round-trips parsed files", () => {
    const text =
      "[Unit]\nDescription=Hello\n\n[Service]\nExecStart=/bin/a\nEnvironment=A=1\n\n[X-Fleet]\nGlobal=true\n";
    expect(serializeUnit(parseUnitFile(text, "a.service"))).toBe(text);
  });
});

describe("UnitFileError", () => {
  it("prefixes the message with source and line", () => {
    expect(new UnitFileError("bad", "x.service", 7).message).toBe("x.service:7: bad");
    expect(new UnitFileError("bad", "x.service").message).toBe("x.service: bad");
  });
});
