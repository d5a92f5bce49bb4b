// Helpers shared by the cluster integration tests: run the real fleetctl bundle, read etcd
// directly, wait for conditions with explicit deadlines, and build expected fleet tables.

import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Etcd3 } from "etcd3";
import type { Placement, UnitState } from "../../agent/model.js";
import { createEtcdClient } from "../../agent/registry/client.js";
import { Keys } from "../../agent/registry/keys.js";
import { type Cluster, harnessPki, type Machine, type TlsFiles } from "../harness/index.js";

const FLEETCTL = join(import.meta.dirname, "../../dist/fleetctl.cjs");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs dist/fleetctl.cjs against `endpoint` from `cwd`; an https endpoint gets the harness's admin
 * certificate unless `tlsFlags` says otherwise (e.g. [] for none).
 */
export function fleetctl(
  endpoint: string,
  args: string[],
  cwd = process.cwd(),
  tlsFlags = endpoint.startsWith("https:") ? harnessPki().fleetctlFlags() : [],
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [FLEETCTL, `--endpoint=${endpoint}`, ...tlsFlags, ...args],
      {
        cwd,
        timeout: 120_000,
        env: {
          ...process.env,
          FLEETCTL_ENDPOINT: undefined,
          FLEETCTL_CA_FILE: undefined,
          FLEETCTL_CERT_FILE: undefined,
          FLEETCTL_KEY_FILE: undefined,
        },
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A temporary directory holding the given unit files. */
export function unitDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-units-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

/** Polls `probe` until it returns a value other than undefined/false, or fails naming `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (${String(lastError)})` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** fleetctl run in a temporary directory holding `files` (unit files by name), removed after. */
export async function fleetctlWith(
  endpoint: string,
  args: string[],
  files: Record<string, string> = {},
): Promise<RunResult> {
  const dir = unitDir(files);
  try {
    return await fleetctl(endpoint, args, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type Fleetctl = (args: string[]) => Promise<RunResult>;

/** After the agents restarted: `machines` listed again and an engine elected. */
export async function waitForMembers(fc: Fleetctl, etcd: EtcdView, machines: number): Promise<void> {
  await waitFor(
    `${machines} machines and a leader after the agents restarted`,
    async () => {
      const r = await fc(["list-machines", "--no-legend"]);
      return r.stdout.trim().split("\n").length === machines && (await etcd.leader()) !== undefined;
    },
    60_000,
  );
}

/** Destroys every unit in the cluster, so the next test starts from none. */
export async function destroyAllUnits(fc: Fleetctl): Promise<void> {
  const files = await fc(["list-unit-files", "--no-legend", "--fields", "unit"]);
  const names = files.stdout.split("\n").filter(Boolean);
  if (names.length > 0) await fc(["destroy", ...names]);
}

/** A read-only view of the cluster's etcd for assertions (with the harness's client certificate). */
export class EtcdView {
  readonly client: Etcd3;
  readonly keys = new Keys();
  constructor(endpoints: string | string[]) {
    this.client = createEtcdClient(typeof endpoints === "string" ? [endpoints] : endpoints, {
      tls: harnessPki().material(),
    });
  }
  async placement(unit: string): Promise<Placement | undefined> {
    const raw = await this.client.get(this.keys.schedule(unit)).string();
    return raw === null ? undefined : (JSON.parse(raw) as Placement);
  }
  async states(unit: string): Promise<UnitState[]> {
    const all = await this.client.getAll().prefix(this.keys.unitStates(unit)).strings();
    return Object.values(all).map((v) => JSON.parse(v) as UnitState);
  }
  /** The machine where `unit` is placed and systemd reports it active, if any. */
  async activeOn(unit: string): Promise<string | undefined> {
    const p = await this.placement(unit);
    if (!p) return undefined;
    const s = (await this.states(unit)).find((x) => x.machineID === p.machineID);
    return s?.activeState === "active" ? p.machineID : undefined;
  }
  async leader(): Promise<string | undefined> {
    return (await this.client.get(this.keys.engineLeader()).string()) ?? undefined;
  }
  close(): void {
    this.client.close();
  }
}

/** systemd's InvocationID of a unit on a machine: it changes whenever the unit (re)starts. */
export async function invocationID(m: Machine, unit: string): Promise<string> {
  const r = await m.exec(["systemctl", "show", "-p", "InvocationID", "--value", unit]);
  return r.stdout.trim();
}

export function machineByID(cluster: Cluster, id: string): Machine {
  const m = cluster.machines.find((x) => x.id === id);
  if (!m) throw new Error(`no machine with ID ${id}`);
  return m;
}

/** fleetctl's machine cell: `<id8>.../<ip>`. */
export function machineCell(m: Machine): string {
  return `${m.id.slice(0, 8)}.../${m.ip}`;
}

/**
 * The bytes Go's tabwriter.NewWriter(w, 0, 8, 1, '\t', 0) writes for these rows: each column is
 * as wide as its widest cell plus one, rounded up to a tab stop, and cells are padded with TABs.
 * Written independently of fleetctl's port so the comparison is not circular.
 */
export function goTabTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.slice(0, -1).forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, Math.ceil((cell.length + 1) / 8) * 8);
    });
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) =>
          i === row.length - 1 ? cell : cell + "\t".repeat(Math.ceil(((widths[i] ?? 0) - cell.length) / 8)),
        )
        .join(""),
    )
    .map((line) => `${line}\n`)
    .join("");
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * One raw HTTP request (no client library between the test and the wire): to `base` over TCP, or
 * over `socketPath`. An array body is sent chunked, without Content-Length. An https `base` is
 * reached with the harness's admin certificate unless `tls` names other files (or null: none).
 */
export function httpRequest(
  method: string,
  base: string,
  target: string,
  opts: {
    body?: string | string[];
    headers?: Record<string, string>;
    socketPath?: string;
    tls?: TlsFiles | null;
  } = {},
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const url = new URL(base);
    const secure = !opts.socketPath && url.protocol === "https:";
    const pki = secure ? harnessPki() : undefined;
    const files = opts.tls === undefined ? pki?.admin : opts.tls;
    const tls = !pki ? {} : files ? pki.material(files) : { ca: pki.material().ca };
    const req = (secure ? https : http).request({
      method,
      path: target,
      agent: false,
      headers: opts.headers,
      ...tls,
      ...(opts.socketPath ? { socketPath: opts.socketPath } : { host: url.hostname, port: url.port }),
    });
    req.on("error", reject);
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        text += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    for (const chunk of Array.isArray(opts.body) ? opts.body : []) req.write(chunk);
    req.end(Array.isArray(opts.body) ? undefined : opts.body);
  });
}

/**
 * Starts `GET path` on the agent at https `base` (the harness's admin certificate) and resolves at
 * the first data of a 200 (a followed journal stays open) or at the end of any other answer. The
 * request is pushed onto `open`, so the caller can end it or leave it running.
 */
export function followOnce(
  base: string,
  path: string,
  open: http.ClientRequest[],
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = https.get({
      host: url.hostname,
      port: url.port,
      path,
      agent: false,
      ...harnessPki().material(),
    });
    open.push(req);
    req.on("error", reject);
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
        if (res.statusCode === 200) resolve({ status: 200, headers: res.headers, body });
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
  });
}
