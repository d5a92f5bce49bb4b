// The checks made before any write (accounts, paths, units) and the account files' new texts.
// Path resolution and the commit/rollback run against temporary directories.

import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type AccountFiles, applyAccounts, checkAccounts } from "../../image/ignition/accounts.js";
import { ApplyError, applyPlan, resolveIn } from "../../image/ignition/apply.js";
import { type Plan, parseConfig } from "../../image/ignition/config.js";
import { checkUnits, checkWrites, MARKER, type PathFact, planWrites } from "../../image/ignition/writes.js";

const IMAGE: AccountFiles = {
  passwd: "root:x:0:0:root:/root:/bin/bash\nsshd:x:102:65534::/run/sshd:/usr/sbin/nologin\n",
  group: "root:x:0:\nsudo:x:27:\nusers:x:100:\nsystemd-journal:x:999:\n",
  shadow: "root:*:19675:0:99999:7:::\nsshd:!:19675::::::\n",
  gshadow: "root:*::\nsudo:*::\nusers:*::\nsystemd-journal:!*::\n",
  subuid: "",
  subgid: "",
};

const plan = (config: Record<string, unknown>): Plan => {
  const { plan: p, problems } = parseConfig(JSON.stringify({ ignition: { version: "3.4.0" }, ...config }));
  if (!p) throw new Error(JSON.stringify(problems));
  return p;
};
const messages = (ps: { path: string; message: string }[]) => ps.map((p) => `${p.path}: ${p.message}`);

describe("accounts: checked before any write", () => {
  it("names a group that neither the image nor the config has (e.g. wheel)", () => {
    const p = plan({
      passwd: { users: [{ name: "core", groups: ["wheel", "sudo"], primaryGroup: "admins" }] },
    });
    expect(messages(checkAccounts(p, IMAGE))).toEqual([
      "passwd.users[0].groups[0]: group wheel does not exist in the image and is not created by passwd.groups",
      "passwd.users[0].primaryGroup: group admins does not exist in the image and is not created by passwd.groups",
    ]);
    const fixed = plan({
      passwd: {
        groups: [{ name: "wheel" }, { name: "admins" }],
        users: [{ name: "core", groups: ["wheel"], primaryGroup: "admins" }],
      },
    });
    expect(checkAccounts(fixed, IMAGE)).toEqual([]);
  });

  it("refuses taken IDs and identity changes of existing accounts", () => {
    const p = plan({
      passwd: {
        groups: [
          { name: "sudo", gid: 28 },
          { name: "new", gid: 100 },
        ],
        users: [
          { name: "a", uid: 102 },
          { name: "root", uid: 5, homeDir: "/home/root", primaryGroup: "sudo" },
          { name: "users" },
        ],
      },
    });
    expect(messages(checkAccounts(p, IMAGE))).toEqual([
      "passwd.groups[0].gid: group sudo already exists with gid 27, not 28",
      "passwd.groups[1].gid: gid 100 is taken by group users",
      "passwd.users[0].uid: uid 102 is taken by user sshd",
      "passwd.users[1].uid: user root already exists with uid 0; changing it is not supported",
      "passwd.users[1].homeDir: user root already exists with homeDir /root; changing it is not supported",
      "passwd.users[1].primaryGroup: user root already exists with primary gid 0; changing it is not supported",
      "passwd.users[2].name: a group users already exists: set primaryGroup to use it (useradd would refuse)",
    ]);
  });

  it("adds users, groups, memberships, hashes and subordinate IDs as useradd would", () => {
    const p = plan({
      passwd: {
        groups: [{ name: "wheel", gid: 1500, passwordHash: "$6$g" }],
        users: [
          { name: "core", groups: ["wheel", "sudo"], passwordHash: "$6$s$h" },
          {
            name: "svc",
            uid: 2000,
            primaryGroup: "wheel",
            homeDir: "/var/lib/svc",
            shell: "/usr/sbin/nologin",
            noCreateHome: true,
          },
          { name: "root", passwordHash: "$6$r", shell: "/bin/sh", groups: ["sudo"] },
        ],
      },
    });
    const r = applyAccounts(p, IMAGE, 20000);
    expect(r.files.passwd.split("\n").slice(2)).toEqual([
      "core:x:1000:1000::/home/core:/bin/bash",
      "svc:x:2000:1500::/var/lib/svc:/usr/sbin/nologin",
      "",
    ]);
    expect(r.files.passwd.split("\n")[0]).toBe("root:x:0:0:root:/root:/bin/sh");
    expect(r.files.shadow.split("\n")).toEqual([
      "root:$6$r:19675:0:99999:7:::",
      "sshd:!:19675::::::",
      "core:$6$s$h:20000:0:99999:7:::",
      "svc:!:20000:0:99999:7:::",
      "",
    ]);
    expect(r.files.group).toContain("sudo:x:27:core,root\n");
    expect(r.files.group).toContain("wheel:x:1500:core\n");
    expect(r.files.group).toContain("core:x:1000:\n");
    expect(r.files.gshadow).toContain("wheel:$6$g::core\n");
    expect(r.files.subuid).toBe("core:100000:65536\nsvc:165536:65536\n");
    expect(r.users.map((u) => [u.name, u.uid, u.gid, u.home, u.createHome])).toEqual([
      ["core", 1000, 1000, "/home/core", true],
      ["svc", 2000, 1500, "/var/lib/svc", false],
      ["root", 0, 0, "/root", false],
    ]);
    expect(r.changed.sort()).toEqual(["group", "gshadow", "passwd", "shadow", "subgid", "subuid"]);
  });
});

