// Who may do what on the API (docs/security.md "Roles"). The TCP listener is TLS with client
// certificates from the cluster CA, so a request there always carries one; its role is the
// subject OU. The unix socket is root-only (file mode), so a request there is the machine's root.
//
//   admin    everything
//   reader   GET (and HEAD) only
//   machine  agent-to-agent calls: GET of a unit's status and journal (the proxy) and health

import type { IncomingMessage } from "node:http";
import { TLSSocket } from "node:tls";
import { ApiError } from "./errors.js";
import { resolveRoute } from "./routes.js";

export const ROLES = ["admin", "reader", "machine"] as const;
export type Role = (typeof ROLES)[number];

export type Principal =
  | { kind: "local" }
  /** Plain TCP, possible only where the handler is embedded in another server: may do nothing. */
  | { kind: "anonymous" }
  /** `role` undefined: the certificate's OU names no role, so it may do nothing. */
  | { kind: "certificate"; name: string; role: Role | undefined };

const READS = new Set(["GET", "HEAD"]);
const MACHINE_ROUTES = new Set(["health", "unitStatus", "unitJournal"]);

/** The role in a certificate subject's OU (one OU naming a known role), else undefined. */
export function roleOf(ou: string | string[] | undefined): Role | undefined {
  const values = ou === undefined ? [] : Array.isArray(ou) ? ou : [ou];
  const roles = values.filter((v): v is Role => (ROLES as readonly string[]).includes(v));
  // Two roles in one certificate is a mistake at issue time; granting either would be a guess.
  return roles.length === 1 ? roles[0] : undefined;
}

/** Throws a 403 naming the role when `principal` may not send `method` to `path`. */
export function checkAccess(principal: Principal, method: string, path: string): void {
  if (principal.kind === "local") return;
  if (principal.kind === "anonymous") throw new ApiError(403, "the API needs a client certificate (TLS)");
  const { role, name } = principal;
  switch (role) {
    case "admin":
      return;
    case "reader":
      if (READS.has(method)) return;
      throw new ApiError(
        403,
        `role reader (certificate ${name}) may only read (GET); ${method} needs role admin`,
      );
    case "machine":
      if (method === "GET" && MACHINE_ROUTES.has(routeKind(method, path))) return;
      throw new ApiError(
        403,
        `role machine (certificate ${name}) is for agent-to-agent calls (unit status and journal); ${method} ${path} needs role admin`,
      );
    case undefined:
      throw new ApiError(
        403,
        `certificate ${name} has no Flotilla role: its subject OU must be one of ${ROLES.join(", ")}`,
      );
  }
}

function routeKind(method: string, path: string): string {
  try {
    return resolveRoute(method, path).kind;
  } catch {
    return "";
  }
}

/** Who sent `req`: a TLS connection's verified client certificate, or the local socket. */
export function principalOf(req: IncomingMessage): Principal {
  const socket = req.socket;
  // A unix socket's peer has no address.
  if (!(socket instanceof TLSSocket))
    return socket.remoteAddress === undefined ? { kind: "local" } : { kind: "anonymous" };
  // The server rejects unverified and missing certificates during the handshake; this is a backstop.
  const cert = socket.authorized ? socket.getPeerCertificate() : undefined;
  if (!cert?.subject) return { kind: "certificate", name: "(none)", role: undefined };
  const cn = cert.subject.CN;
  return {
    kind: "certificate",
    name: (Array.isArray(cn) ? cn.join(",") : cn) || "(no CN)",
    role: roleOf(cert.subject.OU),
  };
}

/** The access check the server runs before routing; the body of a refused request is drained. */
export function authorize(req: IncomingMessage, path: string): void {
  try {
    checkAccess(principalOf(req), req.method ?? "", path);
  } catch (err) {
    req.resume();
    throw err;
  }
}
