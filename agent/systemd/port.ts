// The UnitManager port (as fleet had): what the machine-side reconciler needs of systemd. The D-Bus
// adapter (manager.ts) implements it on a machine; memory.ts implements it in memory for unit tests
// and for simulating many machines in one process.
//
// Writing and removing unit files does not reload systemd: the caller batches them and calls
// reload() once, because every daemon-reload re-reads every unit on the machine (135–240 ms of
// PID 1's CPU each, whatever the batch size).

export interface SystemdUnitState {
  loadState: string;
  activeState: string;
  subState: string;
}

export interface UnitManager {
  /** Writes the unit file and links it into systemd's runtime directory ([Install] units enabled). */
  writeUnit(name: string, contents: string, enable: boolean): Promise<void>;
  /** Unlinks and removes a unit file this agent wrote. */
  removeUnit(name: string): Promise<void>;
  /** One daemon-reload: systemd takes in every unit file written or removed since the last one. */
  reload(): Promise<void>;
  /** Forgets the failed state of a unit (after its file was removed and systemd reloaded). */
  resetFailed(name: string): Promise<void>;
  /** Queues a start job; resolves once systemd has accepted it, not when the unit is active. */
  start(name: string): Promise<void>;
  /** Queues a stop job; a unit systemd does not know counts as stopped. */
  stop(name: string): Promise<void>;
  /** The unit files this agent has written, by name (what an earlier run left, at startup). */
  loadedFiles(): Promise<Map<string, string>>;
  /** systemd's load/active/sub state of each named unit that systemd knows. */
  states(names: string[]): Promise<Map<string, SystemdUnitState>>;
  /**
   * Names among `names` that the machine itself defines, outside this agent's unit directory (OS
   * units such as ssh.service, whether shipped in /usr or added in /etc), each with the unit file
   * path systemd found. The agent never writes, starts, stops or removes those.
   */
  hostUnits(names: string[]): Promise<Map<string, string>>;
  /** `change`: some unit's state may have changed; read states again. */
  on(event: "change", listener: () => void): unknown;
}