describe("writes: checked against the target before any write", () => {
  const fact = (resolved: string, kind: PathFact["kind"] = "missing", via?: string): PathFact => ({
    resolved,
    kind,
    ...(via ? { via } : {}),
  });

  it("refuses paths through links into /usr, existing files without overwrite, and clashes", () => {
    const p = plan({
      storage: {
        files: [
          { path: "/lib/modprobe.d/x.conf", contents: { source: "data:,x" } },
          { path: "/etc/motd", contents: { source: "data:,x" } },
          { path: "/etc/ssh", contents: { source: "data:,x" }, overwrite: true },
          { path: "/etc/systemd/system/a.service", contents: { source: "data:,x" } },
        ],
        directories: [{ path: "/etc/issue" }],
        links: [{ path: "/var/h", target: "/etc/none", hard: true }],
      },
      systemd: { units: [{ name: "a.service", contents: "[Unit]\n" }] },
    });
    const writes = planWrites(p, []);
    const facts = new Map<string, PathFact>([
      ["/lib/modprobe.d/x.conf", fact("/usr/lib/modprobe.d/x.conf", "missing", "/lib")],
      ["/etc/motd", fact("/etc/motd", "file")],
      ["/etc/ssh", fact("/etc/ssh", "dir")],
      ["/etc/issue", fact("/etc/issue", "file")],
      ["/etc/none", fact("/etc/none")],
      ["/var/h", fact("/var/h")],
    ]);
    expect(messages(checkWrites(writes, facts))).toEqual([
      "storage.directories[0]: /etc/issue: exists and is not a directory",
      "storage.files[0]: /lib/modprobe.d/x.conf: resolves through the link /lib to /usr/lib/modprobe.d/x.conf, on the read-only /usr image; write to /etc or /var instead",
      "storage.files[1]: /etc/motd: already exists and overwrite is not true",
      "storage.files[2]: /etc/ssh: is an existing directory",
      "storage.links[0]: /var/h: its target /etc/none is not a file here and the config writes none",
      "systemd.units[0]: /etc/systemd/system/a.service: is also written by storage.files[3]",
    ]);
  });

  it("needs units that are enabled or get drop-ins to exist in the image or the config", () => {
    const p = plan({
      systemd: {
        units: [
          { name: "docker.service", enabled: true },
          { name: "getty@ttyS1.service", enabled: true },
          { name: "nope.service", dropins: [{ name: "a.conf", contents: "" }] },
          { name: "gone.service", mask: true },
          { name: "mine.service", enabled: true, contents: "[Service]\n" },
        ],
      },
    });
    const image = new Set(["getty@.service", "ssh.service"]);
    expect(messages(checkUnits(p, (n) => image.has(n)))).toEqual([
      "systemd.units[0].name: docker.service is not in the image (/usr/lib/systemd/system, /etc/systemd/system) and the config gives no contents",
      "systemd.units[2].name: nope.service is not in the image (/usr/lib/systemd/system, /etc/systemd/system) and the config gives no contents",
    ]);
  });
});

