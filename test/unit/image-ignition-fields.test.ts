// The Ignition fields added for all-or-nothing provisioning, each refusal, and the size limits.

import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { applyKernelArguments } from "../../agent/update/kargs.js";
import { DEFAULT_LIMITS, formatProblems, gunzipCapped, parseConfig } from "../../image/ignition/config.js";

const cfg = (extra: Record<string, unknown>) => JSON.stringify({ ignition: { version: "3.4.0" }, ...extra });
const problemsOf = (text: string, limits = DEFAULT_LIMITS) =>
  parseConfig(text, limits).problems.map((p) => `${p.path}: ${p.message}`);
const b64 = (b: Buffer) => `data:;base64,${b.toString("base64")}`;

describe("Ignition: kernelArguments", () => {
  it("plans shouldExist and shouldNotExist", () => {
    const { plan, problems } = parseConfig(
      cfg({ kernelArguments: { shouldExist: ["quiet", "mitigations=off"], shouldNotExist: ["panic=5"] } }),
    );
    expect(problems).toEqual([]);
    expect(plan?.kernelArguments).toEqual({
      shouldExist: ["quiet", "mitigations=off"],
      shouldNotExist: ["panic=5"],
    });
  });

  it("refuses arguments with spaces or quotes, non-strings, and one argument in both lists", () => {
    expect(
      problemsOf(
        cfg({
          kernelArguments: { shouldExist: ["a b", 3, "x"], shouldNotExist: ['y="1 2"', "x"], other: [] },
        }),
      ),
    ).toEqual([
      expect.stringMatching(/^kernelArguments.other: unknown field/),
      'kernelArguments.shouldExist[0]: must be one kernel argument without spaces or quotes, got "a b"',
      "kernelArguments.shouldExist[1]: must be a string, got number 3",
      expect.stringMatching(/^kernelArguments.shouldNotExist\[0\]: must be one kernel argument/),
      "kernelArguments: x is in both shouldExist and shouldNotExist",
    ]);
  });

  it("appends missing arguments once and removes every unwanted one, as whole words", () => {
    const args = { shouldExist: ["quiet", "console=tty0"], shouldNotExist: ["panic=5"] };
    expect(applyKernelArguments("root=PARTLABEL=ROOT rw panic=5 panic=50 quiet", args)).toBe(
      "root=PARTLABEL=ROOT rw panic=50 quiet console=tty0",
    );
    // Applying twice changes nothing more: entries of both slots converge to the same options.
    const once = applyKernelArguments("rw  panic=5\n", args);
    expect(applyKernelArguments(once, args)).toBe(once);
  });
});

describe("Ignition: passwd.groups and the new user fields", () => {
  it("plans groups and users with every supported field", () => {
    const { plan, problems } = parseConfig(
      cfg({
        passwd: {
          groups: [{ name: "wheel", gid: 1500, passwordHash: "!" }, { name: "ops" }],
          users: [
            {
              name: "svc",
              uid: 2000,
              primaryGroup: "ops",
              groups: ["wheel"],
              homeDir: "/var/lib/svc",
              shell: "/usr/sbin/nologin",
              noCreateHome: true,
              passwordHash: "$6$salt$hash",
            },
          ],
        },
      }),
    );
    expect(problems).toEqual([]);
    expect(plan?.groups).toEqual([{ name: "wheel", gid: 1500, passwordHash: "!" }, { name: "ops" }]);
    expect(plan?.users).toEqual([
      {
        name: "svc",
        uid: 2000,
        primaryGroup: "ops",
        groups: ["wheel"],
        homeDir: "/var/lib/svc",
        shell: "/usr/sbin/nologin",
        noCreateHome: true,
        passwordHash: "$6$salt$hash",
        sshAuthorizedKeys: [],
      },
    ]);
  });

  it("refuses bad IDs, names, paths and fields that would break /etc/passwd", () => {
    expect(
      problemsOf(
        cfg({
          passwd: {
            groups: [
              { name: "Wheel" },
              { name: "ops", gid: 65535 },
              { name: "ops", gid: -1 },
              { name: "x", system: true },
            ],
            users: [
              {
                name: "a",
                uid: "1000",
                primaryGroup: "Bad!",
                homeDir: "home/a",
                shell: "bash",
                noCreateHome: "yes",
                passwordHash: "x:y",
              },
            ],
          },
        }),
      ),
    ).toEqual([
      'passwd.groups[0].name: "Wheel" is not a valid group name',
      "passwd.groups[1].gid: must be an integer ID from 0 to 4294967294 (not 65535), got number 65535",
      "passwd.groups[2].name: group ops is listed twice",
      "passwd.groups[2].gid: must be an integer ID from 0 to 4294967294 (not 65535), got number -1",
      "passwd.groups[3].system: is not supported by Flotilla (see docs/ignition.md)",
      "passwd.users[0].passwordHash: must not contain a colon, a newline or NUL",
      'passwd.users[0].uid: must be an integer ID from 0 to 4294967294 (not 65535), got string "1000"',
      'passwd.users[0].primaryGroup: "Bad!" is not a valid group name',
      'passwd.users[0].homeDir: must be an absolute path, got "home/a"',
      'passwd.users[0].shell: must be an absolute path, got "bash"',
      'passwd.users[0].noCreateHome: must be true or false, got string "yes"',
    ]);
  });
});

