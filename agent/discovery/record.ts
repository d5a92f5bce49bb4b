// The service record: what an agent publishes in etcd while a unit is active, and what every
// agent's DNS answers from. Names are DNS labels so `<service>.service.flotilla` always works.

import { isIPv4 } from "node:net";
import { describeValue, parseJSONObject, stringField } from "../registry/quarantine.js";
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
  try {
    return checkServiceRecord(value);
  } catch {
    return undefined;
  }
}

/** Parses and checks an etcd value; throws saying what is wrong (the quarantine's reason). */
export function checkServiceRecord(value: string): ServiceRecord {
  const r = parseJSONObject(value);
  const service = stringField(r, "service");
  const problem = validateServiceName(service);
  if (problem !== undefined) throw new Error(`field service: ${problem}`);
  const machineID = stringField(r, "machineID");
  if (machineID === "") throw new Error("field machineID: empty");
  const unit = stringField(r, "unit");
  if (unit === "") throw new Error("field unit: empty");
  const ip = stringField(r, "ip");
  if (!isIPv4(ip)) throw new Error(`field ip: ${JSON.stringify(ip)} is not an IPv4 address`);
  if (!Array.isArray(r.ports)) throw new Error(`field ports: want an array, got ${describeValue(r.ports)}`);
  const ports = (r.ports as unknown[]).map((p, i) => {
    const port = parsePort(p);
    if (!port)
      throw new Error(`field ports[${i}]: want {host, protocol: tcp|udp, container?} with ports 1-65535`);
    return port;
  });
  return { service, machineID, unit, ip, ports };
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
