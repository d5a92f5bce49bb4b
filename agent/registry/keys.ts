// The etcd key layout: the only module that knows key names. Documented in docs/etcd-keys.md.
//
// Lease-bound keys (machines/, states/, services/, engine/leader) vanish with their machine's
// lease, which is how the cluster learns that a machine is gone.

export const DEFAULT_PREFIX = "/flotilla/";

export type KeyFamily =
  | "units"
  | "schedule"
  | "pending"
  | "failures"
  | "machines"
  | "metadata"
  | "states"
  | "services";

export class Keys {
  constructor(readonly prefix: string = DEFAULT_PREFIX) {}

  /** `units/<name>` → UnitRecord JSON (options, hash, desiredState). */
  units(): string {
    return `${this.prefix}units/`;
  }
  unit(name: string): string {
    return `${this.units()}${name}`;
  }

  /** `schedule/<name>` → Placement JSON; written only by the engine. */
  schedules(): string {
    return `${this.prefix}schedule/`;
  }
  schedule(name: string): string {
    return `${this.schedules()}${name}`;
  }

  /** `pending/<name>` → {reason, at}: why the engine could not place the unit. */
  pendings(): string {
    return `${this.prefix}pending/`;
  }
  pending(name: string): string {
    return `${this.pendings()}${name}`;
  }

  /** `failures/<name>` → FailureRecord JSON; written only by the engine. */
  failuresPrefix(): string {
    return `${this.prefix}failures/`;
  }
  failures(name: string): string {
    return `${this.failuresPrefix()}${name}`;
  }

  /** `machines/<id>` → Machine JSON under the machine's lease. */
  machines(): string {
    return `${this.prefix}machines/`;
  }
  machine(id: string): string {
    return `${this.machines()}${id}`;
  }

  /** `metadata/<id>/<key>` → value: dynamic metadata set through the API; survives restarts. */
  metadataPrefix(): string {
    return `${this.prefix}metadata/`;
  }
  machineMetadata(id: string): string {
    return `${this.metadataPrefix()}${id}/`;
  }
  metadata(id: string, key: string): string {
    return `${this.machineMetadata(id)}${key}`;
  }

  /** `states/<name>/<machineID>` → UnitState JSON under the publishing machine's lease. */
  states(): string {
    return `${this.prefix}states/`;
  }
  unitStates(name: string): string {
    return `${this.states()}${name}/`;
  }
  state(name: string, machineID: string): string {
    return `${this.unitStates(name)}${machineID}`;
  }

  /**
   * `services/<service>/<machineID>/<unit>` → ServiceRecord JSON under the publishing machine's
   * lease, present while the unit is active. Service names are DNS labels and unit names have no
   * "/", so the key splits back unambiguously.
   */
  services(): string {
    return `${this.prefix}services/`;
  }
  serviceInstances(service: string): string {
    return `${this.services()}${service}/`;
  }
  service(service: string, machineID: string, unit: string): string {
    return `${this.serviceInstances(service)}${machineID}/${unit}`;
  }

  /** `engine/leader` → machine ID of the elected engine, under its lease. */
  engineLeader(): string {
    return `${this.prefix}engine/leader`;
  }

  /**
   * `update/…`: the A/B updater's cluster state (docs/updates.md). Group and holder IDs never
   * contain "/" where a key is parsed back: groups match `^[a-zA-Z0-9.-]+$`, and holder records
   * carry their own ID in the value.
   */
  updates(): string {
    return `${this.prefix}update/`;
  }
  /** `update/groups/<group>/` → everything about one reboot group, read in one range. */
  updateGroups(): string {
    return `${this.updates()}groups/`;
  }
  updateGroup(group: string): string {
    return `${this.updateGroups()}${group}/`;
  }
  /** `update/groups/<group>/config` → GroupConfig; persistent, written through the API. */
  updateGroupConfig(group: string): string {
    return `${this.updateGroup(group)}config`;
  }
  /** `update/groups/<group>/seq` → counter bumped by every acquisition, the semaphore's guard. */
  updateGroupSeq(group: string): string {
    return `${this.updateGroup(group)}seq`;
  }
  /** `update/groups/<group>/holders/<holderId>` → HolderRecord under the holder's own lease. */
  updateHolders(group: string): string {
    return `${this.updateGroup(group)}holders/`;
  }
  updateHolder(group: string, holderId: string): string {
    return `${this.updateHolders(group)}${holderId}`;
  }
  /** `update/bad/<version>` → BadVersion; persistent until cleared. */
  updateBadVersions(): string {
    return `${this.updates()}bad/`;
  }
  updateBadVersion(version: string): string {
    return `${this.updateBadVersions()}${version}`;
  }
  /** `update/status/<machineID>` → UpdateStatus; persistent, so it survives the reboot. */
  updateStatuses(): string {
    return `${this.updates()}status/`;
  }
  updateStatus(machineID: string): string {
    return `${this.updateStatuses()}${machineID}`;
  }
  /** `update/check/<machineID|all>` → CheckRequest: a nonce the updaters watch for "check now". */
  updateChecks(): string {
    return `${this.updates()}check/`;
  }
  updateCheck(target: string): string {
    return `${this.updateChecks()}${target}`;
  }

  /** Which family a key belongs to, and the part of the key after the family's prefix. */
  classify(key: string): { family: KeyFamily; rest: string } | undefined {
    for (const [family, prefix] of this.families) {
      if (key.startsWith(prefix)) return { family, rest: key.slice(prefix.length) };
    }
    return undefined;
  }

  /** The prefix of one family's keys. */
  familyPrefix(family: KeyFamily): string {
    return this.families.find(([f]) => f === family)?.[1] ?? "";
  }

  private get families(): [KeyFamily, string][] {
    return [
      ["units", this.units()],
      ["schedule", this.schedules()],
      ["pending", this.pendings()],
      ["failures", this.failuresPrefix()],
      ["machines", this.machines()],
      ["metadata", this.metadataPrefix()],
      ["states", this.states()],
      ["services", this.services()],
    ];
  }

  /** Splits `states/<name>/<machineID>` back into its parts. */
  parseStateKey(key: string): { name: string; machineID: string } | undefined {
    const rest = key.startsWith(this.states()) ? key.slice(this.states().length) : undefined;
    const slash = rest?.lastIndexOf("/") ?? -1;
    if (rest === undefined || slash <= 0) return undefined;
    return { name: rest.slice(0, slash), machineID: rest.slice(slash + 1) };
  }

  /** Splits `services/<service>/<machineID>/<unit>` back into its parts. */
  parseServiceKey(key: string): { service: string; machineID: string; unit: string } | undefined {
    if (!key.startsWith(this.services())) return undefined;
    const parts = key.slice(this.services().length).split("/");
    if (parts.length !== 3 || parts.some((p) => p === "")) return undefined;
    const [service = "", machineID = "", unit = ""] = parts;
    return { service, machineID, unit };
  }
}
