// scripts/machine: talks to the local cluster's keeper over its control socket.
//   scripts/machine m2 poweroff|kill|start
//   scripts/machine m1 CMD [ARG...]        runs CMD inside m1, e.g. `dig web.service.flotilla`

import net from "node:net";
import { join } from "node:path";

const SOCKET = join(import.meta.dirname, "../../.cache/up/control.sock");
const USAGE =
  "usage: scripts/machine MACHINE poweroff|kill|start\n       scripts/machine MACHINE CMD [ARG...]\n";

const [machine, first, ...rest] = process.argv.slice(2);
if (machine === undefined || first === undefined) {
  process.stderr.write(USAGE);
  process.exit(2);
}
const request = ["poweroff", "kill", "start"].includes(first)
  ? { machine, action: first }
  : { machine, action: "exec", argv: [first, ...rest] };

const sock = net.connect(SOCKET);
let reply = "";
sock.on("data", (chunk) => {
  reply += chunk.toString();
});
sock.on("error", (err) => {
  process.stderr.write(
    `scripts/machine: cannot reach the local cluster (${err.message}); is scripts/up running?\n`,
  );
  process.exit(1);
});
sock.on("end", () => {
  try {
    const res = JSON.parse(reply) as { code: number; stdout: string; stderr: string };
    process.stdout.write(res.stdout);
    process.stderr.write(res.stderr);
    process.exit(res.code);
  } catch {
    process.stderr.write("scripts/machine: the keeper closed the connection without an answer\n");
    process.exit(1);
  }
});
sock.write(`${JSON.stringify(request)}\n`);
