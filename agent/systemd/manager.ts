// systemd over D-Bus (dbus-next): the UnitManager port (port.ts) on a real machine. Unit files live
// in /run/fleet/units and are linked into systemd's runtime directory, as fleet does. State changes
// arrive by subscription (PropertiesChanged, JobRemoved); one ListUnitsByNames call then reads
// the states of fleet's units, instead of polling every unit.

import { EventEmitter } from "node:events";
import { mkdir, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import dbus from "dbus-next";
import type { Logger } from "../log.js";
import { templateOf } from "../unit/names.js";
import type { SystemdUnitState, UnitManager } from "./port.js";

export type { SystemdUnitState } from "./port.js";

const SYSTEMD = "org.freedesktop.systemd1";
const SYSTEMD_PATH = "/org/freedesktop/systemd1";
const MANAGER = "org.freedesktop.systemd1.Manager";

/** The org.freedesktop.systemd1.Manager methods this adapter calls. */
interface ManagerInterface extends EventEmitter {
  Subscribe(): Promise<void>;
  LinkUnitFiles(files: string[], runtime: boolean, force: boolean): Promise<unknown>;
  EnableUnitFiles(files: string[], runtime: boolean, force: boolean): Promise<unknown>;
  DisableUnitFiles(files: string[], runtime: boolean): Promise<unknown>;
  Reload(): Promise<void>;
  ResetFailedUnit(name: string): Promise<void>;
  StartUnit(name: string, mode: string): Promise<string>;
  StopUnit(name: string, mode: string): Promise<string>;
  ListUnitsByNames(names: string[]): Promise<unknown[][]>;
  ListUnitsByPatterns(states: string[], patterns: string[]): Promise<unknown[][]>;
  StartTransientUnit(
    name: string,
    mode: string,
    properties: [string, dbus.Variant][],
    aux: [string, [string, dbus.Variant][]][],
  ): Promise<string>;
}

interface PropertiesInterface {
  Get(iface: string, property: string): Promise<dbus.Variant>;
}

export interface SystemdEvents {
  /** Something about some unit changed; read states again. */
  change: [];
  /** The D-Bus connection broke; the agent restarts so systemd is reached afresh. */
  disconnected: [Error];
}

export class SystemdManager extends EventEmitter<SystemdEvents> implements UnitManager {
  private constructor(
    private readonly bus: dbus.MessageBus,
    private readonly manager: ManagerInterface,
    readonly unitDir: string,
    private readonly unitPath: readonly string[],
    private readonly log: Logger,
  ) {
    super();
  }

  /** Connects to systemd (the system bus unless `busAddress` is given) and subscribes to changes. */
  static async connect(unitDir: string, log: Logger, busAddress?: string): Promise<SystemdManager> {
    const bus = busAddress ? dbus.sessionBus({ busAddress }) : dbus.systemBus();
    const obj = await bus.getProxyObject(SYSTEMD, SYSTEMD_PATH);
    const manager = obj.getInterface(MANAGER) as unknown as ManagerInterface;
    const props = obj.getInterface("org.freedesktop.DBus.Properties") as unknown as PropertiesInterface;
    // systemd's unit search path (/etc, /run, /usr/lib…, generator and transient directories).
    const unitPath = (await props.Get(MANAGER, "UnitPath")).value as string[];
    const mgr = new SystemdManager(bus, manager, unitDir, unitPath, log);
    await mgr.subscribe();
    await mkdir(unitDir, { recursive: true });
    return mgr;
  }

  private async subscribe(): Promise<void> {
    await this.manager.Subscribe();
    const rule = `type='signal',sender='${SYSTEMD}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'`;
    await this.bus.call(
      new dbus.Message({
        destination: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
        interface: "org.freedesktop.DBus",
        member: "AddMatch",
        signature: "s",
        body: [rule],
      }),
    );
    this.bus.on("message", (msg) => {
      if (msg.member === "PropertiesChanged" && msg.path?.startsWith(`${SYSTEMD_PATH}/unit/`))
        this.emit("change");
    });
    this.manager.on("JobRemoved", () => this.emit("change"));
    this.manager.on("UnitRemoved", () => this.emit("change"));
    this.bus.on("error", (err: Error) => this.emit("disconnected", err));
  }

  async writeUnit(name: string, contents: string, enable: boolean): Promise<void> {
    const path = join(this.unitDir, name);
    await writeFile(path, contents, { mode: 0o644 });
    await this.manager.LinkUnitFiles([path], true, true);
    // [Install] units are enabled too, as fleet does (systemctl enable --runtime).
    if (enable) await this.manager.EnableUnitFiles([path], true, true);
  }

  async removeUnit(name: string): Promise<void> {
    await this.manager.DisableUnitFiles([name], true).catch(this.ignoreNoSuchUnit(name));
    await rm(join(this.unitDir, name), { force: true });
  }

  async reload(): Promise<void> {
    await this.manager.Reload();
  }

  async resetFailed(name: string): Promise<void> {
    await this.manager.ResetFailedUnit(name).catch(this.ignoreNoSuchUnit(name));
  }

  async start(name: string): Promise<void> {
    await this.manager.StartUnit(name, "replace");
  }

  async stop(name: string): Promise<void> {
    await this.manager.StopUnit(name, "replace").catch(this.ignoreNoSuchUnit(name));
  }

  /** The unit files this agent has written, by name. */
  async loadedFiles(): Promise<Map<string, string>> {
    const files = new Map<string, string>();
    for (const name of await readdir(this.unitDir)) {
      files.set(name, await readFile(join(this.unitDir, name), "utf8"));
    }
    return files;
  }

  /** systemd's load/active/sub state of each named unit, in one call. */
  async states(names: string[]): Promise<Map<string, SystemdUnitState>> {
    return names.length === 0 ? new Map() : unitStates(await this.manager.ListUnitsByNames(names));
  }

  async inMemory(names: string[]): Promise<Map<string, SystemdUnitState>> {
    // ListUnitsByNames would load the names it is asked about; ListUnitsByPatterns lists loaded units.
    return names.length === 0 ? new Map() : unitStates(await this.manager.ListUnitsByPatterns([], names));
  }

  /**
   * Starts `argv` as a transient service of its own (outside the agent's cgroup, restarted by
   * systemd if it dies) unless one of that name and description is running; one with another
   * description (an older agent's) is stopped and replaced.
   */
  async ensureService(name: string, description: string, argv: string[]): Promise<void> {
    const row = (await this.manager.ListUnitsByNames([name]))[0] as string[] | undefined;
    const running = (active: string | undefined) =>
      active === "active" || active === "activating" || active === "deactivating";
    if (running(row?.[3])) {
      if (row?.[1] === description) return;
      await this.manager.StopUnit(name, "replace");
      for (let i = 0; i < 50 && running((await this.states([name])).get(name)?.activeState); i++)
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await this.manager.ResetFailedUnit(name).catch(() => undefined);
    await this.manager.StartTransientUnit(
      name,
      "fail",
      [
        ["Description", new dbus.Variant("s", description)],
        ["ExecStart", new dbus.Variant("a(sasb)", [[argv[0], argv, false]])],
        ["Restart", new dbus.Variant("s", "always")],
        ["RestartUSec", new dbus.Variant("t", 200_000)],
        // Never give up restarting it, as flotilla-agent.service.
        ["StartLimitIntervalUSec", new dbus.Variant("t", 0)],
        ["CollectMode", new dbus.Variant("s", "inactive-or-failed")],
      ],
      [],
    );
  }

  hostUnits(names: string[]): Promise<Map<string, string>> {
    return findHostUnitFiles(names, this.unitPath, this.unitDir);
  }

  close(): void {
    this.bus.disconnect();
    // dbus-next keeps its socket referenced after disconnect(); release it so the process can exit.
    (
      this.bus as unknown as { _connection?: { stream?: { unref(): void; destroy(): void } } }
    )._connection?.stream?.destroy();
  }

  private ignoreNoSuchUnit(name: string) {
    return (err: unknown) => {
      const type = (err as { type?: string }).type ?? "";
      if (type.endsWith("NoSuchUnit") || /not (found|loaded)|does not exist/i.test(String(err))) return;
      this.log.warn({ unit: name, err: String(err) }, "systemd call failed");
      throw err;
    };
  }
}

/**
 * The unit files of these names (or of their templates, for instances) in systemd's unit search
 * path, by name, except the agent's own links into `unitDir`: the machine's own units. File
 * lookups only, so no work for PID 1 whatever the batch size: each directory is listed once and
 * only the names it holds are looked at, instead of one lookup per name and directory.
 */
export async function findHostUnitFiles(
  names: readonly string[],
  unitPath: readonly string[],
  unitDir: string,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (names.length === 0) return out;
  const ours = resolve(unitDir);
  const listings = await Promise.all(unitPath.map(listDir));
  for (const name of names) {
    const template = templateOf(name);
    search: for (const [i, dir] of unitPath.entries()) {
      for (const file of template ? [name, template] : [name]) {
        if (!listings[i]?.has(file)) continue;
        const path = join(dir, file);
        let target: string | undefined;
        try {
          target = await readlink(path);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === "ENOENT" || code === "ENOTDIR") continue;
          // EINVAL: a regular file, the machine's own. Anything else is no proof of absence.
          if (code !== "EINVAL") throw err;
        }
        if (target !== undefined && dirname(resolve(dir, target)) === ours) continue;
        out.set(name, path);
        break search;
      }
    }
  }
  return out;
}

/** The names in a directory; none if it does not exist (most of systemd's search path does not). */
async function listDir(dir: string): Promise<Set<string>> {
  try {
    return new Set(await readdir(dir));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return new Set();
    throw err;
  }
}

/** Rows of ListUnitsBy* (name, description, load, active, sub, …) by unit name. */
function unitStates(rows: unknown[][]): Map<string, SystemdUnitState> {
  const out = new Map<string, SystemdUnitState>();
  for (const row of rows) {
    const [name, , loadState, activeState, subState] = row as string[];
    if (name)
      out.set(name, { loadState: loadState ?? "", activeState: activeState ?? "", subState: subState ?? "" });
  }
  return out;
}
