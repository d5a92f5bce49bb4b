import pkg from "../package.json" with { type: "json" };

/**
 * fleetctl reports the fleet release it is compatible with, so scripts comparing versions keep
 * working; Flotilla's own version rides along as semver build metadata (ignored in comparisons).
 */
export const VERSION = `1.0.0+flotilla.${pkg.version}`;
