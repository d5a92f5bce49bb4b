// Bundles the agent and fleetctl into one ESM file each under dist/ (target: Node 20+).
import { mkdir, writeFile } from "node:fs/promises";
import { build } from "esbuild";

const started = Date.now();
await mkdir("dist", { recursive: true });
// The bundles are ESM; this marks dist/ as such wherever it is mounted.
await writeFile("dist/package.json", '{ "type": "module" }\n');
await build({
  entryPoints: { agent: "agent/main.ts", fleetctl: "fleetctl/main.ts" },
  outdir: "dist",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: "linked",
  logLevel: "warning",
  // dbus-next's X11 session-bus discovery and its optional native unix-fd socket are never used.
  external: ["x11", "usocket"],
  // Some dependencies are CommonJS and call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
});
process.stderr.write(`built dist/agent.js and dist/fleetctl.js in ${Date.now() - started} ms\n`);
