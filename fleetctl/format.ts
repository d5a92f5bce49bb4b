// Cell and table formatting for list-units, list-unit-files and list-machines
// (as fleet v1.0 prints them). Pure: callers fetch the data, these functions only shape it.

import type {
  WireMachine,
  WireService,
  WireServicePort,
  WireUnit,
  WireUnitOption,
  WireUnitState,
  WireUpdateGroup,
  WireUpdateMachine,
} from "../agent/api/schema.js";
import { parseRequirements, unitHash } from "../agent/unit/index.js";
import type { BadVersion, UpdateStatus } from "../agent/update/records.js";
import type { RebootWindow } from "../agent/update/window.js";
import { tabwrite } from "./tabwriter.js";

/** `113f16a7...`, or the full ID with --full (fleet's machineIDLegend). */
function machineIDLegend(id: string, full: boolean): string {
  return full ? id : `${id.slice(0, 8)}...`;
}

/** Machine legend plus `/<publicIP>` when the IP is known (fleet's machineFullLegend). */
export function machineFullLegend(machine: Pick<WireMachine, "id" | "primaryIP">, full: boolean): string {
  const legend = machineIDLegend(machine.id, full);
  return machine.primaryIP ? `${legend}/${machine.primaryIP}` : legend;
}

/** `k=v` pairs sorted by key, joined by `,`. */
export function formatMetadata(metadata: Record<string, string>): string {
  return Object.keys(metadata)
    .sort(compareStrings)
    .map((k) => `${k}=${metadata[k]}`)
    .join(",");
}

/** Whether `[X-Fleet] Global=` makes this a global unit. */
export function isGlobalUnit(unit: WireUnit): boolean {
  return parseRequirements(unit.name, unit.options ?? []).requirements.global;
}

/** The last `[Unit] Description=` (go-systemd UnitFile.Description). */
function unitDescription(options: readonly WireUnitOption[] | undefined): string {
  let desc = "";
  for (const o of options ?? []) if (o.section === "Unit" && o.name === "Description") desc = o.value;
  return desc;
}

/** Byte-wise order, as Go's sort.Strings and etcd's sorted listings. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Flotilla's `reason` may hold any text; keep it on one table line. */
function oneLine(text: string | undefined): string {
  const t = (text ?? "").replace(/\s+/g, " ").trim();
  return t === "" ? "-" : t;
}

export interface FieldContext {
  full: boolean;
  machine(id: string): WireMachine | undefined;
  /** WireUnit.reason by unit name (list-units only; list-unit-files reads the unit itself). */
  reason(name: string): string | undefined;
  /** A machine's update status (list-machines' update fields only). */
  update?(id: string): UpdateStatus | undefined;
}

type Field<T> = (row: T, ctx: FieldContext) => string;

function machineField(id: string | undefined, ctx: FieldContext): string {
  if (!id) return "-";
  return machineFullLegend(ctx.machine(id) ?? { id }, ctx.full);
}

function dash(value: string | undefined): string {
  return value ? value : "-";
}

export const LIST_UNITS_FIELDS: Record<string, Field<WireUnitState>> = {
  unit: (us) => us.name,
  load: (us) => dash(us.systemdLoadState),
  active: (us) => dash(us.systemdActiveState),
  sub: (us) => dash(us.systemdSubState),
  machine: (us, ctx) => machineField(us.machineID, ctx),
  hash: (us, ctx) => (us.hash ? (ctx.full ? us.hash : us.hash.slice(0, 7)) : "-"),
  reason: (us, ctx) => oneLine(ctx.reason(us.name)),
};
export const DEFAULT_LIST_UNITS_FIELDS = "unit,machine,active,sub";

function targetField(u: WireUnit, ctx: FieldContext): string {
  return isGlobalUnit(u) ? "global" : machineField(u.machineID, ctx);
}

export const LIST_UNIT_FILES_FIELDS: Record<string, Field<WireUnit>> = {
  unit: (u) => u.name,
  global: (u) => String(isGlobalUnit(u)),
  dstate: (u) => dash(u.desiredState),
  target: targetField,
  tmachine: targetField,
  state: (u) => (isGlobalUnit(u) ? "-" : dash(u.currentState)),
  hash: (u, ctx) => {
    const hash = unitHash(u.options ?? []);
    return ctx.full ? hash : hash.slice(0, 7);
  },
  desc: (u) => dash(unitDescription(u.options)),
  reason: (u) => oneLine(u.reason),
};
export const DEFAULT_LIST_UNIT_FILES_FIELDS = "unit,hash,dstate,state,target";

/** The update status cells shared by list-machines and update-status; "-" when unknown. */
const STATUS_CELLS: Record<"os" | "slot" | "state" | "checked" | "rollback", (s: UpdateStatus) => string> = {
  os: (s) => dash(s.version),
  slot: (s) => dash(s.slot),
  state: formatUpdateState,
  checked: (s) => formatTime(s.lastCheck),
  rollback: (s) => (s.lastRollback ? `${s.lastRollback.version}: ${oneLine(s.lastRollback.reason)}` : "-"),
};

/** `downloading 42%` while bytes are moving, else the state with its detail (one line). */
export function formatUpdateState(s: UpdateStatus): string {
  const p = s.progress;
  if (p && p.total > 0 && p.bytes < p.total) return `${s.state} ${Math.floor((p.bytes / p.total) * 100)}%`;
  return s.detail ? `${s.state} (${oneLine(s.detail)})` : s.state;
}

