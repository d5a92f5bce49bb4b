import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { decodeDataUrl, formatProblems, parseConfig } from "../../image/ignition/config.js";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0bUFxL6nQ3ZQ1fYkq0h6uFh0Gm0n8p6y2oG3m7n9C op@laptop";
const cfg = (extra: Record<string, unknown>) => JSON.stringify({ ignition: { version: "3.4.0" }, ...extra });

describe("Ignition subset: valid configs", () => {
  it("turns users, files, directories and units into a plan", () => {
    const { plan, problems } = parseConfig(
      cfg({
        passwd: { users: [{ name: "core", sshAuthorizedKeys: [KEY], groups: ["systemd-journal"] }] },
        storage: {
          directories: [{ path: "/var/lib/app", mode: 0o750 }],
          files: [
            { path: "/etc/hostname", mode: 420, contents: { source: "data:,node-1%0A" } },
            {
              path: "/etc/flotilla/agent.json",
              contents: {
                source: `data:;base64,${Buffer.from('{"etcd-endpoints":"http://10.0.2.2:2379"}').toString("base64")}`,
              },
              overwrite: true,
            },
            { path: "/etc/empty" },
          ],
        },
        systemd: {
          units: [
            { name: "etcd-member.service", enabled: true },
            {
              name: "hello.service",
              contents: "[Service]\nExecStart=/bin/true\n",
              dropins: [{ name: "10-env.conf", contents: "[Service]\nEnvironment=A=1\n" }],
            },
            { name: "bad.service", mask: true },
          ],
        },
      }),
    );
    expect(problems).toEqual([]);
    expect(plan?.users).toEqual([
      { name: "core", sshAuthorizedKeys: [KEY], groups: ["systemd-journal"], noCreateHome: false },
    ]);
    expect(plan?.directories).toEqual([{ path: "/var/lib/app", mode: 0o750 }]);
    expect(plan?.files.map((f) => [f.path, f.mode, f.contents.toString(), f.overwrite])).toEqual([
      ["/etc/hostname", 0o644, "node-1\n", false],
      ["/etc/flotilla/agent.json", 0o644, '{"etcd-endpoints":"http://10.0.2.2:2379"}', true],
      ["/etc/empty", 0o644, "", false],
    ]);
    expect(plan?.units).toEqual([
      { name: "etcd-member.service", enabled: true, mask: false, dropins: [] },
      {
        name: "hello.service",
        mask: false,
        contents: "[Service]\nExecStart=/bin/true\n",
        dropins: [{ name: "10-env.conf", contents: "[Service]\nEnvironment=A=1\n" }],
      },
      { name: "bad.service", mask: true, dropins: [] },
    ]);
  });

  it("accepts every 3.x version in the subset and gzip contents", () => {
    const gz = gzipSync(Buffer.from("hello")).toString("base64");
    for (const version of ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"]) {
      const { plan } = parseConfig(
        JSON.stringify({
          ignition: { version },
          storage: {
            files: [{ path: "/etc/x", contents: { source: `data:;base64,${gz}`, compression: "gzip" } }],
          },
        }),
      );
      expect(plan?.files[0]?.contents.toString()).toBe("hello");
    }
  });

  it("decodes data URLs per RFC 2397", () => {
    expect(decodeDataUrl("data:text/plain;charset=utf-8,a%20b").toString()).toBe("a b");
    expect(decodeDataUrl("data:;base64,aGk=").toString()).toBe("hi");
    expect(() => decodeDataUrl("https://example.com/x")).toThrow(/remote sources are not supported/);
    expect(() => decodeDataUrl("data:;base64,@@@")).toThrow(/invalid base64/);
  });
});

describe("Ignition subset: every problem is named", () => {
  const problemsOf = (text: string) => parseConfig(text).problems.map((p) => `${p.path}: ${p.message}`);

  it("rejects malformed JSON and a missing or unsupported version", () => {
    expect(problemsOf("{")).toEqual([expect.stringMatching(/^\$: not valid JSON/)]);
    expect(problemsOf("{}")).toEqual(["ignition: is required (with a version)"]);
    expect(problemsOf(JSON.stringify({ ignition: { version: "2.2.0" } }))).toEqual([
      expect.stringMatching(/^ignition.version: "2.2.0" is not supported/),
    ]);
  });

  it("distinguishes unsupported Ignition fields from unknown ones", () => {
    const problems = problemsOf(
      cfg({
        storage: { disks: [], files: [{ path: "/etc/a", append: [] }] },
        passwd: { users: [{ name: "core", gecos: "x", sshAuthorisedKeys: [] }] },
        kernelArguments: { shouldExist: [] },
        sytemd: {},
      }),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        "storage.disks: is not supported by Flotilla (see docs/ignition.md)",
        "storage.files[0].append: is not supported by Flotilla (see docs/ignition.md)",
        "passwd.users[0].gecos: is not supported by Flotilla (see docs/ignition.md)",
        expect.stringMatching(/^passwd.users\[0\].sshAuthorisedKeys: unknown field/),
        expect.stringMatching(/^sytemd: unknown field/),
      ]),
    );
    expect(problems).toHaveLength(5);
  });

  it("checks paths, modes, keys, sources, and unit names", () => {
    const problems = problemsOf(
      cfg({
        passwd: { users: [{ name: "Core!", sshAuthorizedKeys: ["not a key"] }] },
        storage: {
          files: [
            { path: "etc/relative" },
            { path: "/usr/bin/evil" },
            { path: "/etc/../shadow" },
            { path: "/etc/a", mode: "0644" },
            { path: "/etc/b", contents: { source: "https://example.com/b" } },
            { path: "/etc/c", contents: { source: "data:,x", compression: "xz" } },
            { path: "/etc/d" },
            { path: "/etc/d" },
          ],
        },
        systemd: {
          units: [
            { name: "noext" },
            { name: "x.service", enabled: true, mask: true, dropins: [{ name: "a.txt" }] },
          ],
        },
      }),
    );
    expect(problems).toEqual([
      'passwd.users[0].name: "Core!" is not a valid user name',
      expect.stringMatching(/^passwd.users\[0\].sshAuthorizedKeys\[0\]: is not an OpenSSH public key/),
      'storage.files[0].path: must be an absolute path, got "etc/relative"',
      "storage.files[1].path: /usr/bin/evil is on the read-only /usr image; write to /etc or /var instead",
      'storage.files[2].path: must be a normalized path to a file or directory, got "/etc/../shadow"',
      expect.stringMatching(/^storage.files\[3\].mode: must be an integer permission mode/),
      'storage.files[4].contents.source: must be a "data:" URL (remote sources are not supported)',
      'storage.files[5].contents.compression: must be "gzip" or empty, got "xz"',
      "storage.files[7].path: /etc/d is also declared at storage.files[6].path",
      'systemd.units[0].name: "noext" is not a valid unit name',
      "systemd.units[1]: cannot be both masked and enabled",
      'systemd.units[1].dropins[0].name: must be a file name ending in .conf, got "a.txt"',
    ]);
  });

  it("formats a report that names the source and each problem", () => {
    const report = formatProblems("QEMU fw_cfg", [
      { path: "storage.disks", message: "is not supported" },
      { path: "ignition.version", message: "is required" },
    ]);
    expect(report.split("\n")).toEqual([
      "flotilla-ignition: provisioning FAILED: 2 problems in the config from QEMU fw_cfg:",
      "flotilla-ignition:   storage.disks: is not supported",
      "flotilla-ignition:   ignition.version: is required",
      "flotilla-ignition: nothing was applied and flotilla-agent will not start; fix the config and reboot.",
    ]);
  });
});
