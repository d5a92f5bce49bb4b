// Validates an Ignition v3 config against the subset Flotilla supports (docs/ignition.md) and
// turns it into a plan. Pure: no I/O, so every problem is found and named before anything is
// written to the machine.

import { gunzipSync } from "node:zlib";
import { KERNEL_ARG, type KernelArguments } from "../../agent/update/kargs.js";

/** Size limits, so a config cannot exhaust a small machine's memory before it is even checked. */
export interface Limits {
  /** The config document itself, in bytes. */
  maxConfigBytes: number;
  /** All `contents` together after base64 and gzip decoding, enforced while inflating. */
  maxContentBytes: number;
}
export const DEFAULT_LIMITS: Limits = { maxConfigBytes: 4 * 2 ** 20, maxContentBytes: 64 * 2 ** 20 };

export interface Problem {
  /** Where in the config, e.g. `storage.files[1].mode`; `$` for the whole document. */
  path: string;
  message: string;
}

export interface PlanUser {
  name: string;
  sshAuthorizedKeys: string[];
  groups: string[];
  passwordHash?: string;
  uid?: number;
  /** The primary group's name (Ignition's `primaryGroup`); default: a new group named like the user. */
  primaryGroup?: string;
  homeDir?: string;
  shell?: string;
  noCreateHome: boolean;
}
export interface PlanGroup {
  name: string;
  gid?: number;
  passwordHash?: string;
}
export interface PlanLink {
  path: string;
  target: string;
  hard: boolean;
  overwrite: boolean;
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
  groups: PlanGroup[];
  directories: PlanDirectory[];
  files: PlanFile[];
  links: PlanLink[];
  units: PlanUnit[];
  kernelArguments: KernelArguments;
}

export const SUPPORTED_VERSIONS = ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"];

