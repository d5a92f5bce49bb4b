// TEMPORARY local stand-in for agent/unit/index.js while it is being written. Not committed.
import { createHash } from "node:crypto";
import path from "node:path";
import type { UnitOption } from "../agent/model.js";

export class UnitFileError extends Error {
  constructor(
    message: string,
    readonly source: string,
    readonly line?: number,
  ) {
    super(message);
  }
}

export function parseUnitFile(text: string, source: string): UnitOption[] {
  const out: UnitOption[] = [];
  let section: string | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = (lines[i] as string).trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    if (line.startsWith("[")) {
      section = line.slice(1, line.indexOf("]"));
      continue;
    }
    while (line.endsWith("\\") && i + 1 < lines.length) {
      line = `${line.slice(0, -1)} ${(lines[++i] as string).trim()}`;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || section === undefined) throw new UnitFileError(`bad line ${i + 1}`, source, i + 1);
    out.push({ section, name: line.slice(0, eq).trim(), value: line.slice(eq + 1).trim() });
  }
  return out;
}

export function serializeUnit(options: UnitOption[]): string {
  const order: string[] = [];
  const idx = new Map<string, UnitOption[]>();
  for (const o of options) {
    if (!idx.has(o.section)) {
      idx.set(o.section, []);
      order.push(o.section);
    }
    idx.get(o.section)?.push(o);
  }
  return order
    .map((s) => `[${s}]\n${(idx.get(s) ?? []).map((o) => `${o.name}=${o.value}\n`).join("")}`)
    .join("\n");
}

export function unitHash(options: UnitOption[]): string {
  return createHash("sha1").update(serializeUnit(options)).digest("hex");
}

export function validateUnitName(name: string): string | undefined {
  if (!name.includes(".")) return `unit name "${name}" must contain a '.'`;
  return undefined;
}

const SUFFIX = /\.(service|socket|timer|path|device|mount|automount)$/;
export function mangleUnitName(arg: string): string {
  const base = path.posix.basename(arg);
  return SUFFIX.test(base) ? base : `${base}.service`;
}

export function isTemplate(name: string): boolean {
  return /^[^@]+@\.[a-z]+$/.test(name);
}

export function templateOf(name: string): string | undefined {
  const m = /^([^@]+)@[^@.]+(\.[a-z]+)$/.exec(name);
  return m ? `${m[1]}@${m[2]}` : undefined;
}
