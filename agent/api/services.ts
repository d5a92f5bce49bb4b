// GET /flotilla/v1/services[?service=NAME]: the service records the agent's watch-fed cache holds
// (docs/discovery.md), the same data its DNS answers from, so no etcd read per request.

import type { ServiceRecord } from "../discovery/record.js";
import { validateServiceName } from "../discovery/record.js";
import { ApiError } from "./errors.js";
import type { WireService, WireServiceList } from "./schema.js";

/** What the endpoint reads: the agent's ServiceCache. */
export interface ServiceSource {
  /** Every record, sorted by service, machine and unit. */
  all(): readonly ServiceRecord[];
  /** The records of one (lowercase) service, sorted by machine and unit. */
  service(name: string): readonly ServiceRecord[];
}

/** The answer to a services request; `?service=` (case-insensitive, a DNS label) filters. Throws 400. */
export function listServices(source: ServiceSource, query: URLSearchParams): WireServiceList {
  const names = query.getAll("service");
  if (names.length > 1) throw new ApiError(400, "service may be given once");
  const name = names[0];
  if (name === undefined || name === "") return { services: source.all().map(toWire) };
  const lower = name.toLowerCase();
  const problem = validateServiceName(lower);
  if (problem !== undefined) throw new ApiError(400, `invalid service: ${problem}`);
  return { services: source.service(lower).map(toWire) };
}

/** A copy in a fixed key order, ports as they are (container port only when known). */
function toWire(r: ServiceRecord): WireService {
  return {
    service: r.service,
    machineID: r.machineID,
    unit: r.unit,
    ip: r.ip,
    ports: r.ports.map((p) => ({
      ...(p.container !== undefined ? { container: p.container } : {}),
      host: p.host,
      protocol: p.protocol,
    })),
  };
}
