// Containers as systemd units: the [Container] section (Podman Quadlet's keys), its validation for
// the API, and its rendering into the service the agent hands to systemd.

export {
  INSECURE_REGISTRIES_FILE,
  insecureRegistriesConf,
  validateRegistryLocation,
} from "./registries.js";
export {
  CONTAINER_DNS_SEARCH,
  ContainerUnitError,
  type RenderContext,
  renderContainerUnit,
  STOP_TIMEOUT_SECONDS,
  upstreamNameservers,
} from "./render.js";
export {
  CONTAINER_KEYS,
  type ContainerSpec,
  hasContainerSection,
  type NetworkMode,
  type PortMapping,
  type PortRange,
  type PullPolicy,
  parseContainerSection,
} from "./spec.js";
export { validateContainerSection } from "./validate.js";
export { execLine, splitWords } from "./words.js";
