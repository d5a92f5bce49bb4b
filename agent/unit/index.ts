// The single source of truth for unit files: parsing, serialization and hashing, names, and the
// [X-Fleet] scheduling requirements, all compatible with fleet v1.0.

export { parseUnitFile, serializeUnit, UnitFileError, unitHash } from "./file.js";
export { isValidGlob, matchGlob } from "./glob.js";
export { isTemplate, mangleUnitName, templateOf, unitNameParts, validateUnitName } from "./names.js";
export { parseRequirements, validateRequirements } from "./xfleet.js";
