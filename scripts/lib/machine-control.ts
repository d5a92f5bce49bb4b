// The request scripts/machine sends to the local cluster's keeper (scripts/local-cluster.ts), one
// JSON line on its root-only control socket. Checked here, on the keeper's side, before use.

export type ControlRequest =
  | { machine: string; action: "poweroff" | "kill" | "start" }
  | { machine: string; action: "exec"; argv: string[] };

const ACTIONS = new Set(["poweroff", "kill", "start", "exec"]);
const MAX_ARGS = 256;
const MAX_ARG_BYTES = 8192;

export function parseControlRequest(line: string): ControlRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new Error("control request is not JSON");
  }
  if (typeof raw !== "object" || raw === null) throw new Error("control request is not an object");
  const { machine, action, argv } = raw as Record<string, unknown>;
  if (typeof machine !== "string" || !/^[A-Za-z0-9-]{1,64}$/.test(machine))
    throw new Error("machine: want a name such as m1, or a machine ID");
  if (typeof action !== "string" || !ACTIONS.has(action))
    throw new Error(`action: want one of ${[...ACTIONS].join(", ")}`);
  if (action !== "exec") return { machine, action: action as "poweroff" | "kill" | "start" };
  if (
    !Array.isArray(argv) ||
    argv.length === 0 ||
    argv.length > MAX_ARGS ||
    !argv.every((a) => typeof a === "string" && Buffer.byteLength(a) <= MAX_ARG_BYTES)
  )
    throw new Error(`argv: want 1 to ${MAX_ARGS} strings of at most ${MAX_ARG_BYTES} bytes`);
  return { machine, action, argv };
}
