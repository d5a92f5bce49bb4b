// The health gate of an updated slot (`agent.js health-gate`, run by flotilla-update-gate.service
// before boot-complete.target). A boot is good only when the agent is healthy, etcd answers, the
// units scheduled to this machine are active and every extra check exits 0, all of them together
// and without interruption for the soak time. Only then does systemd-bless-boot drop the entry's
// counter. On failure the reason goes to gate-failure.json for the fallback boot to report, and
// the unit's FailureAction=reboot spends the slot's one try.

import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { access, readdir } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import { type AgentConfig, etcdSecurity, type TlsFiles } from "../config.js";
import type { Logger } from "../log.js";
import type { Placement, UnitRecord, UnitState } from "../model.js";
import { createEtcdClient } from "../registry/client.js";
import { Keys } from "../registry/keys.js";
import { openRegistry } from "../registry/open.js";
import type { Registry } from "../registry/registry.js";
import { listEntries } from "./esp.js";
import {
  bootedSlot,
  kernelCommandLine,
  type PendingUpdate,
  type Slot,
  type SlotStatus,
  slotStatus,
} from "./slots.js";
import { clearGateFailure, readState, writeGateFailure } from "./state.js";

export interface CheckResult {
  name: string;
  ok: boolean;
  /** Why it failed (or what it saw). */
  detail?: string;
}

export interface GateLimits {
  soakMs: number;
  /** How long checks may fail while the machine comes up, before the soak has to start. */
  settleMs: number;
}

export type GateVerdict =
  | { verdict: "pass"; reason: string }
  | { verdict: "fail"; reason: string }
  | { verdict: "wait"; reason: string; healthySince?: number };

/**
 * One round of the gate. All checks passing starts (or continues) the soak; any failure restarts
 * it. The gate fails only if checks still fail once the settle time and a full soak have passed,
 * so a slow start is not a bad release, but a machine that never becomes healthy is.
 */
export function evaluateGate(
  results: CheckResult[],
  startedAt: number,
  healthySince: number | undefined,
  now: number,
  limits: GateLimits,
): GateVerdict {
  const failing = results.filter((r) => !r.ok);
  if (failing.length === 0) {
    const since = healthySince ?? now;
    const soaked = now - since;
    if (soaked >= limits.soakMs)
      return {
        verdict: "pass",
        reason: `${results.length} checks passed for ${Math.round(soaked / 1000)} s`,
      };
    return {
      verdict: "wait",
      healthySince: since,
      reason: `healthy; soaking ${Math.round(soaked / 1000)} of ${Math.round(limits.soakMs / 1000)} s`,
    };
  }
  const reason = failing.map((r) => `${r.name}: ${r.detail ?? "failed"}`).join("; ");
  if (now - startedAt >= limits.settleMs + limits.soakMs) return { verdict: "fail", reason };
  return { verdict: "wait", reason };
}

/** Units the engine placed on `machineID` and wants running that are not active there. */
export function inactiveScheduledUnits(
  machineID: string,
  units: UnitRecord[],
  schedule: Map<string, Placement>,
  states: UnitState[],
): string[] {
  return units
    .filter((u) => u.desiredState === "launched" && schedule.get(u.name)?.machineID === machineID)
    .flatMap((u) => {
      const s = states.find((st) => st.name === u.name && st.machineID === machineID);
      return s?.activeState === "active"
        ? []
        : [`${u.name} (${s ? `${s.activeState}/${s.subState}` : "no state"})`];
    });
}

/**
 * Extra check programs: every file of the health.d directories, a name in the first directory
 * (the admin's /etc) hiding the same name in the later ones (the image's /usr), like systemd's
 * drop-in directories. Sorted by name, so checks run in a predictable order.
 */
export function extraChecks(dirs: { dir: string; names: string[] }[]): string[] {
  const byName = new Map<string, string>();
  for (const { dir, names } of dirs)
    for (const n of names) if (!n.startsWith(".") && !byName.has(n)) byName.set(n, join(dir, n));
  return [...byName.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, path]) => path);
}

export const HEALTH_DIRS = ["/etc/flotilla/health.d", "/usr/lib/flotilla/health.d"];
const ROUND_MS = 5000;
const CHECK_TIMEOUT_MS = 60_000;

export interface GateOptions {
  cfg: AgentConfig;
  /** The cluster PKI files, when etcd is https (config.ts readTlsFiles). */
  tls?: TlsFiles;
  machineID: string;
  log: Logger;
}