/** Ignition fields that exist upstream but that Flotilla does not implement, per object. */
const KNOWN_UNSUPPORTED: Record<string, string[]> = {
  root: [],
  ignition: ["config", "timeouts", "security", "proxy"],
  passwd: [],
  user: ["gecos", "noUserGroup", "noLogInit", "system", "shouldExist"],
  group: ["system", "shouldExist"],
  link: ["user", "group"],
  kernelArguments: [],
  storage: ["disks", "raid", "filesystems", "luks"],
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

  /** A user or group ID useradd would accept (not the reserved 65535 or 2^32-1). */
  id(v: unknown, path: string): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 2 ** 32 - 2 || v === 65535) {
      this.add(path, `must be an integer ID from 0 to 4294967294 (not 65535), got ${describe(v)}`);
      return undefined;
    }
    return v as number;
  }

  /** A field of /etc/passwd, /etc/shadow or /etc/group: one line, no colon. */
  field(v: unknown, path: string): string | undefined {
    const s = this.string(v, path, false);
    if (s !== undefined && /[:\n\r\0]/.test(s)) {
      this.add(path, "must not contain a colon, a newline or NUL");
      return undefined;
    }
    return s;
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

/**
 * Gunzips within `maxBytes`: zlib stops and throws as soon as the output passes the cap, so a
 * small bomb costs at most the cap in memory, never its inflated size.
 */
export function gunzipCapped(data: Buffer, maxBytes: number): Buffer {
  try {
    return gunzipSync(data, { maxOutputLength: Math.max(1, maxBytes) });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE")
      throw new Error(`inflates to more than the ${maxBytes} bytes left of the content limit`);
    if ((err as Error).message === "incorrect header check") throw new Error("is not gzip data");
    throw err;
  }
}

/** Parses and validates a config; `plan` is set only when there are no problems. */
export function parseConfig(
  text: string,
  limits: Limits = DEFAULT_LIMITS,
): { plan?: Plan; problems: Problem[] } {
  const size = Buffer.byteLength(text);
  if (size > limits.maxConfigBytes)
    return {
      problems: [
        {
          path: "$",
          message: `the config is ${size} bytes, over the limit of ${limits.maxConfigBytes} (see docs/ignition.md, Limits)`,
        },
      ],
    };
  let contentBudget = limits.maxContentBytes;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { problems: [{ path: "$", message: `not valid JSON: ${(err as Error).message}` }] };
  }
  const c = new Checker();
  const plan: Plan = {
    users: [],
    groups: [],
    directories: [],
    files: [],
    links: [],
    units: [],
    kernelArguments: { shouldExist: [], shouldNotExist: [] },
  };
  const root = c.object(doc, "$", "root", ["ignition", "passwd", "storage", "systemd", "kernelArguments"]);
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
    const passwd = c.object(root.passwd, "passwd", "passwd", ["users", "groups"]);
    const seenGroups = new Set<string>();
    c.array(passwd?.groups, "passwd.groups").forEach((g, i) => {
      const p = `passwd.groups[${i}]`;
      const group = c.object(g, p, "group", ["name", "gid", "passwordHash"]);
      if (!group) return;
      const name = c.string(group.name, `${p}.name`, true);
      if (name !== undefined && !USER_NAME.test(name))
        c.add(`${p}.name`, `${JSON.stringify(name)} is not a valid group name`);
      else if (name !== undefined && seenGroups.has(name))
        c.add(`${p}.name`, `group ${name} is listed twice`);
      if (name !== undefined) seenGroups.add(name);
      const gid = c.id(group.gid, `${p}.gid`);
      const passwordHash = c.field(group.passwordHash, `${p}.passwordHash`);
      if (name !== undefined)
        plan.groups.push({
          name,
          ...(gid === undefined ? {} : { gid }),
          ...(passwordHash === undefined ? {} : { passwordHash }),
        });
    });
    const seen = new Set<string>();
    c.array(passwd?.users, "passwd.users").forEach((u, i) => {
      const p = `passwd.users[${i}]`;
      const user = c.object(u, p, "user", [
        "name",
        "sshAuthorizedKeys",
        "groups",
        "passwordHash",
        "uid",
        "primaryGroup",
        "homeDir",
        "noCreateHome",
        "shell",
      ]);
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
      const passwordHash = c.field(user.passwordHash, `${p}.passwordHash`);
      const uid = c.id(user.uid, `${p}.uid`);
      const primaryGroup = c.string(user.primaryGroup, `${p}.primaryGroup`, false);
      if (primaryGroup !== undefined && !USER_NAME.test(primaryGroup))
        c.add(`${p}.primaryGroup`, `${JSON.stringify(primaryGroup)} is not a valid group name`);
      const homeDir =
        user.homeDir === undefined || user.homeDir === null
          ? undefined
          : c.fsPath(user.homeDir, `${p}.homeDir`);
      const shell = c.field(user.shell, `${p}.shell`);
      if (shell !== undefined && !shell.startsWith("/"))
        c.add(`${p}.shell`, `must be an absolute path, got ${JSON.stringify(shell)}`);
      const noCreateHome = c.boolean(user.noCreateHome, `${p}.noCreateHome`) ?? false;
      if (name !== undefined)
        plan.users.push({
          name,
          sshAuthorizedKeys: keys,
          groups,
          noCreateHome,
          ...(passwordHash === undefined ? {} : { passwordHash }),
          ...(uid === undefined ? {} : { uid }),
          ...(primaryGroup === undefined ? {} : { primaryGroup }),
          ...(homeDir === undefined ? {} : { homeDir }),
          ...(shell === undefined ? {} : { shell }),
        });
    });
  }

  if (root.storage !== undefined) {
    const storage = c.object(root.storage, "storage", "storage", ["files", "directories", "links"]);
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
      let hasSource = false;
      if (file.contents !== undefined && file.contents !== null) {
        const cont = c.object(file.contents, `${p}.contents`, "contents", ["source", "compression"]);
        const source = c.string(cont?.source, `${p}.contents.source`, false);
        const compression = c.string(cont?.compression, `${p}.contents.compression`, false) ?? "";
        if (compression !== "" && compression !== "gzip")
          c.add(`${p}.contents.compression`, `must be "gzip" or empty, got ${JSON.stringify(compression)}`);
        if (source !== undefined) {
          hasSource = true;
          try {
            contents = decodeDataUrl(source);
            if (compression === "gzip") contents = gunzipCapped(contents, contentBudget);
            if (contents.length > contentBudget)
              throw new Error(`is more than the ${contentBudget} bytes left of the content limit`);
            contentBudget -= contents.length;
          } catch (err) {
            c.add(`${p}.contents.source`, (err as Error).message);
          }
        }
      }
      // Upstream refuses this too: it would replace whatever is there with an empty file.
      if (overwrite && !hasSource)
        c.add(
          `${p}.overwrite`,
          "is true without contents.source: that would empty the file; give contents or drop overwrite",
        );
      if (path !== undefined) {
        claim(path, `${p}.path`);
        plan.files.push({ path, mode, contents, overwrite });
      }
    });
    c.array(storage?.links, "storage.links").forEach((l, i) => {
      const p = `storage.links[${i}]`;
      const link = c.object(l, p, "link", ["path", "target", "hard", "overwrite"]);
      if (!link) return;
      const path = c.fsPath(link.path, `${p}.path`);
      const hard = c.boolean(link.hard, `${p}.hard`) ?? false;
      const overwrite = c.boolean(link.overwrite, `${p}.overwrite`) ?? false;
      // A hard link's target is a file on this machine; a symlink's may be relative or dangling.
      const target = hard ? c.fsPath(link.target, `${p}.target`) : c.string(link.target, `${p}.target`, true);
      if (target !== undefined && (target === "" || target.includes("\0")))
        c.add(`${p}.target`, "must be a non-empty path");
      else if (path !== undefined && target !== undefined) {
        claim(path, `${p}.path`);
        plan.links.push({ path, target, hard, overwrite });
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

  if (root.kernelArguments !== undefined) {
    const ka = c.object(root.kernelArguments, "kernelArguments", "kernelArguments", [
      "shouldExist",
      "shouldNotExist",
    ]);
    const list = (key: "shouldExist" | "shouldNotExist") =>
      c.array(ka?.[key], `kernelArguments.${key}`).flatMap((a, i) => {
        const ap = `kernelArguments.${key}[${i}]`;
        const arg = c.string(a, ap, true);
        if (arg !== undefined && !KERNEL_ARG.test(arg)) {
          c.add(ap, `must be one kernel argument without spaces or quotes, got ${JSON.stringify(arg)}`);
          return [];
        }
        return arg === undefined ? [] : [arg];
      });
    plan.kernelArguments = { shouldExist: list("shouldExist"), shouldNotExist: list("shouldNotExist") };
    for (const a of plan.kernelArguments.shouldExist)
      if (plan.kernelArguments.shouldNotExist.includes(a))
        c.add("kernelArguments", `${a} is in both shouldExist and shouldNotExist`);
  }

  return c.problems.length > 0 ? { problems: c.problems } : { plan, problems: [] };
}

/** What a failed run left on the machine, for the report's last line. */
export type Left = "nothing" | "rolled back" | "partly";

const LEFT: Record<Left, string> = {
  nothing: "nothing was applied",
  "rolled back": "what had been written was rolled back, the system is as it was before",
  partly: "the rollback was incomplete (see above): the system is PARTLY provisioned",
};

/** The operator-facing report: one line per problem, and honestly what is left behind. */
export function formatProblems(source: string, problems: Problem[], left: Left = "nothing"): string {
  return [
    `flotilla-ignition: provisioning FAILED: ${problems.length} problem${problems.length > 1 ? "s" : ""} in the config from ${source}:`,
    ...problems.map((p) => `flotilla-ignition:   ${p.path}: ${p.message}`),
    `flotilla-ignition: ${LEFT[left]} and flotilla-agent will not start; fix the config and reboot.`,
  ].join("\n");
}
