// Process, hashing and progress helpers shared by the image pipeline stages.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join, resolve } from "node:path";

export class BuildError extends Error {
  override name = "BuildError";
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  input?: string;
  /** Stream the command's output to stderr (long stages) instead of capturing it. */
  stream?: boolean;
}

/** Runs a command; throws a BuildError with its output tail when it fails. Returns stdout. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", opts.stream ? "inherit" : "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (opts.stream) process.stderr.write(d);
    });
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    child.on("error", (e) => reject(new BuildError(`${cmd}: ${e.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      else {
        const tail = `${err}${opts.stream ? "" : out}`.trim().split("\n").slice(-15).join("\n");
        reject(new BuildError(`${cmd} ${args.join(" ")} exited with ${code}\n${tail}`));
      }
    });
  });
}

export function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

export function hashFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

/** Hash of a directory tree: relative paths, modes, symlink targets and contents, in sorted order. */
export async function hashTree(root: string): Promise<string> {
  const h = createHash("sha256");
  const walk = async (rel: string): Promise<void> => {
    const entries = (await readdir(join(root, rel))).sort();
    for (const name of entries) {
      const p = join(rel, name);
      const st = await lstat(join(root, p));
      h.update(`${p}\0${st.mode}\0`);
      if (st.isDirectory()) await walk(p);
      else if (st.isSymbolicLink()) h.update(await readlink(join(root, p)));
      else h.update(await readFile(join(root, p)));
    }
  };
  await walk("");
  return h.digest("hex");
}

const started = Date.now();
export function log(stage: string, msg: string): void {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${t}s] ${stage.padEnd(9)} ${msg}\n`);
}

export const MiB = 1024 * 1024;
export const fmtMiB = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

/** Hash of a stage's own source, so editing one stage rebuilds it and what follows, not the rest. */
export function stageCode(stage: string): Promise<string> {
  return hashFile(resolve("image/pipeline/stages", `${stage}.ts`));
}