/** Runs the gate to its verdict; returns the process exit code. */
export async function runHealthGate(o: GateOptions): Promise<number> {
  const { cfg, log } = o;
  let booted: Slot;
  let status: SlotStatus;
  let pending: PendingUpdate | undefined;
  try {
    booted = bootedSlot(await kernelCommandLine());
    status = slotStatus(await listEntries(cfg.espDir), booted);
    ({ pending } = await readState(cfg.stateDir));
  } catch (err) {
    // Failing here could reboot a blessed machine forever: without the facts, do not gate.
    log.error({ err: String(err) }, "health gate: cannot tell whether this boot is an update; passing");
    return 0;
  }
  // Only a boot under assessment (counter on its entry) of a slot this updater installed is gated:
  // failing a blessed boot would reboot a good machine forever, and a fresh image's first boot has
  // its own checks (flotilla-health.service) and no cluster to ask yet.
  if (status.bootBlessed || pending?.slot !== booted) {
    log.info(
      { slot: booted, blessed: status.bootBlessed, pending },
      "health gate: not an update boot; passing",
    );
    return 0;
  }
  const version = pending.version;
  log.info({ slot: booted, version, soakSeconds: cfg.healthSoakSeconds }, "health gate: assessing this boot");

  const client = createEtcdClient(cfg.etcdEndpoints, etcdSecurity(cfg, o.tls));
  const { registry, feed } = openRegistry(client, new Keys(cfg.etcdPrefix), log.child({ part: "registry" }));
  const limits = { soakMs: cfg.healthSoakSeconds * 1000, settleMs: cfg.healthSettleSeconds * 1000 };
  const startedAt = Date.now();
  let healthySince: number | undefined;
  let lastReason = "";
  try {
    for (;;) {
      const results = [
        await agentHealth(cfg),
        ...(await clusterChecks(registry, o.machineID)),
        ...(await runExtraChecks(HEALTH_DIRS)),
      ];
      const v = evaluateGate(results, startedAt, healthySince, Date.now(), limits);
      if (v.verdict === "pass") {
        await clearGateFailure(cfg.stateDir);
        log.info({ version, results }, `health gate passed: ${v.reason}`);
        return 0;
      }
      if (v.verdict === "fail") {
        await writeGateFailure(cfg.stateDir, { version, reason: v.reason, at: new Date().toISOString() });
        log.error({ version, results }, `health gate failed: ${v.reason}`);
        return 1;
      }
      healthySince = v.healthySince;
      if (v.reason !== lastReason) log.info({ version, results }, `health gate: ${v.reason}`);
      lastReason = v.reason;
      await new Promise((r) => setTimeout(r, ROUND_MS));
    }
  } finally {
    await feed.stop();
    client.close();
  }
}

/** GET /flotilla/v1/health on the agent's own API (503 until it has registered with the cluster). */
function agentHealth(cfg: AgentConfig): Promise<CheckResult> {
  const where = cfg.apiSocket ? { socketPath: cfg.apiSocket } : tcpTarget(cfg.apiListen);
  if (!where) return Promise.resolve({ name: "agent", ok: false, detail: "the agent's API is disabled" });
  return new Promise((resolve) => {
    const req = request({ ...where, path: "/flotilla/v1/health", timeout: 5000 }, (res) => {
      res.resume();
      resolve(
        res.statusCode === 200
          ? { name: "agent", ok: true }
          : { name: "agent", ok: false, detail: `API answered HTTP ${res.statusCode}` },
      );
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")));
    req.on("error", (err) =>
      resolve({ name: "agent", ok: false, detail: `API unreachable: ${err.message}` }),
    );
    req.end();
  });
}

function tcpTarget(listen: string): { host: string; port: number } | undefined {
  if (!listen) return undefined;
  const colon = listen.lastIndexOf(":");
  const host = listen.slice(0, colon);
  return {
    host: host === "" || host === "0.0.0.0" ? "127.0.0.1" : host,
    port: Number(listen.slice(colon + 1)),
  };
}

async function clusterChecks(registry: Registry, machineID: string): Promise<CheckResult[]> {
  try {
    const snap = await registry.snapshot();
    const inactive = inactiveScheduledUnits(machineID, snap.units, snap.schedule, snap.states);
    return [
      { name: "etcd", ok: true },
      inactive.length
        ? { name: "units", ok: false, detail: `not active: ${inactive.join(", ")}` }
        : { name: "units", ok: true },
    ];
  } catch (err) {
    return [
      { name: "etcd", ok: false, detail: `unreachable: ${(err as Error).message}` },
      { name: "units", ok: false, detail: "unknown while etcd is unreachable" },
    ];
  }
}

async function runExtraChecks(dirs: string[]): Promise<CheckResult[]> {
  const listed = await Promise.all(
    dirs.map(async (dir) => ({ dir, names: await readdir(dir).catch(() => [] as string[]) })),
  );
  const results: CheckResult[] = [];
  for (const path of extraChecks(listed)) {
    const name = `health.d/${path.split("/").pop()}`;
    // Only programs are checks: a README or a disabled (chmod -x) check beside them is not.
    if (
      !(await access(path, constants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      continue;
    results.push(
      await new Promise<CheckResult>((resolve) =>
        execFile(path, [], { timeout: CHECK_TIMEOUT_MS }, (err, stdout, stderr) => {
          if (!err) return resolve({ name, ok: true });
          // The check's last words are the reason an operator reads; scripts print them either way.
          const last = (stderr.trim() || stdout.trim()).split("\n").pop();
          const how = err.killed ? `timed out after ${CHECK_TIMEOUT_MS / 1000} s` : `exited ${err.code}`;
          resolve({ name, ok: false, detail: last ? `${how}: ${last}` : how });
        }),
      ),
    );
  }
  return results;
}
