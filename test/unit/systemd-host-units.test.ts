import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { findHostUnitFiles } from "../../agent/systemd/manager.js";

describe("findHostUnitFiles", () => {
  const root = mkdtempSync(join(tmpdir(), "flotilla-host-units-"));
  const [etc, run, usr, ours] = ["etc", "run", "usr", "fleet"].map((d) => join(root, d)) as [
    string,
    string,
    string,
    string,
  ];
  for (const d of [etc, run, usr, ours]) mkdirSync(d);
  writeFileSync(join(usr, "ssh.service"), "[Service]\n");
  writeFileSync(join(usr, "getty@.service"), "[Service]\n");
  symlinkSync("/dev/null", join(etc, "masked.service"));
  symlinkSync(join(usr, "ssh.service"), join(etc, "sshd.service"));
  // The agent's own: a link in the runtime directory to its unit directory.
  writeFileSync(join(ours, "web.service"), "[Service]\n");
  symlinkSync(join(ours, "web.service"), join(run, "web.service"));
  const search = [etc, run, usr];

  it("names the machine's own unit files (shipped, added, aliased, masked, templates), not the agent's", async () => {
    const found = await findHostUnitFiles(
      [
        "ssh.service",
        "sshd.service",
        "masked.service",
        "getty@tty5.service",
        "web.service",
        "web@1.service",
        "new.service",
      ],
      search,
      ours,
    );
    expect(Object.fromEntries(found)).toEqual({
      "ssh.service": join(usr, "ssh.service"),
      "sshd.service": join(etc, "sshd.service"),
      "masked.service": join(etc, "masked.service"),
      "getty@tty5.service": join(usr, "getty@.service"),
    });
  });

  it("still finds the machine's unit behind an agent link of the same name", async () => {
    symlinkSync(join(ours, "ssh.service"), join(run, "ssh.service"));
    expect((await findHostUnitFiles(["ssh.service"], search, ours)).get("ssh.service")).toBe(
      join(usr, "ssh.service"),
    );
  });

  it("ignores search directories that do not exist", async () => {
    expect((await findHostUnitFiles(["ssh.service"], [join(root, "none"), usr], ours)).size).toBe(1);
  });
});
