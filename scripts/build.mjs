// Bundles the agent (one ESM file, dist/agent.js) and fleetctl (one CommonJS file,
// dist/fleetctl.cjs) under dist/ (target: Node 20+).
import { cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { build } from "esbuild";

const started = Date.now();
await mkdir("dist", { recursive: true });
// The bundles are ESM; this marks dist/ as such wherever it is mounted.
await writeFile("dist/package.json", '{ "type": "module" }\n');
// etcd3 loads its gRPC service definitions from .proto files at run time: ship them beside the
// bundle and point etcd3 at them (its own path is relative to its source file).
await cp("node_modules/etcd3/proto", "dist/proto", { recursive: true });
const etcdProtoPath = {
  name: "etcd3-proto-path",
  setup(b) {
    b.onLoad({ filter: /etcd3[/\\]lib[/\\]connection-pool\.js$/ }, async (args) => ({
      contents: (await readFile(args.path, "utf8")).replace(/__dirname\}\/\.\.\/proto\//, (m) =>
        m.replace("/../", "/"),
      ),
      loader: "js",
    }));
  },
};

await build({
  entryPoints: { agent: "agent/main.ts" },
  outdir: "dist",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  sourcemap: "linked",
  // V8 keeps a script's whole source in the heap for as long as it runs (lazy compilation reads
  // it): whitespace and syntax minified, the agent's source is 1.4 MB instead of 2.3 MB. Names
  // are kept, so stack traces and logged errors still read as the code.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: "warning",
  // dbus-next's X11 session-bus discovery and its optional native unix-fd socket are never used.
  external: ["x11", "usocket"],
  plugins: [etcdProtoPath],
  // Only free references are replaced, so modules that declare their own __dirname keep it.
  define: { __dirname: "__flotillaDir", __filename: "__flotillaFilename" },
  // Some dependencies are CommonJS and use require() and __dirname; give the ESM bundle both.
  banner: {
    js: [
      "import { createRequire as __flotillaRequire } from 'node:module';",
      "import { dirname as __flotillaDirname } from 'node:path';",
      "import { fileURLToPath as __flotillaPath } from 'node:url';",
      "const require = __flotillaRequire(import.meta.url);",
      "const __flotillaFilename = __flotillaPath(import.meta.url);",
      "const __flotillaDir = __flotillaDirname(__flotillaFilename);",
    ].join("\n"),
  },
});
// fleetctl is started once per call, so its start-up is what users feel: CommonJS loads without
// Node's ESM loader (half of fleetctl's start-up cost on Node 22; fleetctl/README.md, "Start-up").
await build({
  entryPoints: ["fleetctl/main.ts"],
  outfile: "dist/fleetctl.cjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  sourcemap: "linked",
  logLevel: "warning",
  // yargs-parser is ESM and reads import.meta.url (for createRequire); CommonJS has __filename.
  define: { "import.meta.url": "__flotillaImportMetaUrl" },
  banner: { js: "const __flotillaImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
});
process.stderr.write(`built dist/agent.js and dist/fleetctl.cjs in ${Date.now() - started} ms\n`);
