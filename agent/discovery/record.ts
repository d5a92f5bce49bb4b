// The service record: what an agent publishes in etcd while a unit is active, and what every
// agent's DNS answers from. Names are DNS labels so `<service>.service.flotilla` always works.

import { isIPv4 } from "node:net";
import { unitNameParts } from "../unit/names.js";

export type PortProtocol = "tcp" | "udp";

export interface ServicePort {
  /** Port inside the container, when the unit runs one. */
  container?: number;
  /** Port on `ip` where the service answers; the SRV port. */
  host: number;
  protocol: PortProtocol;
}

export interface ServiceRecord {
  /** Lowercase DNS label. */
  service: string;
  machineID: string;
  unit: string;
  /** IPv4 address where the host ports are reachable from other machines. */
  ip: string;
  ports: ServicePort[];
}

const LABEL_MAX = 63;
const LABEL = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/**
 * The discovery name of a unit: `[X-Fleet] ServiceName=` when set, otherwise the unit's prefix
 * (`web@3.service` → `web`). Lowercased because DNS matching is case-insensitive and the name is
 * also an etcd key; check it with `validateServiceName` before publishing.
 */
export function serviceNameFor(unitName: string, serviceName?: string): string {
  return (serviceName ?? unitNameParts(unitName).prefix).toLowerCase();
}

/**
 * The problem with a service name, or undefined when it is one RFC 1123 host label (letters,
 * digits, inner hyphens, at most 63 bytes). No underscore: `_name._tcp` is the SRV form.
 */
export function validateServiceName(name: string): string | undefined {
  if (name === "") return "service name cannot be empty";
  if (name.length > LABEL_MAX) return `service name ${JSON.stringify(name)} exceeds ${LABEL_MAX} characters`;
  if (!LABEL.test(name)) {
    return `service name ${JSON.stringify(name)} must be lowercase letters, digits and inner hyphens (a DNS label)`;
  }
  return undefined;
}

/** The record's etcd value. */
export function encodeServiceRecord(record: ServiceRecord): string {
  return JSON.stringify(record);
}

/** Parses and checks an etcd value; undefined when it is not a usable record. */
export function parseServiceRecord(value: string): ServiceRecord | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r.service !== "string" || validateServiceName(r.service) !== undefined) return undefined;
  if (typeof r.machineID !== "string" || r.machineID === "") return undefined;
  if (typeof r.unit !== "string" || r.unit === "") return undefined;
  if (typeof r.ip !== "string" || !isIPv4(r.ip)) return undefined;
  if (!Array.isArray(r.ports)) return undefined;
  const ports: ServicePort[] = [];
  for (const p of r.ports as unknown[]) {
    const port = parsePort(p);
    if (!port) return undefined;
    ports.push(port);
  }
  return { service: r.service, machineID: r.machineID, unit: r.unit, ip: r.ip, ports };
}

function parsePort(raw: unknown): ServicePort | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const p = raw as Record<string, unknown>;
  if (!isPort(p.host) || (p.protocol !== "tcp" && p.protocol !== "udp")) return undefined;
  if (p.container === undefined) return { host: p.host, protocol: p.protocol };
  if (!isPort(p.container)) return undefined;
  return { container: p.container, host: p.host, protocol: p.protocol };
}

function isPort(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535;
}
