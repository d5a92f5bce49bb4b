// First-boot provisioning is all or nothing, on the image's own userland: the image's ignition.mjs
// and Node run `apply --root` against a copy of the built rootfs (the customize stage's tree) and
// the real systemctl enables units offline. Configs that fail late must leave the copy exactly as
// it was; the fixed config must then apply in full (the next boot's run), kernel arguments in both
// slots' entries; a gzip bomb is refused within the limits.

import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createGzip, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Definition } from "../../image/pipeline/definition.js";
import { loaderEntry } from "../../image/pipeline/stages/esp.js";
import { REPO } from "../../scripts/lib/image-build.js";
import { imageRootfs } from "../harness/rootfs.js";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0bUFxL6nQ3ZQ1fYkq0h6uFh0Gm0n8p6y2oG3m7n9C op@laptop";
const HASH = "0".repeat(64);

let work: string;
let root: string;
let image: string;

beforeAll(async () => {
  image = await imageRootfs();
  work = mkdtempSync(join(tmpdir(), "flotilla-ignition-"));
  root = join(work, "root");
  mkdirSync(root);
  // /usr is the read-only image: hard links cost nothing and apply never writes there. The rest
  // (the machine's writable ROOT) is copied.
  for (const entry of readdirSync(image))
    execFileSync(
      "cp",
      entry === "usr" ? ["-al", join(image, entry), root] : ["-a", join(image, entry), root],
    );
  // Both slots' entries on the ESP, as an updated machine has them (A counting, B blessed).
  const def = JSON.parse(readFileSync(join(REPO, "image/definition.json"), "utf8")) as Definition;
  mkdirSync(join(root, "efi/loader/entries"), { recursive: true });
  writeFileSync(join(root, "efi/loader/entries/flotilla-a+2-1.conf"), loaderEntry(def, 0, HASH));
  writeFileSync(join(root, "efi/loader/entries/flotilla-b.conf"), loaderEntry(def, 1, HASH));
}, 20 * 60_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Runs the image's provisioner with the image's Node on the copy. */
function apply(
  config: unknown,
  extra: string[] = [],
): { status: number | null; out: string; maxRssKiB: number } {
  const file = join(work, "config.ign");
  writeFileSync(file, typeof config === "string" ? config : JSON.stringify(config));
  const r = spawnSync(
    "/usr/bin/time",
    [
      "-f",
      "maxrss=%M",
      join(image, "usr/lib/flotilla/node"),
      join(image, "usr/lib/flotilla/ignition.mjs"),
      "apply",
      "--root",
      root,
      "--config",
      file,
      ...extra,
    ],
    { encoding: "utf8" },
  );
  const maxRssKiB = Number(/maxrss=(\d+)/.exec(r.stderr)?.[1] ?? Number.NaN);
  return { status: r.status, out: `${r.stdout}${r.stderr}`, maxRssKiB };
}

/** Every entry of the writable part (type, mode, owner, size, link target, content hash); /usr is the image's. */
function treeListing(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const rel = p.slice(root.length);
      if (rel === "/usr") continue;
      const st = lstatSync(p);
      const head = `${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid}`;
      if (st.isSymbolicLink()) out.push(`${head} -> ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`${head}/`);
        walk(p);
      } else if (st.isFile())
        out.push(`${head} ${st.size} ${createHash("sha256").update(readFileSync(p)).digest("hex")}`);
      else out.push(`${head} ${st.rdev}`);
    }
  };
  walk(root);
  return out;
}

const digest = (lines: string[]) => createHash("sha256").update(lines.join("\n")).digest("hex");

/** A config in the style of published FCOS/Flatcar examples, failing or not by what it names. */
function realWorld(opts: { groups?: { name: string }[]; unit?: Record<string, unknown>; alias?: string }) {
  return {
    ignition: { version: "3.4.0" },
    kernelArguments: { shouldExist: ["mitigations=auto", "flotilla.test=1"], shouldNotExist: ["panic=5"] },
    passwd: {
      ...(opts.groups ? { groups: opts.groups } : {}),
      users: [
        {
          name: "core",
          sshAuthorizedKeys: [KEY],
          groups: ["wheel", "sudo", "systemd-journal"],
          passwordHash: "$6$rounds=4096$salt$hash",
        },
        { name: "svc", uid: 1500, homeDir: "/var/lib/svc", shell: "/usr/sbin/nologin", noCreateHome: true },
      ],
    },
    storage: {
      directories: [{ path: "/var/lib/app", mode: 0o750 }],
      files: [
        { path: "/etc/hostname", mode: 0o644, contents: { source: "data:,node-1%0A" } },
        {
          path: "/etc/ssh/sshd_config.d/20-port.conf",
          mode: 0o600,
          contents: {
            source: `data:;base64,${gzipSync("Port 2222\n").toString("base64")}`,
            compression: "gzip",
          },
        },
        { path: "/etc/flotilla/agent.json", contents: { source: "data:,%7B%7D" } },
      ],
      links: [
        { path: "/etc/localtime", target: "../usr/share/zoneinfo/Europe/Paris", overwrite: true },
        { path: "/var/lib/app/agent.json", target: "/etc/flotilla/agent.json", hard: true },
      ],
    },
    systemd: {
      units: [
        opts.unit ?? { name: "etcd-member.service", enabled: true },
        {
          name: "hello.service",
          enabled: true,
          contents: `[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n${opts.alias ? `Alias=${opts.alias}\n` : ""}`,
          dropins: [{ name: "10-env.conf", contents: "[Service]\nEnvironment=A=1\n" }],
        },
      ],
    },
  };
}

describe("Ignition on a copy of the image's rootfs", () => {
  let pristine: string[];
  beforeAll(() => {
    pristine = treeListing();
  });

  it("a missing group (wheel) leaves the disk untouched and says nothing was applied", () => {
    const r = apply(realWorld({}));
    expect(r.status).toBe(1);
    expect(r.out).toContain(
      "passwd.users[0].groups[0]: group wheel does not exist in the image and is not created by passwd.groups",
    );
    expect(r.out).toContain("flotilla-ignition: nothing was applied");
    expect(digest(treeListing())).toBe(digest(pristine));
  });

  it("a unit the image lacks (docker.service) leaves the disk untouched", () => {
    const r = apply(
      realWorld({ groups: [{ name: "wheel" }], unit: { name: "docker.service", enabled: true } }),
    );
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/systemd\.units\[0\]\.name: docker\.service is not in the image/);
    expect(r.out).toContain("nothing was applied");
    expect(digest(treeListing())).toBe(digest(pristine));
  });

  it("paths through /lib, /bin, /sbin, /lib64 (links into /usr) are refused before any write", () => {
    const config = realWorld({ groups: [{ name: "wheel" }] });
    config.storage.files.push(
      ...["/lib/modprobe.d/x.conf", "/bin/tool", "/sbin/tool", "/lib64/x.so"].map((path) => ({
        path,
        mode: 0o644,
        contents: { source: "data:,x" },
      })),
    );
    const r = apply(config);
    expect(r.status).toBe(1);
    for (const [i, link] of [
      [3, "/lib"],
      [4, "/bin"],
      [5, "/sbin"],
      [6, "/lib64"],
    ])
      expect(r.out).toMatch(
        new RegExp(
          `storage\\.files\\[${i}\\]: \\S+: resolves through the link ${link} to /usr/\\S+, on the read-only /usr image`,
        ),
      );
    expect(digest(treeListing())).toBe(digest(pristine));
  });

  it("a failure in the middle of the commit (systemctl refuses a unit) is rolled back completely", () => {
    const r = apply(realWorld({ groups: [{ name: "wheel" }], alias: "hello.socket" }));
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/systemctl could not set the state of hello\.service: .*cannot alias/);
    expect(r.out).toContain("what had been written was rolled back, the system is as it was before");
    const after = treeListing();
    expect(after.filter((l) => !pristine.includes(l))).toEqual([]);
    expect(digest(after)).toBe(digest(pristine));
  });

  it("the fixed config then applies in full, kernel arguments in both slots' entries", () => {
    const r = apply(realWorld({ groups: [{ name: "wheel" }] }));
    expect(r.out).toContain("flotilla-ignition: applied the config");
    expect(r.status).toBe(0);
    const etc = (f: string) => readFileSync(join(root, "etc", f), "utf8");
    // wheel is created first and takes gid 1000, so core's own group gets the next one (as with groupadd + useradd).
    const coreGid = Number(/^core:x:1000:(\d+)::\/home\/core:\/bin\/bash$/m.exec(etc("passwd"))?.[1]);
    expect(etc("group")).toMatch(new RegExp(`^core:x:${coreGid}:$`, "m"));
    expect(etc("passwd")).toMatch(/^svc:x:1500:\d+::\/var\/lib\/svc:\/usr\/sbin\/nologin$/m);
    expect(etc("shadow")).toMatch(/^core:\$6\$rounds=4096\$salt\$hash:/m);
    expect(etc("group")).toMatch(/^wheel:x:\d+:core$/m);
    expect(etc("group")).toMatch(/^sudo:x:27:core$/m);
    expect(etc("subuid")).toMatch(/^core:100000:65536$/m);
    expect(statSync(join(root, "etc/shadow")).mode & 0o777).toBe(0o640);
    const home = statSync(join(root, "home/core"));
    expect([home.uid, home.gid]).toEqual([1000, coreGid]);
    expect(readFileSync(join(root, "home/core/.ssh/authorized_keys"), "utf8")).toBe(`${KEY}\n`);
    expect(statSync(join(root, "home/core/.ssh/authorized_keys")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(root, "home/core/.bashrc"), "utf8")).toBe(
      readFileSync(join(root, "etc/skel/.bashrc"), "utf8"),
    );
    expect(() => statSync(join(root, "var/lib/svc"))).toThrow(/ENOENT/);
    expect(etc("ssh/sshd_config.d/20-port.conf")).toBe("Port 2222\n");
    expect(readlinkSync(join(root, "etc/localtime"))).toBe("../usr/share/zoneinfo/Europe/Paris");
    expect(statSync(join(root, "var/lib/app/agent.json")).ino).toBe(
      statSync(join(root, "etc/flotilla/agent.json")).ino,
    );
    expect(statSync(join(root, "var/lib/app")).mode & 0o777).toBe(0o750);
    expect(readlinkSync(join(root, "etc/systemd/system/multi-user.target.wants/hello.service"))).toBe(
      "/etc/systemd/system/hello.service",
    );
    expect(
      readlinkSync(join(root, "etc/systemd/system/multi-user.target.wants/etcd-member.service")),
    ).toMatch(/\/etcd-member\.service$/);
    for (const entry of ["flotilla-a+2-1.conf", "flotilla-b.conf"]) {
      const options = (
        /^options (.*)$/m.exec(readFileSync(join(root, "efi/loader/entries", entry), "utf8"))?.[1] ?? ""
      ).split(" ");
      expect(options, entry).toEqual(expect.arrayContaining(["mitigations=auto", "flotilla.test=1"]));
      expect(options, entry).not.toContain("panic=5");
      expect(options.filter((o) => o.startsWith("usrhash="))).toEqual([`usrhash=${HASH}`]);
    }
    expect(JSON.parse(readFileSync(join(root, "var/lib/flotilla/provisioned"), "utf8"))).toMatchObject({
      source: join(work, "config.ign"),
    });
    // No staging or backup names are left anywhere.
    expect(treeListing().filter((l) => l.includes(".ignition-"))).toEqual([]);
    // The next boot skips provisioning: the unit is conditioned on that marker.
    expect(readFileSync(join(image, "usr/lib/systemd/system/flotilla-ignition.service"), "utf8")).toContain(
      "ConditionPathExists=!/var/lib/flotilla/provisioned",
    );
  });

  it("refuses a 1.4 MB gzip that inflates to 1 GiB within the limits, without inflating it", () => {
    // Built in 64 MiB pieces so the test itself does not hold 1 GiB either.
    const zeros = Buffer.alloc(64 * 2 ** 20);
    const gz = createGzip({ level: 9 });
    const parts: Buffer[] = [];
    gz.on("data", (c: Buffer) => parts.push(c));
    for (let i = 0; i < 16; i++) gz.write(zeros);
    gz.end();
    return new Promise<void>((resolve) => gz.on("end", resolve)).then(() => {
      const bomb = Buffer.concat(parts);
      const config = {
        ignition: { version: "3.4.0" },
        storage: {
          files: [
            {
              path: "/var/bomb",
              contents: { source: `data:;base64,${bomb.toString("base64")}`, compression: "gzip" },
            },
          ],
        },
      };
      const text = JSON.stringify(config);
      const before = treeListing();
      const r = apply(text);
      console.log(
        `gzip bomb: config ${(text.length / 1e6).toFixed(2)} MB (inflates to 1 GiB): refused with max RSS ${(r.maxRssKiB / 1024).toFixed(0)} MiB`,
      );
      expect(text.length).toBeGreaterThan(1.3e6);
      expect(text.length).toBeLessThan(1.5e6);
      expect(r.status).toBe(1);
      expect(r.out).toContain(
        "storage.files[0].contents.source: inflates to more than the 67108864 bytes left of the content limit",
      );
      // The content cap (64 MiB) plus Node itself: nowhere near the inflated 1 GiB.
      expect(r.maxRssKiB).toBeLessThan(250 * 1024);
      expect(treeListing()).toEqual(before);
      // A smaller configured config limit refuses it before parsing.
      const small = apply(text, ["--max-config-bytes", "1000000"]);
      expect(small.status).toBe(1);
      expect(small.out).toContain("the config is over the limit of 1000000 bytes");
    });
  }, 120_000);
});
