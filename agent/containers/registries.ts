// The podman configuration the agent keeps from its own settings: registries served over plain
// HTTP (or with a certificate podman does not trust) listed as insecure, in a registries.conf.d
// drop-in that only the agent writes. Pure; main.ts writes the file.

/** The drop-in the agent owns; an operator's own files in the directory are left alone. */
export const INSECURE_REGISTRIES_FILE = "/etc/containers/registries.conf.d/50-flotilla-insecure.conf";

/** `host`, `host:port`, `[v6]:port`, optionally `/namespace`: what registries.conf(5) takes as a location. */
const LOCATION =
  /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?(\/[A-Za-z0-9._/-]*)?$/;

/** The problem with a registry location, or undefined when it is usable. */
export function validateRegistryLocation(location: string): string | undefined {
  if (!LOCATION.test(location)) {
    return `${JSON.stringify(location)} is not a registry location (HOST[:PORT][/NAMESPACE], no scheme)`;
  }
  const port = /:(\d+)(?:\/|$)/.exec(location.replace(/^\[[^\]]*\]/, ""))?.[1];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
    return `${JSON.stringify(location)}: port ${port} is out of range`;
  }
  return undefined;
}

/**
 * The drop-in's content for these registries (registries.conf(5), version 2), or undefined when
 * there are none and the file should not exist.
 */
export function insecureRegistriesConf(locations: readonly string[]): string | undefined {
  const unique = [...new Set(locations)];
  if (unique.length === 0) return undefined;
  const blocks = unique.map((l) => `[[registry]]\nlocation = ${JSON.stringify(l)}\ninsecure = true\n`);
  return `# Written by flotilla-agent from its insecure-registries setting; replaced at every start.\n\n${blocks.join("\n")}`;
}
