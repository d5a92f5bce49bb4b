// The updater's local memory on ROOT (/var/lib/flotilla/update by default), shared by both slots:
// state.json holds the install awaiting its reboot and health gate; gate-failure.json is how a
// boot that failed its gate tells the fallback boot why. Both are written tmp + fsync + rename, so
// a power cut leaves the old or the new document, never half of one.

import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { PendingUpdate } from "./slots.js";

export interface LocalState {
  pending?: PendingUpdate;
  /** How the last update ended, kept so an agent restart still reports it. */
  outcome?: "blessed" | "rolled-back";
  lastRollback?: { version: string; reason: string; at: string };
}

export interface GateFailure {
  version: string;
  reason: string;
  at: string;
}

export const statePath = (stateDir: string) => join(stateDir, "state.json");
export const gateFailurePath = (stateDir: string) => join(stateDir, "gate-failure.json");
/** Where a version's downloaded files live. */
export const versionDir = (stateDir: string, version: string) => join(stateDir, version);

export async function readState(stateDir: string): Promise<LocalState> {
  return (await readJson<LocalState>(statePath(stateDir))) ?? {};
}

export async function writeState(stateDir: string, state: LocalState): Promise<void> {
  await writeJson(statePath(stateDir), state);
}

export async function readGateFailure(stateDir: string): Promise<GateFailure | undefined> {
  return readJson<GateFailure>(gateFailurePath(stateDir));
}

export async function writeGateFailure(stateDir: string, failure: GateFailure): Promise<void> {
  await writeJson(gateFailurePath(stateDir), failure);
}

export async function clearGateFailure(stateDir: string): Promise<void> {
  await rm(gateFailurePath(stateDir), { force: true });
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  return JSON.parse(text) as T;
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