/** RFC 3339 in UTC to the second: the same on every client, and sortable. */
export function formatTime(iso: string | undefined): string {
  if (!iso) return "-";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 19)}Z`;
}

function statusField(cell: keyof typeof STATUS_CELLS): Field<WireMachine> {
  return (m, ctx) => {
    const s = ctx.update?.(m.id);
    return s ? STATUS_CELLS[cell](s) : "-";
  };
}

export const LIST_MACHINES_FIELDS: Record<string, Field<WireMachine>> = {
  machine: (m, ctx) => machineIDLegend(m.id, ctx.full),
  ip: (m) => dash(m.primaryIP),
  metadata: (m) => (m.metadata && Object.keys(m.metadata).length > 0 ? formatMetadata(m.metadata) : "-"),
  os: statusField("os"),
  slot: statusField("slot"),
  update: statusField("state"),
  checked: statusField("checked"),
  rollback: statusField("rollback"),
};
export const DEFAULT_LIST_MACHINES_FIELDS = "machine,ip,metadata";
/** list-machines fields that need GET /flotilla/v1/updates (never the default ones). */
export const UPDATE_MACHINE_FIELDS: readonly string[] = ["os", "slot", "update", "checked", "rollback"];

function updateCell(cell: keyof typeof STATUS_CELLS): Field<WireUpdateMachine> {
  return (m) => (m.status ? STATUS_CELLS[cell](m.status) : "-");
}

export const UPDATE_STATUS_FIELDS: Record<string, Field<WireUpdateMachine>> = {
  machine: (m, ctx) => machineIDLegend(m.machineID, ctx.full),
  ip: (m) => dash(m.primaryIP),
  os: updateCell("os"),
  slot: updateCell("slot"),
  state: updateCell("state"),
  checked: updateCell("checked"),
  rollback: updateCell("rollback"),
};
export const UPDATE_STATUS_COLUMNS = ["machine", "ip", "os", "slot", "state", "checked", "rollback"];

/** `sat,sun 02:00+120m Europe/Berlin`. */
export function formatWindow(w: RebootWindow | undefined): string {
  return w ? `${w.days.join(",")} ${w.start}+${w.lengthMinutes}m ${w.timeZone}` : "-";
}

export const UPDATE_GROUP_FIELDS: Record<string, Field<WireUpdateGroup>> = {
  group: (g) => g.name,
  strategy: (g) => g.strategy,
  slots: (g) => `${g.holders.length}/${g.maxHolders}`,
  paused: (g) => String(g.paused),
  window: (g) => formatWindow(g.window),
  holders: (g) => (g.holders.length > 0 ? g.holders.map((h) => h.holder).join(",") : "-"),
};
export const UPDATE_GROUP_COLUMNS = ["group", "strategy", "slots", "paused", "window", "holders"];

export const BAD_VERSION_FIELDS: Record<string, Field<BadVersion>> = {
  "bad version": (b) => b.version,
  machine: (b, ctx) => machineIDLegend(b.machineId, ctx.full),
  at: (b) => formatTime(b.at),
  reason: (b) => oneLine(b.reason),
};
export const BAD_VERSION_COLUMNS = ["bad version", "machine", "at", "reason"];

/** Docker's notation: `8080->80/tcp`, or `53/udp` when the container port is unknown. */
export function formatPorts(ports: readonly WireServicePort[]): string {
  if (ports.length === 0) return "-";
  return ports
    .map((p) => `${p.host}${p.container !== undefined ? `->${p.container}` : ""}/${p.protocol}`)
    .join(",");
}

export const LIST_SERVICES_FIELDS: Record<string, Field<WireService>> = {
  service: (s) => s.service,
  machine: (s, ctx) => machineIDLegend(s.machineID, ctx.full),
  unit: (s) => s.unit,
  ip: (s) => dash(s.ip),
  ports: (s) => formatPorts(s.ports),
};
export const DEFAULT_LIST_SERVICES_FIELDS = "service,machine,unit,ip,ports";

/** Valid keys for the --fields help text, sorted as fleet prints them. */
export function fieldKeys(fields: Record<string, unknown>): string {
  return Object.keys(fields).sort(compareStrings).join(",");
}

/** Splits --fields; returns fleet's error message for an empty or unknown key. */
export function parseFields(spec: string, fields: Record<string, unknown>): string[] | { error: string } {
  if (spec === "") return { error: "Must define output format" };
  const cols = spec.split(",");
  for (const c of cols) {
    // JSON quoting equals Go's %q for the printable ASCII a field list holds.
    if (!Object.hasOwn(fields, c)) return { error: `Invalid key in output format: ${JSON.stringify(c)}` };
  }
  return cols;
}

/** The table as fleetctl prints it: upper-cased header unless --no-legend, TAB-aligned. */
export function renderTable<T>(
  cols: string[],
  rows: readonly T[],
  fields: Record<string, Field<T>>,
  ctx: FieldContext,
  noLegend: boolean,
): string {
  let text = noLegend ? "" : `${cols.join("\t").toUpperCase()}\n`;
  for (const row of rows) {
    text += `${cols.map((c) => (fields[c] as Field<T>)(row, ctx)).join("\t")}\n`;
  }
  return tabwrite(text);
}
