// The container fence (docs/security.md, "Container fence"): an nftables table that keeps
// containers on this machine's bridges away from the control plane (the agent's API and etcd),
// while DNS and everything else still work. Pure: the agent's settings in, the ruleset text out.

import { isIPv4, isIPv6 } from "node:net";

export const FENCE_TABLE = "flotilla";

/**
 * Host-side interfaces that bridged containers' traffic arrives on: netavark's bridges (podman0,
 * podman1, … one per podman network) and CNI's (cni-podman0). Host-network containers share the
 * machine's own interfaces and cannot be told apart: they are as trusted as the host.
 */
export const CONTAINER_INTERFACES = ["podman*", "cni-*"];

/** etcd's registered client and peer ports: fenced on the machine itself even when unused. */
export const ETCD_PORTS = [2379, 2380];

export interface FenceSpec {
  /** TCP ports of the agent's API (on this machine and, being the cluster's, on any other). */
  apiPorts: number[];
  /** Every etcd endpoint, resolved to addresses. */
  etcd: { address: string; port: number }[];
}

export interface FenceTarget {
  apiPorts: number[];
  /** Endpoint hosts as configured: an address, or a name still to resolve. */
  etcd: { host: string; port: number }[];
}

/** What to fence, from the agent's `api-listen` and `etcd-endpoints`. */
export function fenceTarget(apiListen: string, etcdEndpoints: string[]): FenceTarget {
  const apiPorts = apiListen ? [Number(apiListen.slice(apiListen.lastIndexOf(":") + 1))] : [];
  const etcd = etcdEndpoints.map((e) => {
    const url = new URL(e);
    const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
    // URL keeps IPv6 hosts in brackets.
    return { host: url.hostname.replace(/^\[(.*)\]$/, "$1"), port };
  });
  return { apiPorts, etcd };
}

/**
 * The table, as one `nft -f` transaction that replaces any previous version atomically: created
 * empty if missing, deleted, created whole. Its own table and base chains, so netavark's iptables
 * rules (and podman creating or removing networks) never touch it, and it never touches theirs: a
 * packet passes every table's chains on a hook, and a reject in any of them is final.
 */
export function fenceRuleset(spec: FenceSpec): string {
  const v4 = spec.etcd.filter((e) => isIPv4(e.address));
  const v6 = spec.etcd.filter((e) => isIPv6(e.address));
  const bad = spec.etcd.find((e) => !isIPv4(e.address) && !isIPv6(e.address));
  if (bad)
    throw new Error(`fence: etcd endpoint address ${JSON.stringify(bad.address)} is not an IP address`);
  for (const p of [...spec.apiPorts, ...spec.etcd.map((e) => e.port)])
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`fence: port ${p} is not a TCP port`);
  const localPorts = [...new Set([...spec.apiPorts, ...ETCD_PORTS, ...spec.etcd.map((e) => e.port)])];
  const elements = (xs: string[]) => (xs.length ? `\n    elements = { ${[...new Set(xs)].join(", ")} }` : "");
  const jumps = (chain: string) =>
    CONTAINER_INTERFACES.map((i) => `    iifname "${i}" jump ${chain}`).join("\n");
  return `table inet ${FENCE_TABLE}
delete table inet ${FENCE_TABLE}
table inet ${FENCE_TABLE} {
  set local_ports {
    type inet_service${elements(localPorts.map(String))}
  }
  set api_ports {
    type inet_service${elements(spec.apiPorts.map(String))}
  }
  set etcd4 {
    type ipv4_addr . inet_service${elements(v4.map((e) => `${e.address} . ${e.port}`))}
  }
  set etcd6 {
    type ipv6_addr . inet_service${elements(v6.map((e) => `${e.address} . ${e.port}`))}
  }
  chain to_machine {
    tcp dport @local_ports reject with tcp reset
  }
  chain through_machine {
    tcp dport @api_ports reject with tcp reset
    ip daddr . tcp dport @etcd4 reject with tcp reset
    ip6 daddr . tcp dport @etcd6 reject with tcp reset
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
${jumps("to_machine")}
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
${jumps("through_machine")}
  }
}
`;
}
