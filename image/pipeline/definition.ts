// The image definition (image/definition.json): its shape, structural validation and the
// pure size rules every stage applies, so a bad definition fails before any long stage.

import { readFile } from "node:fs/promises";
import { BuildError, fmtMiB, MiB } from "./util.js";

export interface Definition {
  name: string;
  version: string;
  suite: string;
  /** sources.list lines; the first names the suite mmdebstrap builds. */
  sources: string[];
  packages: string[];
  dpkgExclude: string[];
  dpkgKeep: string[];
  kernelCmdline: string;
  /** Boot-counting tries a freshly written slot gets (`entry+N.conf`). */
  bootTries: number;
  usr: { compression: "zstd" | "xz" | "gzip"; level: number };
  partitions: {
    esp: { label: string; sizeMiB: number };
    usr: { labels: [string, string]; sizeMiB: number };
    usrVerity: { labels: [string, string]; sizeMiB: number };
    oem: { label: string; sizeMiB: number };
    root: { label: string; sizeMiB: number };
  };
}

/** Checks the shape of a parsed definition; returns every problem found. */
export function definitionProblems(d: unknown): string[] {
  const problems: string[] = [];
  if (d === null || typeof d !== "object") return ["definition must be a JSON object"];
  const o = d as Record<string, unknown>;
  const str = (k: string) => {
    if (typeof o[k] !== "string" || o[k] === "") problems.push(`"${k}" must be a non-empty string`);
  };
  const strList = (k: string, nonEmpty: boolean) => {
    const v = o[k];
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string") || (nonEmpty && v.length === 0))
      problems.push(`"${k}" must be a${nonEmpty ? " non-empty" : "n"} array of strings`);
  };
  str("name");
  str("suite");
  str("kernelCmdline");
  if (typeof o.version !== "string" || !/^\d+\.\d+\.\d+$/.test(o.version))
    problems.push(`"version" must be MAJOR.MINOR.PATCH, got ${JSON.stringify(o.version)}`);
  strList("sources", true);
  strList("packages", true);
  strList("dpkgExclude", false);
  strList("dpkgKeep", false);
  if (Array.isArray(o.packages)) {
    for (const p of o.packages)
      if (typeof p === "string" && !/^[a-z0-9][a-z0-9+.-]+$/.test(p))
        problems.push(`package name ${JSON.stringify(p)} is not a valid Debian package name`);
  }
  if (!Number.isInteger(o.bootTries) || (o.bootTries as number) < 1 || (o.bootTries as number) > 9)
    problems.push(`"bootTries" must be an integer from 1 to 9`);
  const usr = o.usr as Record<string, unknown> | undefined;
  if (!usr || !["zstd", "xz", "gzip"].includes(usr.compression as string) || !Number.isInteger(usr.level))
    problems.push(`"usr" must be { compression: zstd|xz|gzip, level: integer }`);
  const parts = o.partitions as Record<string, Record<string, unknown>> | undefined;
  for (const name of ["esp", "usr", "usrVerity", "oem", "root"]) {
    const p = parts?.[name];
    if (!p) {
      problems.push(`"partitions.${name}" is missing`);
      continue;
    }
    if (!Number.isInteger(p.sizeMiB) || (p.sizeMiB as number) < 1)
      problems.push(`"partitions.${name}.sizeMiB" must be a positive integer`);
    const labels = name === "usr" || name === "usrVerity" ? p.labels : [p.label];
    if (
      !Array.isArray(labels) ||
      labels.length !== (name === "usr" || name === "usrVerity" ? 2 : 1) ||
      labels.some((l) => typeof l !== "string" || !/^[A-Z0-9-]{1,36}$/.test(l))
    )
      problems.push(
        `"partitions.${name}" needs ${name.startsWith("usr") ? "two labels" : "a label"} (A-Z 0-9 -)`,
      );
  }
  return problems;
}

export async function loadDefinition(path: string): Promise<Definition> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new BuildError(`${path}: ${(err as Error).message}`);
  }
  const problems = definitionProblems(parsed);
  if (problems.length > 0) throw new BuildError(`${path} is invalid:\n  ${problems.join("\n  ")}`);
  return parsed as Definition;
}

/** Names of packages apt reported as unknown, from `apt-get --simulate install` output. */
export function unknownPackages(aptOutput: string): string[] {
  return [...aptOutput.matchAll(/Unable to locate package (\S+)/g)].map((m) => m[1] as string);
}

/** Fails naming the partition and both sizes when content does not fit. */
export function checkFits(partition: string, contentBytes: number, partitionBytes: number): void {
  if (contentBytes > partitionBytes)
    throw new BuildError(
      `partition ${partition} is too small: its content is ${fmtMiB(contentBytes)} (${contentBytes} bytes) ` +
        `but the partition is ${fmtMiB(partitionBytes)} (${partitionBytes} bytes)`,
    );
}

export interface Sizes {
  usrImage: number;
  verityTree: number;
  kernel: number;
  initrd: number;
  bootloader: number;
}

export interface BudgetLine {
  what: string;
  actual: number;
  limit: number;
  ok: boolean;
}

/**
 * The growth budget (docs/image.md: partitions that cannot grow are the most common update
 * failure): the /usr payload may use at most half its slot, and the ESP must hold two kernels +
 * initrds (one per slot) with 50% to spare, plus the boot loader.
 */
export function budget(def: Definition, s: Sizes): BudgetLine[] {
  const slot = def.partitions.usr.sizeMiB * MiB;
  const verity = def.partitions.usrVerity.sizeMiB * MiB;
  const esp = def.partitions.esp.sizeMiB * MiB;
  const lines = [
    { what: "USR payload ≤ half its slot", actual: s.usrImage, limit: slot / 2 },
    { what: "verity tree ≤ half its partition", actual: s.verityTree, limit: verity / 2 },
    {
      what: "ESP: 2 × (kernel + initrd) × 1.5 + loader",
      actual: Math.ceil(2 * (s.kernel + s.initrd) * 1.5 + s.bootloader),
      limit: esp,
    },
  ];
  return lines.map((l) => ({ ...l, ok: l.actual <= l.limit }));
}
