// Which service records a machine should publish: one per active unit, named by its
// ServiceName= (or its prefix), with the host ports its container publishes. Pure.

import { parseContainerSection } from "../containers/index.js";
import type { UnitRecord } from "../model.js";
import { parseRequirements } from "../unit/index.js";
import { type ServicePort, type ServiceRecord, serviceNameFor, validateServiceName } from "./record.js";

export interface PublishInput {
  unit: UnitRecord;
  activeState: string;
}

export interface PublishPlan {
  records: ServiceRecord[];
  /** Units that are active but cannot be published, with why (logged, never fatal). */
  problems: { unit: string; problem: string }[];
}

export function servicesToPublish(machineID: string, ip: string, units: PublishInput[]): PublishPlan {
  const plan: PublishPlan = { records: [], problems: [] };
  for (const { unit, activeState } of units) {
    if (activeState !== "active") continue;
    const { requirements } = parseRequirements(unit.name, unit.options);
    const service = serviceNameFor(unit.name, requirements.serviceName);
    const invalid = validateServiceName(service);
    if (invalid) {
      plan.problems.push({ unit: unit.name, problem: invalid });
      continue;
    }
    plan.records.push({ service, machineID, unit: unit.name, ip, ports: publishedPorts(unit) });
  }
  return plan;
}

/** Host ports a container unit publishes; ranges expand, unpinned host ports are unknown here. */
function publishedPorts(unit: UnitRecord): ServicePort[] {
  const spec = parseContainerSection(unit.name, unit.options).spec;
  const ports: ServicePort[] = [];
  for (const p of spec?.publishPorts ?? []) {
    if (!p.hostPort) continue;
    for (let i = 0; i <= p.hostPort.end - p.hostPort.start; i++) {
      ports.push({ host: p.hostPort.start + i, container: p.containerPort.start + i, protocol: p.protocol });
    }
  }
  return ports;
}
