// Kernel arguments an operator provisioned (Ignition's kernelArguments): applied to both slots'
// boot entries at provisioning, recorded on ROOT, and applied again to every slot entry the
// updater writes later, so an OS update keeps them. One module for the image's provisioner and
// the agent's updater.

import { readFile } from "node:fs/promises";
import { join } from "node:path";

export interface KernelArguments {
  shouldExist: string[];
  shouldNotExist: string[];
}

/** Where provisioning records the applied kernelArguments (on ROOT: shared by both slots). */
export const KERNEL_ARGUMENTS_RECORD = "/etc/flotilla/kernel-arguments.json";

/** One kernel argument as a boot loader entry's `options` holds it: no whitespace or quotes. */
export const KERNEL_ARG = /^[^\s"']+$/;
const MAX_ARGS = 256;
const MAX_ARG_BYTES = 4096;

/**
 * A command line with `shouldExist` arguments appended when absent and every `shouldNotExist`
 * argument removed, as upstream Ignition applies kernelArguments. Arguments compare as whole words.
 */
export function applyKernelArguments(cmdline: string, args: KernelArguments): string {
  const words = cmdline.trim().split(/\s+/).filter(Boolean);
  const kept = words.filter((w) => !args.shouldNotExist.includes(w));
  for (const a of args.shouldExist) if (!kept.includes(a)) kept.push(a);
  return kept.join(" ");
}

/** The record as provisioning wrote it; throws naming what is wrong with it. */
export function parseKernelArgumentsRecord(text: string): KernelArguments {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new Error("is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("is not an object");
  const out: KernelArguments = { shouldExist: [], shouldNotExist: [] };
  for (const key of ["shouldExist", "shouldNotExist"] as const) {
    const list = (v as Record<string, unknown>)[key];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.length > MAX_ARGS)
      throw new Error(`${key}: want a list of at most ${MAX_ARGS} arguments`);
    for (const a of list) {
      if (typeof a !== "string" || !KERNEL_ARG.test(a) || Buffer.byteLength(a) > MAX_ARG_BYTES)
        throw new Error(`${key}: ${JSON.stringify(a)} is not one kernel argument (no spaces or quotes)`);
      out[key].push(a);
    }
  }
  return out;
}

/** The recorded arguments under `root`, or none when provisioning recorded none. */
export async function readKernelArguments(root = "/"): Promise<KernelArguments> {
  const file = join(root, KERNEL_ARGUMENTS_RECORD);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { shouldExist: [], shouldNotExist: [] };
    throw err;
  }
  try {
    return parseKernelArgumentsRecord(text);
  } catch (err) {
    throw new Error(`${file} ${(err as Error).message}`);
  }
}
