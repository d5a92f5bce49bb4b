// The API's check of a unit's [Container] section: a unit that cannot be rendered is refused
// (400) before anything is stored or started.

import type { UnitOption } from "../model.js";
import { parseContainerSection } from "./spec.js";

/**
 * Every problem with the [Container] section of unit `name` (and with the [Service] settings that
 * conflict with it), each naming the unit and the key; [] when the unit has none or it is valid.
 */
export function validateContainerSection(name: string, options: readonly UnitOption[]): string[] {
  return parseContainerSection(name, options).errors;
}
