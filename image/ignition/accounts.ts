// Users and groups as new texts of /etc/passwd, group, shadow, gshadow, subuid and subgid. Pure:
// the caller reads the current files and swaps the new ones in as part of one commit, so a failure
// anywhere leaves the account database as it was (useradd/usermod would each write in place).

import type { Plan, Problem } from "./config.js";

export interface AccountFiles {
  passwd: string;
  group: string;
  shadow: string;
  gshadow: string;
  /** Absent when the image has no such file (then no ranges are assigned, as useradd does). */
  subuid?: string;
  subgid?: string;
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** What the config does to one user, for writing the home and authorized_keys. */
export interface UserOutcome {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** A home to create (from /etc/skel), for a new user without noCreateHome. */
  createHome: boolean;
  sshAuthorizedKeys: string[];
}

export interface AccountsResult {
  files: AccountFiles;
  users: UserOutcome[];
  /** Account files that change, by name. */
  changed: (keyof AccountFiles)[];
}

// As in Debian's /etc/login.defs.
const ID_MIN = 1000;
const ID_MAX = 60000;
const SUB_MIN = 100000;
const SUB_COUNT = 65536;
const DEFAULT_SHELL = "/bin/bash";

const lines = (text: string) => text.split("\n").filter((l) => l.trim() !== "");
const rows = (text: string) => lines(text).map((l) => l.split(":"));

export function parsePasswd(text: string): PasswdEntry[] {
  return rows(text).map((f) => ({
    name: f[0] ?? "",
    uid: Number(f[2]),
    gid: Number(f[3]),
    home: f[5] ?? "",
    shell: f[6] ?? "",
  }));
}

export function parseGroups(text: string): Map<string, { gid: number; members: string[] }> {
  return new Map(
    rows(text).map((f) => [
      f[0] ?? "",
      { gid: Number(f[2]), members: (f[3] ?? "").split(",").filter(Boolean) },
    ]),
  );
}

/**
 * The problems that would stop these users and groups from being created, each naming its field:
 * a group that neither exists nor is created, IDs already taken, changes useradd would refuse.
 */
export function checkAccounts(plan: Pick<Plan, "users" | "groups">, files: AccountFiles): Problem[] {
  const problems: Problem[] = [];
  const users = parsePasswd(files.passwd);
  const groups = parseGroups(files.group);
  const newGroups = new Set(plan.groups.map((g) => g.name));
  plan.groups.forEach((g, i) => {
    const existing = groups.get(g.name);
    if (existing && g.gid !== undefined && existing.gid !== g.gid)
      problems.push({
        path: `passwd.groups[${i}].gid`,
        message: `group ${g.name} already exists with gid ${existing.gid}, not ${g.gid}`,
      });
    if (!existing && g.gid !== undefined) {
      const owner = [...groups].find(([, v]) => v.gid === g.gid)?.[0];
      if (owner)
        problems.push({
          path: `passwd.groups[${i}].gid`,
          message: `gid ${g.gid} is taken by group ${owner}`,
        });
    }
  });
  const known = (name: string) => groups.has(name) || newGroups.has(name);
  plan.users.forEach((u, i) => {
    const p = `passwd.users[${i}]`;
    const existing = users.find((e) => e.name === u.name);
    u.groups.forEach((g, j) => {
      if (!known(g))
        problems.push({
          path: `${p}.groups[${j}]`,
          message: `group ${g} does not exist in the image and is not created by passwd.groups`,
        });
    });
    if (u.primaryGroup !== undefined && !known(u.primaryGroup))
      problems.push({
        path: `${p}.primaryGroup`,
        message: `group ${u.primaryGroup} does not exist in the image and is not created by passwd.groups`,
      });
    if (existing) {
      // Changing an existing account's identity would orphan its files; refuse rather than guess.
      const differs = (field: string, want: unknown, have: unknown) => {
        if (want !== undefined && want !== have)
          problems.push({
            path: `${p}.${field}`,
            message: `user ${u.name} already exists with ${field} ${String(have)}; changing it is not supported`,
          });
      };
      differs("uid", u.uid, existing.uid);
      differs("homeDir", u.homeDir, existing.home);
      if (u.primaryGroup !== undefined) {
        const gid = groups.get(u.primaryGroup)?.gid;
        if (gid !== existing.gid)
          problems.push({
            path: `${p}.primaryGroup`,
            message: `user ${u.name} already exists with primary gid ${existing.gid}; changing it is not supported`,
          });
      }
    } else if (u.uid !== undefined) {
      const owner = users.find((e) => e.uid === u.uid);
      if (owner) problems.push({ path: `${p}.uid`, message: `uid ${u.uid} is taken by user ${owner.name}` });
    }
    if (!existing && u.primaryGroup === undefined && groups.has(u.name) && !newGroups.has(u.name))
      problems.push({
        path: `${p}.name`,
        message: `a group ${u.name} already exists: set primaryGroup to use it (useradd would refuse)`,
      });
  });
  return problems;
}

/**
 * The account files with the config's groups and users added. Meant for a plan checkAccounts
 * passed; on another it still returns (skipping what is missing) so every other check can run.
 */
export function applyAccounts(
  plan: Pick<Plan, "users" | "groups">,
  files: AccountFiles,
  daysSinceEpoch: number,
): AccountsResult {
  const passwd = lines(files.passwd);
  const group = lines(files.group);
  const shadow = lines(files.shadow);
  const gshadow = lines(files.gshadow);
  const subuid = files.subuid === undefined ? undefined : lines(files.subuid);
  const subgid = files.subgid === undefined ? undefined : lines(files.subgid);
  const changed = new Set<keyof AccountFiles>();

  const gidOf = (name: string) => parseGroups(group.join("\n")).get(name)?.gid;
  const freeId = (taken: number[], wanted?: number) => {
    if (wanted !== undefined && !taken.includes(wanted)) return wanted;
    let id = ID_MIN;
    while (taken.includes(id) && id < ID_MAX) id++;
    return id;
  };
  const setField = (list: string[], name: string, index: number, value: string) => {
    const at = list.findIndex((l) => l.split(":")[0] === name);
    if (at < 0) return false;
    const f = (list[at] as string).split(":");
    f[index] = value;
    list[at] = f.join(":");
    return true;
  };
  const addGroup = (name: string, gid: number, passwordHash = "!") => {
    group.push(`${name}:x:${gid}:`);
    gshadow.push(`${name}:${passwordHash}::`);
    changed.add("group").add("gshadow");
  };

  for (const g of plan.groups) {
    if (gidOf(g.name) === undefined) {
      const taken = [...parseGroups(group.join("\n")).values()].map((v) => v.gid);
      addGroup(g.name, freeId(taken, g.gid), g.passwordHash);
    } else if (g.passwordHash !== undefined) {
      if (!setField(gshadow, g.name, 1, g.passwordHash)) gshadow.push(`${g.name}:${g.passwordHash}::`);
      changed.add("gshadow");
    }
  }

  const outcomes: UserOutcome[] = [];
  for (const u of plan.users) {
    let entry = parsePasswd(passwd.join("\n")).find((e) => e.name === u.name);
    const isNew = entry === undefined;
    if (!entry) {
      const uid = freeId(
        parsePasswd(passwd.join("\n")).map((e) => e.uid),
        u.uid,
      );
      let gid = u.primaryGroup === undefined ? undefined : gidOf(u.primaryGroup);
      if (gid === undefined) {
        // A user group like useradd's USERGROUPS_ENAB: its gid matches the uid when that is free.
        const taken = [...parseGroups(group.join("\n")).values()].map((v) => v.gid);
        gid = freeId(taken, uid);
        addGroup(u.name, gid);
      }
      const home = u.homeDir ?? (u.name === "root" ? "/root" : `/home/${u.name}`);
      passwd.push(`${u.name}:x:${uid}:${gid}::${home}:${u.shell ?? DEFAULT_SHELL}`);
      // "!": no password login until passwordHash sets one (SSH keys still work).
      shadow.push(`${u.name}:${u.passwordHash ?? "!"}:${daysSinceEpoch}:0:99999:7:::`);
      changed.add("passwd").add("shadow");
      for (const [list, key] of [
        [subuid, "subuid"],
        [subgid, "subgid"],
      ] as const) {
        if (!list) continue;
        const ends = list.map((l) => Number(l.split(":")[1]) + Number(l.split(":")[2]));
        list.push(`${u.name}:${Math.max(SUB_MIN, ...ends)}:${SUB_COUNT}`);
        changed.add(key);
      }
      entry = { name: u.name, uid, gid, home, shell: u.shell ?? DEFAULT_SHELL };
    } else {
      if (u.passwordHash !== undefined) {
        if (!setField(shadow, u.name, 1, u.passwordHash))
          shadow.push(`${u.name}:${u.passwordHash}:${daysSinceEpoch}:0:99999:7:::`);
        changed.add("shadow");
      }
      if (u.shell !== undefined && u.shell !== entry.shell) {
        setField(passwd, u.name, 6, u.shell);
        changed.add("passwd");
      }
    }
    for (const g of u.groups) {
      const at = group.findIndex((l) => l.split(":")[0] === g);
      if (at < 0) continue; // checkAccounts reports it
      const f = (group[at] as string).split(":");
      const members = (f[3] ?? "").split(",").filter(Boolean);
      if (members.includes(u.name)) continue;
      f[3] = [...members, u.name].join(",");
      group[at] = f.join(":");
      const gs = gshadow.findIndex((l) => l.split(":")[0] === g);
      if (gs >= 0) {
        const s = (gshadow[gs] as string).split(":");
        s[3] = [...(s[3] ?? "").split(",").filter(Boolean), u.name].join(",");
        gshadow[gs] = s.join(":");
      }
      changed.add("group").add("gshadow");
    }
    outcomes.push({
      name: u.name,
      uid: entry.uid,
      gid: entry.gid,
      home: entry.home,
      createHome: isNew && !u.noCreateHome,
      sshAuthorizedKeys: u.sshAuthorizedKeys,
    });
  }

  const text = (l: string[]) => `${l.join("\n")}\n`;
  return {
    files: {
      passwd: text(passwd),
      group: text(group),
      shadow: text(shadow),
      gshadow: text(gshadow),
      ...(subuid ? { subuid: text(subuid) } : {}),
      ...(subgid ? { subgid: text(subgid) } : {}),
    },
    users: outcomes,
    changed: [...changed],
  };
}
