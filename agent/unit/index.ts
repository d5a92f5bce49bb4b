// The single source of truth for unit files: parsing, serialization and hashing, names, and the
// [X-Fleet] scheduling requirements, all compatible with fleet v1.0.

export {
  controlCharacterIn,
  describeControlCharacter,
  parseUnitFile,
  serializeUnit,
  UNIT_MAX_BYTES,
  UNIT_MAX_OPTIONS,
  UnitFileError,
  unitHash,
} from "./file.js";
export { globMatcher, isValidGlob, matchGlob } from "./glob.js";
export { isTemplate, mangleUnitName, templateOf, unitNameParts, validateUnitName } from "./names.js";
export { parseRequirements, validateRequirements } from "./xfleet.js";
