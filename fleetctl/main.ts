#!/usr/bin/env node
// Bundle entry point (dist/fleetctl.cjs). The bundle is CommonJS, which starts faster than ESM,
// so there is no top-level await here.
import { runFleetctl } from "./cli.js";

// `fleetctl list-units | head -1` closes stdout early; that is not an error worth a stack trace.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

runFleetctl(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
}).then((code) => {
  process.exitCode = code;
});
