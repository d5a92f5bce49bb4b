// scripts/up's cluster, started the way scripts/local-cluster.ts starts it: TLS end to end. fleetctl
// runs with nothing but the settings from the generated fleetctl.env (endpoint, CA, admin
// certificate), and status/journal of a unit on another machine go through the agents' proxy,
// which authenticates with the machine's own certificate.

import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LocalCluster, startLocalCluster } from "../../scripts/lib/local-cluster.js";
import { type RunResult, unitDir, waitFor } from "./support.js";

const FLEETCTL = join(import.meta.dirname, "../../dist/fleetctl.cjs");
const UNIT = `[Unit]
Description=TLS end to end

[Service]
ExecStart=/bin/sh -c "while true; do echo hello-over-mtls; sleep 1; done"

[X-Fleet]
MachineMetadata=name=m2
`;

let stateDir: string;
let local: LocalCluster;
let dir: string;
/** The FLEETCTL_* variables as `source fleetctl.env` sets them. */
let sourced: Record<string, string>;

/** dist/fleetctl.cjs with only the sourced environment: no flags name the endpoint or the certificates. */
function fc(...args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [FLEETCTL, ...args],
      { cwd: dir, timeout: 60_000, env: { PATH: process.env.PATH ?? "", ...sourced } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) || 1 : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), "flotilla-up-"));
  local = await startLocalCluster({ machines: 2, stateDir });
  const out = execFileSync("bash", ["-c", `source "$1" && env | grep ^FLEETCTL_`, "-", local.envFile], {
    encoding: "utf8",
  });
  sourced = Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
  dir = unitDir({ "tls-hello.service": UNIT });
});

afterAll(async () => {
  await local?.cluster.teardown();
  if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("scripts/up's cluster over mutual TLS", () => {
  it("writes an env file naming an https endpoint, the CA and the admin certificate", () => {
    expect(sourced).toEqual(local.env);
    expect(sourced.FLEETCTL_ENDPOINT).toBe(`https://${local.cluster.machines[0]?.ip}:7480`);
    expect(Object.keys(sourced).sort()).toEqual([
      "FLEETCTL_CA_FILE",
      "FLEETCTL_CERT_FILE",
      "FLEETCTL_ENDPOINT",
      "FLEETCTL_KEY_FILE",
    ]);
  });

  it("lists the machines, whose agents run against etcd with client certificates", async () => {
    const listed = await waitFor(
      "both machines listed",
      async () => {
        const r = await fc("list-machines", "--no-legend", "--full");
        return r.stdout.trim().split("\n").length === 2 ? r : undefined;
      },
      60_000,
    );
    for (const m of local.cluster.machines) expect(listed.stdout).toContain(m.id);
  });

  it("starts a unit on the other machine, and shows its status and journal through the proxy", async () => {
    const started = await fc("start", "tls-hello.service");
    expect(started.code, started.stderr).toBe(0);
    const m2 = local.cluster.machines[1];
    expect(started.stdout).toContain(`Unit tls-hello.service launched on ${m2?.id.slice(0, 8)}`);
    const status = await waitFor(
      "the unit's status, active",
      async () => {
        const r = await fc("status", "tls-hello.service");
        return r.stdout.includes("Active: active (running)") ? r : undefined;
      },
      30_000,
    );
    expect(status.code, status.stderr).toBe(0);
    const journal = await waitFor(
      "the unit's output in its journal",
      async () => {
        const r = await fc("journal", "--lines=3", "tls-hello.service");
        return r.stdout.includes("hello-over-mtls") ? r : undefined;
      },
      30_000,
    );
    expect(journal.code).toBe(0);
  });

  it("refuses fleetctl without the client certificate, and reader's writes", async () => {
    const noCert = await fc("--cert-file=", "--key-file=", "list-units");
    expect(noCert.code).not.toBe(0);
    expect(noCert.stderr).toContain("requires a client certificate");
    const tlsDir = join(stateDir, "tls");
    const asReader = (...args: string[]) =>
      fc(
        `--cert-file=${join(tlsDir, "reader.pem")}`,
        `--key-file=${join(tlsDir, "reader-key.pem")}`,
        ...args,
      );
    expect((await asReader("list-units", "--no-legend")).stdout).toContain("tls-hello.service");
    const destroy = await asReader("destroy", "tls-hello.service");
    expect(destroy.code).not.toBe(0);
    expect(destroy.stderr + destroy.stdout).toContain("role reader");
  });
});
