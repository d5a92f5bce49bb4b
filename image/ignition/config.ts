// Validates an Ignition v3 config against the subset Flotilla supports (docs/ignition.md) and
// turns it into a plan. Pure: no I/O, so every problem is found and named before anything is
// written to the machine.

import { gunzipSync } from "node:zlib";

export interface Problem {
  /** Where in the config, e.g. `storage.files[1].mode`; `$` for the whole document. */
  path: string;
  message: string;
}

export interface PlanUser {
  name: string;
  sshAuthorizedKeys: string[];
  groups: string[];
}
export interface PlanFile {
  path: string;
  mode: number;
  contents: Buffer;
  overwrite: boolean;
}
export interface PlanDirectory {
  path: string;
  mode: number;
}
export interface PlanUnit {
  name: string;
  enabled?: boolean;
  mask: boolean;
  contents?: string;
  dropins: { name: string; contents: string }[];
}
export interface Plan {
  users: PlanUser[];
  directories: PlanDirectory[];
  files: PlanFile[];
  units: PlanUnit[];
}

export const SUPPORTED_VERSIONS = ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"];

/** Ignition fields that exist upstream but that Flotilla does not implement, per object. */
const KNOWN_UNSUPPORTED: Record<string, string[]> = {
  root: ["kernelArguments"],
  ignition: ["config", "timeouts", "security", "proxy"],
  passwd: ["groups"],
  user: [
    "passwordHash",
    "uid",
    "gecos",
    "homeDir",
    "noCreateHome",
    "primaryGroup",
    "noUserGroup",
    "noLogInit",
    "shell",
    "system",
    "shouldExist",
  ],
  storage: ["disks", "raid", "filesystems", "links", "luks"],
  file: ["append", "user", "group"],
  contents: ["verification", "httpHeaders"],
  directory: ["overwrite", "user", "group"],
  unit: [],
  dropin: [],
  systemd: [],
};

type Obj = Record<string, unknown>;

class Checker {
  readonly problems: Problem[] = [];

  add(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  /** Reports fields outside `allowed`, distinguishing unsupported Ignition fields from typos. */
  object(v: unknown, path: string, kind: string, allowed: string[]): Obj | undefined {
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      this.add(path, `must be an object, got ${describe(v)}`);
      return undefined;
    }
    for (const key of Object.keys(v)) {
      if (allowed.includes(key)) continue;
      const p = path === "$" ? key : `${path}.${key}`;
      if (KNOWN_UNSUPPORTED[kind]?.includes(key))
        this.add(p, "is not supported by Flotilla (see docs/ignition.md)");
      else this.add(p, `unknown field (supported here: ${allowed.join(", ")})`);
    }
    return v as Obj;
  }

