// README.md's fleetctl section, run line by line, in order, against the cluster scripts/up starts
// (scripts/lib/local-cluster.ts: 3 machines, the demo registry and image), so the README's examples
// cannot rot. Then what scripts/up promises besides: the container web service answers from the
// host on its published port, and a machine's DNS says where it runs.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalCluster, startLocalCluster } from "../../scripts/lib/local-cluster.js";
import { TEST_IMAGE_INDEX_HTML } from "../fixtures/images/build.js";
import type { Machine } from "../harness/index.js";
import { waitFor } from "./support.js";

const ROOT = join(import.meta.dirname, "../..");
const FLEETCTL = join(ROOT, "dist/fleetctl.cjs");
const ENV_LINE = "source .cache/up/fleetctl.env";

/** The command lines of README.md's first sh block under "## fleetctl", comments removed. */
function readmeFleetctlLines(): string[] {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("\n## fleetctl\n"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (block === undefined) throw new Error("README.md has no sh block under ## fleetctl");
  return block
    .split("\n")
    .map((l) => l.replace(/\s+#\s.*$/, "").trim())
    .filter((l) => l !== "");
}

/**
 * A README line as a user's shell runs it (brace expansion included), `fleetctl` being ours, after
 * `source`ing this cluster's fleetctl.env as the README's first line does with scripts/up's.
 */
function shell(line: string, envFile: string): ChildProcess {
  const script = `source "${envFile}" && fleetctl() { "${process.execPath}" "${FLEETCTL}" "$@"; }; ${line}`;
  return spawn("bash", ["-c", script], {
    cwd: ROOT,
    env: { ...process.env, FLEETCTL_ENDPOINT: undefined },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, so Ctrl-C (SIGINT to the group) reaches fleetctl, not only bash.
    detached: true,
  });
}

interface Outcome {
  code: number | null;
  output: string;
}

function collect(child: ChildProcess): { output: () => string; exited: Promise<number | null> } {
  let output = "";
  child.stdout?.on("data", (d) => {
    output += d;
  });
  child.stderr?.on("data", (d) => {
    output += d;
  });
  return {
    output: () => output,
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
  };
}

async function runLine(line: string, envFile: string): Promise<Outcome> {
  const c = collect(shell(line, envFile));
  return { code: await c.exited, output: c.output() };
}

/** A following command (journal -f, --watch): it must print `expect` and still be running then. */
async function followLine(line: string, envFile: string, expected: string): Promise<Outcome> {
  const child = shell(line, envFile);
  const c = collect(child);
  let exitCode: number | null | undefined;
  void c.exited.then((code) => {
    exitCode = code;
  });
  try {
    await waitFor(`"${line}" to print ${expected}`, async () => c.output().includes(expected), 30_000);
    return { code: exitCode === undefined ? null : exitCode, output: c.output() };
  } finally {
    if (child.pid !== undefined && exitCode === undefined) process.kill(-child.pid, "SIGINT");
    await c.exited;
  }
}

let local: LocalCluster;
let stateDir: string;
/** This cluster's fleetctl.env: what the README's lines get instead of scripts/up's. */
let envFile: string;

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), "flotilla-readme-"));
  local = await startLocalCluster({ machines: 3, stateDir });
  envFile = local.envFile;
}, 300_000);

afterAll(async () => {
  await local?.teardown();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
}, 120_000);

/** Where each unit runs, from `fleetctl list-units`: unit → machine IP. */
async function placements(): Promise<Map<string, string>> {
  const r = await runLine("fleetctl list-units --no-legend --fields unit,machine,active", envFile);
  expect(r.code).toBe(0);
  const out = new Map<string, string>();
  for (const row of r.output.trim().split("\n")) {
    const [unit, machine, active] = row.split("\t");
    if (unit && machine && active === "active") out.set(unit, machine.split("/")[1] ?? "");
  }
  return out;
}

function machineAt(ip: string): Machine {
  const m = local.cluster.machines.find((x) => x.ip === ip);
  if (m === undefined) throw new Error(`no machine at ${ip}`);
  return m;
}

describe("README.md's fleetctl walk-through, on a scripts/up cluster", () => {
  it("runs every line, in order, as written", async () => {
    const lines = readmeFleetctlLines();
    expect(lines.length).toBeGreaterThan(10);
    expect(lines[0]).toBe(ENV_LINE);
    for (const line of lines.slice(1)) {
      expect(line, "every other line is a fleetctl command").toMatch(/^fleetctl /);
      let outcome: Outcome;
      if (line.includes("journal -f")) outcome = await followLine(line, envFile, "hello from");
      else if (line.includes("--watch")) outcome = await followLine(line, envFile, "web@2.service");
      else outcome = await runLine(line, envFile);
      expect({ line, ...outcome }).toEqual({
        line,
        code: line.match(/-f |--watch/) ? null : 0,
        output: expect.any(String),
      });
      if (line.startsWith("fleetctl list-services web")) {
        expect(outcome.output).toMatch(/web@1\.service\t\S+\t8080->8080\/tcp/);
        expect(outcome.output).toMatch(/web@2\.service\t\S+\t8080->8080\/tcp/);
      }
    }
    // The last line destroyed everything it started.
    expect([...(await placements()).keys()]).toEqual([]);
  }, 300_000);

  it("serves the container web service from the host and names it in the machines' DNS", async () => {
    const start = await runLine(
      "fleetctl start units/examples/web@1.service units/examples/web@2.service",
      envFile,
    );
    expect(start.code).toBe(0);
    const where = await placements();
    const ips = [where.get("web@1.service"), where.get("web@2.service")].sort();
    expect(ips.every((ip) => ip !== undefined && ip !== "")).toBe(true);
    for (const ip of ips) {
      // The published port of a container: plain HTTP, not the agent's API.
      const res = await fetch(`http://${ip}:8080/`, { signal: AbortSignal.timeout(5000) });
      expect(await res.text()).toBe(TEST_IMAGE_INDEX_HTML);
    }
    // From a machine, as the README says: its resolver is the agent's DNS.
    const asker = machineAt(ips[0] as string);
    const dig = await asker.exec(["dig", "+short", "web.service.flotilla"]);
    expect(dig.code).toBe(0);
    expect(dig.stdout.trim().split("\n").sort()).toEqual(ips);
    const srv = await asker.exec(["dig", "+short", "web.service.flotilla", "SRV"]);
    expect(
      srv.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[2]),
    ).toEqual(["8080", "8080"]);
    expect((await runLine("fleetctl destroy web@1.service web@2.service", envFile)).code).toBe(0);
  }, 300_000);
});
