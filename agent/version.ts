// The version is package.json's; esbuild inlines it into the bundles.
import pkg from "../package.json" with { type: "json" };

export const AGENT_VERSION: string = pkg.version;