describe("apply on a directory tree", () => {
  const root = mkdtempSync(join(tmpdir(), "flotilla-ign-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, "usr/lib"), { recursive: true });
  mkdirSync(join(root, "etc/skel"), { recursive: true });
  mkdirSync(join(root, "home"));
  symlinkSync("usr/lib", join(root, "lib"));
  mkdirSync(join(root, "var"));
  symlinkSync("../lib", join(root, "var/l"));
  for (const [name, text] of Object.entries(IMAGE)) writeFileSync(join(root, "etc", name), text as string);
  writeFileSync(join(root, "etc/skel/.profile"), "# profile\n");
  writeFileSync(join(root, "etc/motd"), "hello\n");
  const target = { root, espDir: join(root, "efi"), live: false, marker: "{}\n" };

  it("resolves parents through links as the machine would see them", async () => {
    expect(await resolveIn(root, "/lib/x")).toEqual({ resolved: "/usr/lib/x", kind: "missing", via: "/lib" });
    expect(await resolveIn(root, "/var/l/x/y")).toEqual({
      resolved: "/usr/lib/x/y",
      kind: "missing",
      via: "/var/l",
    });
    expect(await resolveIn(root, "/etc/motd/x")).toMatchObject({ blocked: "/etc/motd" });
    expect(await resolveIn(root, "/lib")).toEqual({ resolved: "/lib", kind: "symlink" });
  });

  it("refuses the whole config, writing nothing, when one part cannot be applied", async () => {
    const before = snapshot(root);
    const p = plan({
      passwd: { users: [{ name: "core", groups: ["wheel"] }] },
      storage: {
        files: [
          { path: "/etc/a", contents: { source: "data:,a" } },
          { path: "/var/l/modprobe.d/b.conf", contents: { source: "data:,b" } },
        ],
      },
    });
    const err = await applyPlan(p, target).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplyError);
    expect((err as ApplyError).applied).toBe("nothing");
    expect(messages((err as ApplyError).problems)).toEqual([
      "passwd.users[0].groups[0]: group wheel does not exist in the image and is not created by passwd.groups",
      "storage.files[1]: /var/l/modprobe.d/b.conf: resolves through the link /var/l to /usr/lib/modprobe.d/b.conf, on the read-only /usr image; write to /etc or /var instead",
    ]);
    expect(snapshot(root)).toEqual(before);
  });

  it("applies a valid config completely, marker last", async () => {
    const p = plan({
      passwd: { groups: [{ name: "wheel" }], users: [{ name: "core", groups: ["wheel"] }] },
      storage: {
        files: [{ path: "/etc/motd", overwrite: true, contents: { source: "data:,new" } }],
        links: [
          { path: "/etc/l", target: "/etc/motd", hard: true },
          { path: "/etc/s", target: "motd" },
        ],
      },
    });
    await applyPlan(p, target);
    expect(readFileSync(join(root, "etc/motd"), "utf8")).toBe("new");
    expect(lstatSync(join(root, "etc/l")).ino).toBe(lstatSync(join(root, "etc/motd")).ino);
    expect(readlinkSync(join(root, "etc/s"))).toBe("motd");
    expect(readFileSync(join(root, "etc/group"), "utf8")).toContain("wheel:x:1000:core\n");
    expect(readFileSync(join(root, "home/core/.profile"), "utf8")).toBe("# profile\n");
    expect(readFileSync(join(root, MARKER), "utf8")).toBe("{}\n");
  });
});

/** Every entry under `dir` with type, mode, owner, size, link target and content. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const rel = p.slice(dir.length);
      if (st.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`${rel}/ ${st.mode.toString(8)} ${st.uid}:${st.gid}`);
        walk(p);
      } else
        out.push(`${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${readFileSync(p).toString("base64")}`);
    }
  };
  walk(dir);
  return out;
}
