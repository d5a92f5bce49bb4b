// Flotilla's extension routes (/flotilla/v1): which machine answers `status` and `journal` for a
// unit, the query they take, and the proxy that forwards a request to that machine's agent.

import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { Machine } from "../model.js";
import type { ClusterSnapshot } from "../registry/registry.js";
import { parseRequirements } from "../unit/index.js";
import { JOURNAL_OUTPUTS } from "./commands.js";
import { ApiError } from "./errors.js";
import { unitByName } from "./units.js";

/** Set on a proxied request, so an agent whose view disagrees never forwards it a second time. */
export const PROXIED_BY_HEADER = "x-flotilla-proxied-by";

export interface CommandQuery {
  lines: number;
  output: string;
  follow: boolean;
  /** Ask a given machine (e.g. for a global unit, which runs on many). */
  machineID?: string;
}

const MAX_LINES = 1_000_000;

/** `?lines=N&output=O&follow=1&machineID=M`; defaults are fleetctl's (10 lines, short). */
export function parseCommandQuery(query: URLSearchParams): CommandQuery {
  const linesText = query.get("lines") ?? "10";
  const lines = Number(linesText);
  if (!/^\d+$/.test(linesText) || lines > MAX_LINES) {
    throw new ApiError(
      400,
      `invalid lines ${JSON.stringify(linesText)}: expected a whole number up to ${MAX_LINES}`,
    );
  }
  const output = query.get("output") ?? "short";
  if (!(JOURNAL_OUTPUTS as readonly string[]).includes(output)) {
    throw new ApiError(
      400,
      `invalid output ${JSON.stringify(output)}: expected one of ${JOURNAL_OUTPUTS.join(", ")}`,
    );
  }
  const followText = query.get("follow") ?? "";
  if (!["", "0", "1", "false", "true"].includes(followText)) {
    throw new ApiError(400, `invalid follow ${JSON.stringify(followText)}: expected 1 or 0`);
  }
  const machineID = query.get("machineID") || undefined;
  return {
    lines,
    output,
    follow: followText === "1" || followText === "true",
    ...(machineID ? { machineID } : {}),
  };
}

/**
 * The machine that answers for unit `name`: the one asked for, else the one it is scheduled to;
 * a global unit (never scheduled) is answered by this machine. `machine` is set when that is
 * another machine, whose agent the request is forwarded to.
 */
export function commandTarget(
  name: string,
  snap: Pick<ClusterSnapshot, "units" | "schedule" | "pending" | "machines" | "states">,
  selfID: string,
  requested?: string,
): { machineID: string; machine?: Machine & { apiURL: string } } {
  const unit = unitByName(snap, name);
  if (!unit) throw new ApiError(404, "unit does not exist");
  let target = requested ?? snap.schedule.get(name)?.machineID;
  if (target === undefined) {
    if (!parseRequirements(name, unit.options).requirements.global) {
      const pending = snap.pending.get(name);
      throw new ApiError(
        409,
        `unit ${name} is not scheduled to any machine${pending ? `: ${pending.reason}` : " (is it loaded or started?)"}`,
      );
    }
    target = selfID;
  }
  // A unit the machine refused (it has an OS unit of that name): systemctl would show the OS's unit.
  const refused = snap.states.find((s) => s.name === name && s.machineID === target && s.reason);
  if (refused) throw new ApiError(409, `unit ${name} on machine ${target}: ${refused.reason}`);
  if (target === selfID) return { machineID: selfID };
  const machine = snap.machines.find((m) => m.id === target);
  if (!machine) {
    throw requested
      ? new ApiError(404, `machine ${target} is not in the cluster`)
      : new ApiError(502, `unit ${name} is scheduled to machine ${target}, which is not in the cluster`);
  }
  if (!machine.apiURL) {
    throw new ApiError(502, `machine ${target} publishes no API URL (its agent has no TCP listener)`);
  }
  return { machineID: target, machine: { ...machine, apiURL: machine.apiURL } };
}

/**
 * Forwards a GET to `baseURL + path` and streams the answer back (status, Content-Type, body).
 * `tls` is this machine's certificate and key and the cluster CA, for https URLs.
 * `timeoutMs` bounds silence on the upstream connection; 0 means none (a followed journal).
 * A client that goes away aborts the upstream request. Resolves when the exchange is over;
 * rejects with a 502 when the machine cannot be reached before anything was answered.
 */
export function proxyGet(
  res: ServerResponse,
  baseURL: string,
  path: string,
  headers: Record<string, string>,
  timeoutMs: number,
  tls?: { ca: Buffer; cert: Buffer; key: Buffer },
): Promise<void> {
  const url = new URL(baseURL.replace(/\/+$/, "") + path);
  const client = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    // Over https the other agent is verified against the cluster CA and sees this machine's own
    // certificate (role machine), which is all the status/journal routes ask for.
    const upstream = client.request(url, { method: "GET", headers, ...(tls ?? {}) });
    if (timeoutMs > 0) {
      upstream.setTimeout(timeoutMs, () =>
        upstream.destroy(new Error(`no answer within ${Math.round(timeoutMs / 1000)} s`)),
      );
    }
    upstream.on("response", (answer: IncomingMessage) => {
      const type = answer.headers["content-type"];
      res.writeHead(answer.statusCode ?? 502, type ? { "Content-Type": type } : {});
      res.flushHeaders();
      answer.pipe(res);
      answer.on("error", () => res.destroy());
      answer.on("end", resolve);
    });
    upstream.on("error", (err) => {
      if (!res.headersSent) {
        reject(new ApiError(502, `cannot reach the agent at ${url.origin}: ${err.message}`));
        return;
      }
      res.destroy();
      resolve();
    });
    res.on("close", () => {
      upstream.destroy();
      resolve();
    });
    upstream.end();
  });
}
