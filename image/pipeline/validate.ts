// Early package check against the definition's own sources (not the host's, which may carry
// other repositories): a misspelled package fails in seconds, named, before any long stage.

import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Definition, unknownPackages } from "./definition.js";
import { BuildError, log, run } from "./util.js";

const DAY_MS = 24 * 3600 * 1000;

export async function checkPackages(def: Definition, cacheRoot: string): Promise<void> {
  const root = join(cacheRoot, "apt");
  await mkdir(join(root, "lists", "partial"), { recursive: true });
  await mkdir(join(root, "cache", "archives", "partial"), { recursive: true });
  const sourceList = join(root, "sources.list");
  const sources = `${def.sources.join("\n")}\n`;
  const stamp = join(root, "updated");
  if (!existsSync(sourceList) || readFileSync(sourceList, "utf8") !== sources) {
    await writeFile(sourceList, sources);
    await rm(stamp, { force: true });
  }
  const opts = [
    `-o=Dir::Etc::SourceList=${sourceList}`,
    "-o=Dir::Etc::SourceParts=/dev/null",
    `-o=Dir::State::Lists=${join(root, "lists")}`,
    `-o=Dir::Cache=${join(root, "cache")}`,
    "-o=Dir::State::status=/dev/null",
    "-o=APT::Architecture=amd64",
    "-o=Debug::NoLocking=1",
  ];
  if (!existsSync(stamp) || Date.now() - statSync(stamp).mtimeMs > DAY_MS) {
    log("validate", "refreshing package lists");
    await run("apt-get", [...opts, "-qq", "update"]);
    await writeFile(stamp, "");
  }
  let out: string;
  try {
    out = await run("apt-get", [
      ...opts,
      "--simulate",
      "--no-install-recommends",
      "install",
      ...def.packages,
    ]);
  } catch (err) {
    const unknown = unknownPackages((err as Error).message);
    if (unknown.length > 0)
      throw new BuildError(
        `unknown package${unknown.length > 1 ? "s" : ""} in the image definition: ${unknown.join(", ")} ` +
          `(not in ${def.suite}'s sources)`,
      );
    throw new BuildError(`the package set does not resolve:\n${(err as Error).message}`);
  }
  const count = out.split("\n").filter((l) => l.startsWith("Inst ")).length;
  log("validate", `${def.packages.length} packages resolve (${count} with dependencies)`);
}
