// A unit with a [Container] section, rendered into the service systemd runs: `podman run` in the
// unit's own cgroup (--cgroups=split), the unit active only once the container runs (Type=notify,
// conmon reports it), and no container left once the unit stops (--rm, plus a forced removal
// after stop for when conmon itself died). Pure: the agent writes the result for systemd.

import { isIP } from "node:net";
import type { UnitOption } from "../model.js";
import { CONTAINER_SECTION, type ContainerSpec, hasContainerSection, parseContainerSection } from "./spec.js";
import { execLine } from "./words.js";

const PODMAN = "/usr/bin/podman";

/** Seconds `podman stop` waits before SIGKILL, Docker's default; well inside systemd's 90 s stop timeout. */
export const STOP_TIMEOUT_SECONDS = 10;

export interface RenderContext {
  /** Auth file (containers-auth.json(5)) for pulls from registries that need credentials. */
  registryAuthFile?: string;
  /** Resolver for bridge-networked containers (the agent's DNS). */
  dnsServer?: string;
  /**
   * The machine's own resolvers, listed after `dnsServer` so that names outside the flotilla zone
   * (which the agent refuses) still resolve; see `upstreamNameservers`.
   */
  upstreamDnsServers?: readonly string[];
}

/** The search domain bridge containers get with the agent's DNS: `web` finds `web.service.flotilla`. */
export const CONTAINER_DNS_SEARCH = "service.flotilla";

/**
 * The nameservers of a resolv.conf(5) text that a bridge container can reach: loopback addresses
 * (a local stub resolver) are dropped, since they would be the container's own loopback, and so
 * are zoned link-local ones and those in `exclude`.
 */
export function upstreamNameservers(resolvConf: string, exclude: readonly string[] = []): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const addr = m?.[1];
    // A zoned (link-local) address names an interface of the machine, not of the container.
    if (addr === undefined || !isIP(addr) || addr.includes("%")) continue;
    if (addr.startsWith("127.") || addr === "::1" || exclude.includes(addr) || out.includes(addr)) continue;
    out.push(addr);
  }
  return out;
}

export class ContainerUnitError extends Error {
  override readonly name = "ContainerUnitError";

  constructor(readonly errors: string[]) {
    super(errors.join("\n"));
  }
}

/**
 * The unit systemd runs for unit `name`. Without a [Container] section the options come back as
 * they are (a plain `ExecStart=podman run ...` unit runs as on CoreOS). With one, the section is
 * replaced by [Service] settings and commands; the user's [Service] settings are kept, and those the
 * agent would otherwise set (Type, NotifyAccess, KillMode, Delegate, SyslogIdentifier) are not
 * added when the user set them. Throws a ContainerUnitError when validateContainerSection reports
 * problems.
 */
export function renderContainerUnit(
  name: string,
  options: UnitOption[],
  ctx: RenderContext,
): { options: UnitOption[] } {
  if (!hasContainerSection(options)) return { options: [...options] };
  const { spec, errors } = parseContainerSection(name, options);
  if (spec === undefined) throw new ContainerUnitError(errors);

  const userService = new Set(options.filter((o) => o.section === "Service").map((o) => o.name));
  const service: [string, string][] = [];
  for (const [key, value] of [
    ["Type", "notify"],
    ["NotifyAccess", "all"],
    // SIGTERM to conmon only, so that it can stop the container itself; the rest after the stop timeout.
    ["KillMode", "mixed"],
    // podman creates the container's cgroup below the unit's own.
    ["Delegate", "yes"],
    // Journal lines are tagged with the unit, not "podman" or "conmon".
    ["SyslogIdentifier", "%N"],
  ] as const) {
    if (!userService.has(key)) service.push([key, value]);
  }
  // What a container stopped by `podman stop` exits with (SIGTERM): a stop is not a failure.
  service.push(["SuccessExitStatus", "143"]);
  service.push(["Environment", "PODMAN_SYSTEMD_UNIT=%n"]);
  service.push(["ExecStart", execLine(runCommand(spec, ctx))]);
  service.push([
    "ExecStop",
    execLine([PODMAN, "stop", "--ignore", `--time=${STOP_TIMEOUT_SECONDS}`, spec.containerName]),
  ]);
  // Also runs when conmon was killed and ExecStop was skipped; "-": nothing to remove is no failure.
  service.push([
    "ExecStopPost",
    `-${execLine([PODMAN, "rm", "--force", "--ignore", "--volumes", spec.containerName])}`,
  ]);
  const generated = service.map(([key, value]) => ({ section: "Service", name: key, value }));

  // After the user's [Service] options, so that a user's empty `ExecStopPost=` (which empties the
  // list) cannot drop the removal; in place of [Container] when the unit has no [Service] section.
  const lastService = options.map((o) => o.section).lastIndexOf("Service");
  const anchor =
    lastService === -1 ? options.findIndex((o) => o.section === CONTAINER_SECTION) - 1 : lastService;
  const rendered: UnitOption[] = [];
  if (anchor === -1) rendered.push(...generated);
  options.forEach((option, index) => {
    if (option.section !== CONTAINER_SECTION) rendered.push({ ...option });
    if (index === anchor) rendered.push(...generated);
  });
  return { options: rendered };
}

function runCommand(spec: ContainerSpec, ctx: RenderContext): string[] {
  const argv = [
    PODMAN,
    "run",
    "--rm",
    "--cgroups=split",
    "--sdnotify=conmon",
    "--replace",
    "--name",
    spec.containerName,
    // conmon becomes the unit's main process; podman itself need not stay.
    "--detach",
    // The container's stdout and stderr are the unit's: its output is in the unit's journal.
    "--log-driver=passthrough",
    // In the run itself rather than an ExecStartPre: one podman process less per start (0.3-0.5 s
    // measured), and a failed pull fails the start all the same, with podman's reason in the journal.
    `--pull=${spec.pull}`,
  ];
  if (spec.pull !== "never" && ctx.registryAuthFile !== undefined)
    argv.push(`--authfile=${ctx.registryAuthFile}`);
  const { network } = spec;
  argv.push(`--network=${network.mode === "container" ? `container:${network.container}` : network.mode}`);
  if (network.mode === "bridge" && ctx.dnsServer !== undefined) {
    argv.push(`--dns=${ctx.dnsServer}`);
    for (const server of ctx.upstreamDnsServers ?? []) argv.push(`--dns=${server}`);
    argv.push(`--dns-search=${CONTAINER_DNS_SEARCH}`);
  }
  for (const port of spec.publishPorts) argv.push("--publish", port.spec);
  for (const volume of spec.volumes) argv.push("--volume", volume);
  // podman applies --env-file first, so that -e overrides it, as in Docker.
  for (const file of spec.environmentFiles) argv.push("--env-file", file);
  for (const pair of spec.environment) argv.push("-e", pair);
  if (spec.user !== undefined) argv.push("--user", spec.user);
  if (spec.workingDir !== undefined) argv.push("--workdir", spec.workingDir);
  argv.push(...spec.podmanArgs, spec.image, ...(spec.exec ?? []));
  return argv;
}
