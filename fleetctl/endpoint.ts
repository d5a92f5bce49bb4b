// Parsing of --endpoint, following fleetctl's getHTTPClient.

export const DEFAULT_ENDPOINT = "unix:///var/run/fleet.sock";

/** Where requests go: a unix socket (HTTP host `domain-sock`) or a TCP host. */
export type Endpoint =
  | { kind: "unix"; socketPath: string; display: string }
  | { kind: "tcp"; host: string; port: number; basePath: string; display: string; tls?: true };

export interface ParsedEndpoint {
  endpoint: Endpoint;
  /** Set when more than one comma-separated endpoint was given. */
  warning?: string;
}

/** Throws an Error whose message is what fleetctl prints after "Unable to initialize client: ". */
export function parseEndpoint(value: string): ParsedEndpoint {
  const all = value.split(",");
  const first = all[0] ?? "";
  const warning =
    all.length > 1 ? `multiple endpoints provided but only the first (${first}) is used` : undefined;
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.*)$/s.exec(first);
  if (!m) {
    // Go's url.Parse rejects "host:port" without a scheme; a bare host parses with no scheme.
    const firstSegment = first.split("/")[0] ?? "";
    if (firstSegment.includes(":")) {
      throw new Error(`parse ${first}: first path segment in URL cannot contain colon`);
    }
    throw new Error("URL scheme undefined");
  }
  const scheme = (m[1] as string).toLowerCase();
  const rest = m[2] as string;
  if (scheme === "unix" || scheme === "file") {
    const { host, path } = splitAuthority(rest);
    if (host.length > 0) throw new Error(`unable to connect to host "${host}" with scheme "${scheme}"`);
    if (path.length === 0) throw new Error(`no socket path in endpoint "${first}"`);
    return { endpoint: { kind: "unix", socketPath: decodeURIComponent(path), display: first }, warning };
  }
  if (scheme === "http" || scheme === "https") {
    let url: URL;
    try {
      url = new URL(first);
    } catch {
      throw new Error(`parse ${first}: invalid URL`);
    }
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    if (host.length === 0) throw new Error(`no host in endpoint "${first}"`);
    return {
      endpoint: {
        kind: "tcp",
        host,
        port: url.port === "" ? (scheme === "https" ? 443 : 80) : Number(url.port),
        basePath: url.pathname.replace(/\/+$/, ""),
        display: first,
        ...(scheme === "https" ? { tls: true as const } : {}),
      },
      warning,
    };
  }
  throw new Error(`unsupported endpoint scheme "${scheme}" (use unix://, file://, https:// or http://)`);
}

function splitAuthority(rest: string): { host: string; path: string } {
  if (!rest.startsWith("//")) return { host: "", path: rest };
  const afterSlashes = rest.slice(2);
  const slash = afterSlashes.indexOf("/");
  if (slash < 0) return { host: afterSlashes, path: "" };
  return { host: afterSlashes.slice(0, slash), path: afterSlashes.slice(slash) };
}