  array(v: unknown, path: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.add(path, `must be an array, got ${describe(v)}`);
      return [];
    }
    return v;
  }

  string(v: unknown, path: string, required: boolean): string | undefined {
    if (v === undefined || v === null) {
      if (required) this.add(path, "is required");
      return undefined;
    }
    if (typeof v !== "string") {
      this.add(path, `must be a string, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  boolean(v: unknown, path: string): boolean | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") {
      this.add(path, `must be true or false, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  mode(v: unknown, path: string, fallback: number): number {
    if (v === undefined || v === null) return fallback;
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 0o7777) {
      this.add(
        path,
        `must be an integer permission mode from 0 to 4095 (decimal, e.g. 420 for 0644), got ${describe(v)}`,
      );
      return fallback;
    }
    return v as number;
  }

  /** Absolute, normalized, and writable on this OS (/usr is the read-only verity image). */
  fsPath(v: unknown, path: string): string | undefined {
    const p = this.string(v, path, true);
    if (p === undefined) return undefined;
    if (!p.startsWith("/")) this.add(path, `must be an absolute path, got ${JSON.stringify(p)}`);
    else if (
      p === "/" ||
      p.endsWith("/") ||
      p.split("/").some((s, i) => i > 0 && (s === "" || s === "." || s === ".."))
    )
      this.add(path, `must be a normalized path to a file or directory, got ${JSON.stringify(p)}`);
    else if (p === "/usr" || p.startsWith("/usr/"))
      this.add(path, `${p} is on the read-only /usr image; write to /etc or /var instead`);
    else return p;
    return undefined;
  }
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Decodes an RFC 2397 `data:` URL; throws with a reason when it is malformed. */
export function decodeDataUrl(url: string): Buffer {
  const m = /^data:([^,]*),(.*)$/s.exec(url);
  if (!m) throw new Error('must be a "data:" URL (remote sources are not supported)');
  const meta = m[1] as string;
  const data = m[2] as string;
  if (meta.endsWith(";base64")) {
    const compact = data.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 === 1)
      throw new Error("has invalid base64 data");
    return Buffer.from(compact, "base64");
  }
  try {
    return Buffer.from(decodeURIComponent(data), "utf8");
  } catch {
    throw new Error("has invalid percent-encoding");
  }
}

const UNIT_NAME = /^[A-Za-z0-9:_.\\@-]+\.(service|socket|timer|target|path|mount|automount|swap|slice)$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const SSH_KEY =
  /^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/;

/** Parses and validates a config; `plan` is set only when there are no problems. */
export function parseConfig(text: string): { plan?: Plan; problems: Problem[] } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { problems: [{ path: "$", message: `not valid JSON: ${(err as Error).message}` }] };
  }
  const c = new Checker();
  const plan: Plan = { users: [], directories: [], files: [], units: [] };
  const root = c.object(doc, "$", "root", ["ignition", "passwd", "storage", "systemd"]);
  if (!root) return { problems: c.problems };

  const ign =
    root.ignition === undefined ? undefined : c.object(root.ignition, "ignition", "ignition", ["version"]);
  if (root.ignition === undefined) c.add("ignition", "is required (with a version)");
  if (ign) {
    const version = c.string(ign.version, "ignition.version", true);
    if (version !== undefined && !SUPPORTED_VERSIONS.includes(version))
      c.add(
        "ignition.version",
        `${JSON.stringify(version)} is not supported (supported: ${SUPPORTED_VERSIONS.join(", ")})`,
      );
  }

  if (root.passwd !== undefined) {
    const passwd = c.object(root.passwd, "passwd", "passwd", ["users"]);
    const seen = new Set<string>();
    c.array(passwd?.users, "passwd.users").forEach((u, i) => {
      const p = `passwd.users[${i}]`;
      const user = c.object(u, p, "user", ["name", "sshAuthorizedKeys", "groups"]);
      if (!user) return;
      const name = c.string(user.name, `${p}.name`, true);
      if (name !== undefined && !USER_NAME.test(name))
        c.add(`${p}.name`, `${JSON.stringify(name)} is not a valid user name`);
      else if (name !== undefined && seen.has(name)) c.add(`${p}.name`, `user ${name} is listed twice`);
      if (name !== undefined) seen.add(name);
      const keys = c.array(user.sshAuthorizedKeys, `${p}.sshAuthorizedKeys`).flatMap((k, j) => {
        const kp = `${p}.sshAuthorizedKeys[${j}]`;
        const key = c.string(k, kp, true);
        if (key !== undefined && !SSH_KEY.test(key.trim())) {
          c.add(kp, 'is not an OpenSSH public key (expected e.g. "ssh-ed25519 AAAA... comment")');
          return [];
        }
        return key === undefined ? [] : [key.trim()];
      });
      const groups = c.array(user.groups, `${p}.groups`).flatMap((g, j) => {
        const group = c.string(g, `${p}.groups[${j}]`, true);
        if (group !== undefined && !USER_NAME.test(group))
          c.add(`${p}.groups[${j}]`, `${JSON.stringify(group)} is not a valid group name`);
        return group === undefined ? [] : [group];
      });
      if (name !== undefined) plan.users.push({ name, sshAuthorizedKeys: keys, groups });
    });
  }

  if (root.storage !== undefined) {
    const storage = c.object(root.storage, "storage", "storage", ["files", "directories"]);
    const seen = new Map<string, string>();
    const claim = (path: string, where: string) => {
      const prior = seen.get(path);
      if (prior) c.add(where, `${path} is also declared at ${prior}`);
      seen.set(path, where);
    };
    c.array(storage?.directories, "storage.directories").forEach((d, i) => {
      const p = `storage.directories[${i}]`;
      const dir = c.object(d, p, "directory", ["path", "mode"]);
      if (!dir) return;
      const path = c.fsPath(dir.path, `${p}.path`);
      const mode = c.mode(dir.mode, `${p}.mode`, 0o755);
      if (path !== undefined) {
        claim(path, `${p}.path`);
        plan.directories.push({ path, mode });
      }
    });
    c.array(storage?.files, "storage.files").forEach((f, i) => {
      const p = `storage.files[${i}]`;
      const file = c.object(f, p, "file", ["path", "mode", "contents", "overwrite"]);
      if (!file) return;
      const path = c.fsPath(file.path, `${p}.path`);
      const mode = c.mode(file.mode, `${p}.mode`, 0o644);
      const overwrite = c.boolean(file.overwrite, `${p}.overwrite`) ?? false;
      let contents: Buffer = Buffer.alloc(0);
      if (file.contents !== undefined && file.contents !== null) {
        const cont = c.object(file.contents, `${p}.contents`, "contents", ["source", "compression"]);
        const source = c.string(cont?.source, `${p}.contents.source`, false);
        const compression = c.string(cont?.compression, `${p}.contents.compression`, false) ?? "";
        if (compression !== "" && compression !== "gzip")
          c.add(`${p}.contents.compression`, `must be "gzip" or empty, got ${JSON.stringify(compression)}`);
        if (source !== undefined) {
          try {
            contents = decodeDataUrl(source);
            if (compression === "gzip") contents = gunzipSync(contents);
          } catch (err) {
            c.add(
              `${p}.contents.source`,
              (err as Error).message.replace(/^incorrect header check$/, "is not gzip data"),
            );
          }
        }
      }
      if (path !== undefined) {
        claim(path, `${p}.path`);
        plan.files.push({ path, mode, contents, overwrite });
      }
    });
  }

  if (root.systemd !== undefined) {
    const systemd = c.object(root.systemd, "systemd", "systemd", ["units"]);
    const seen = new Set<string>();
    c.array(systemd?.units, "systemd.units").forEach((u, i) => {
      const p = `systemd.units[${i}]`;
      const unit = c.object(u, p, "unit", ["name", "enabled", "mask", "contents", "dropins"]);
      if (!unit) return;
      const name = c.string(unit.name, `${p}.name`, true);
      if (name !== undefined && !UNIT_NAME.test(name))
        c.add(`${p}.name`, `${JSON.stringify(name)} is not a valid unit name`);
      else if (name !== undefined && seen.has(name)) c.add(`${p}.name`, `unit ${name} is listed twice`);
      if (name !== undefined) seen.add(name);
      const enabled = c.boolean(unit.enabled, `${p}.enabled`);
      const mask = c.boolean(unit.mask, `${p}.mask`) ?? false;
      if (mask && enabled) c.add(p, "cannot be both masked and enabled");
      const contents = c.string(unit.contents, `${p}.contents`, false);
      const dropins = c.array(unit.dropins, `${p}.dropins`).flatMap((d, j) => {
        const dp = `${p}.dropins[${j}]`;
        const dropin = c.object(d, dp, "dropin", ["name", "contents"]);
        if (!dropin) return [];
        const dname = c.string(dropin.name, `${dp}.name`, true);
        if (dname !== undefined && !/^[A-Za-z0-9_.@-]+\.conf$/.test(dname))
          c.add(`${dp}.name`, `must be a file name ending in .conf, got ${JSON.stringify(dname)}`);
        const dcontents = c.string(dropin.contents, `${dp}.contents`, false) ?? "";
        return dname === undefined ? [] : [{ name: dname, contents: dcontents }];
      });
      if (name !== undefined)
        plan.units.push({
          name,
          mask,
          dropins,
          ...(enabled === undefined ? {} : { enabled }),
          ...(contents === undefined ? {} : { contents }),
        });
    });
  }

  return c.problems.length > 0 ? { problems: c.problems } : { plan, problems: [] };
}

/** The operator-facing report: one line per problem. */
export function formatProblems(source: string, problems: Problem[]): string {
  return [
    `flotilla-ignition: provisioning FAILED: ${problems.length} problem${problems.length > 1 ? "s" : ""} in the config from ${source}:`,
    ...problems.map((p) => `flotilla-ignition:   ${p.path}: ${p.message}`),
    "flotilla-ignition: nothing was applied and flotilla-agent will not start; fix the config and reboot.",
  ].join("\n");
}