describe("Ignition: storage.links", () => {
  it("plans symbolic and hard links", () => {
    const { plan, problems } = parseConfig(
      cfg({
        storage: {
          links: [
            { path: "/etc/localtime", target: "../usr/share/zoneinfo/UTC", overwrite: true },
            { path: "/var/lib/a", target: "/etc/hostname", hard: true },
          ],
        },
      }),
    );
    expect(problems).toEqual([]);
    expect(plan?.links).toEqual([
      { path: "/etc/localtime", target: "../usr/share/zoneinfo/UTC", hard: false, overwrite: true },
      { path: "/var/lib/a", target: "/etc/hostname", hard: true, overwrite: false },
    ]);
  });

  it("refuses links on /usr, relative hard-link targets, empty targets and a path declared twice", () => {
    expect(
      problemsOf(
        cfg({
          storage: {
            files: [{ path: "/etc/x", contents: { source: "data:,x" } }],
            links: [
              { path: "/usr/bin/sh2", target: "sh" },
              { path: "/etc/h", target: "hostname", hard: true },
              { path: "/etc/e", target: "" },
              { path: "/etc/x", target: "y" },
              { path: "/etc/u", target: "y", user: { id: 0 } },
            ],
          },
        }),
      ),
    ).toEqual([
      "storage.links[0].path: /usr/bin/sh2 is on the read-only /usr image; write to /etc or /var instead",
      'storage.links[1].target: must be an absolute path, got "hostname"',
      "storage.links[2].target: must be a non-empty path",
      "storage.links[3].path: /etc/x is also declared at storage.files[0].path",
      "storage.links[4].user: is not supported by Flotilla (see docs/ignition.md)",
    ]);
  });
});

describe("Ignition: refusals that protect what is on the disk", () => {
  it("refuses overwrite: true without contents (it would empty the file), as upstream", () => {
    expect(
      problemsOf(cfg({ storage: { files: [{ path: "/etc/ssh/sshd_config", overwrite: true }] } })),
    ).toEqual([
      "storage.files[0].overwrite: is true without contents.source: that would empty the file; give contents or drop overwrite",
    ]);
    expect(
      problemsOf(
        cfg({ storage: { files: [{ path: "/etc/ssh/sshd_config", overwrite: true, contents: {} }] } }),
      ),
    ).toHaveLength(1);
    expect(
      problemsOf(
        cfg({ storage: { files: [{ path: "/etc/a", overwrite: true, contents: { source: "data:,x" } }] } }),
      ),
    ).toEqual([]);
  });

  it("refuses a config over the size limit before parsing it", () => {
    const text = cfg({
      storage: { files: [{ path: "/etc/a", contents: { source: `data:,${"x".repeat(2000)}` } }] },
    });
    expect(problemsOf(text, { ...DEFAULT_LIMITS, maxConfigBytes: 1000 })).toEqual([
      `$: the config is ${text.length} bytes, over the limit of 1000 (see docs/ignition.md, Limits)`,
    ]);
  });

  it("refuses gzip contents that inflate past the limit, without inflating them whole", () => {
    const bomb = gzipSync(Buffer.alloc(64 * 2 ** 20), { level: 9 });
    expect(bomb.length).toBeLessThan(128 * 1024);
    const limits = { maxConfigBytes: 2 ** 20, maxContentBytes: 2 ** 20 };
    const text = cfg({
      storage: { files: [{ path: "/etc/bomb", contents: { source: b64(bomb), compression: "gzip" } }] },
    });
    expect(problemsOf(text, limits)).toEqual([
      "storage.files[0].contents.source: inflates to more than the 1048576 bytes left of the content limit",
    ]);
    expect(() => gunzipCapped(bomb, 4096)).toThrow(/inflates to more than the 4096 bytes/);
    expect(() => gunzipCapped(Buffer.from("plain"), 4096)).toThrow("is not gzip data");
  });

  it("counts the limit over all contents together", () => {
    const limits = { maxConfigBytes: 2 ** 20, maxContentBytes: 1000 };
    const file = (path: string) => ({
      path,
      contents: { source: b64(gzipSync(Buffer.alloc(600))), compression: "gzip" },
    });
    expect(problemsOf(cfg({ storage: { files: [file("/etc/a")] } }), limits)).toEqual([]);
    expect(problemsOf(cfg({ storage: { files: [file("/etc/a"), file("/etc/b")] } }), limits)).toEqual([
      "storage.files[1].contents.source: inflates to more than the 400 bytes left of the content limit",
    ]);
    const plain = { path: "/etc/c", contents: { source: `data:,${"y".repeat(1001)}` } };
    expect(problemsOf(cfg({ storage: { files: [plain] } }), limits)).toEqual([
      "storage.files[0].contents.source: is more than the 1000 bytes left of the content limit",
    ]);
  });

  it("says honestly what a failure left behind", () => {
    const last = (left?: "nothing" | "rolled back" | "partly") =>
      formatProblems("x", [{ path: "$", message: "m" }], left)
        .split("\n")
        .pop();
    expect(last()).toMatch(/: nothing was applied and flotilla-agent will not start/);
    expect(last("rolled back")).toMatch(/rolled back, the system is as it was before/);
    expect(last("partly")).toMatch(/rollback was incomplete .* PARTLY provisioned/);
  });
});
