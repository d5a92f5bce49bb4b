// The container fence on a real machine (docs/security.md, "Container fence"): a [Container] unit
// running as User=65534 on the bridge network, probed with `podman exec`, cannot connect to its
// machine's API (on the machine's address or the bridge gateway) or to etcd (on the host bridge,
// where the harness runs it), while DNS answers and an ordinary server beside etcd stays reachable.
// The table is the agent's: deleted, the same probes get through; the agent restarted, it is back;
// podman creating and removing a network leaves it alone.

import { copyFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildTestImage, TEST_IMAGE_NAME } from "../fixtures/images/build.js";
import { Cluster, type ExecResult, type Machine } from "../harness/index.js";
import { EtcdView, fleetctlWith, waitFor, waitForMembers } from "./support.js";

let cluster: Cluster;
let etcd: EtcdView;
let m: Machine;
let control: Server;
let controlURL: string;

const fc = (args: string[], files: Record<string, string> = {}) => fleetctlWith(m.apiURL, args, files);

async function sh(script: string): Promise<string> {
  const r = await m.exec(["sh", "-c", script], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${m.name}: ${script}: exit ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** The container of probe.service (named systemd-<unit> by the agent's rendering). */
const PROBE_CONTAINER = "systemd-probe";

/**
 * Runs `argv` in the probe container. Throws when the probe itself could not run (podman exits 125
 * when it fails, e.g. no such container; 126/127 when the command cannot be run), so that a probe
 * that never ran is never read as a connection's result.
 */
async function inProbe(argv: string[]): Promise<ExecResult> {
  const r = await m.exec(["podman", "exec", PROBE_CONTAINER, ...argv], { timeoutMs: 30_000 });
  if (r.code === 125 || r.code === 126 || r.code === 127)
    throw new Error(`probe ${argv.join(" ")} did not run (exit ${r.code}): ${r.stderr.trim()}`);
  return r;
}

/** The ID of the running probe container, or undefined while there is none. */
async function runningProbe(): Promise<string | undefined> {
  const r = await m.exec([
    "podman",
    "container",
    "inspect",
    "--format",
    "{{.Id}} {{.State.Running}}",
    PROBE_CONTAINER,
  ]);
  const [id, running] = r.stdout.trim().split(" ");
  return r.code === 0 && running === "true" ? id : undefined;
}

/**
 * A TCP connection from inside the probe container: nc's error (e.g. "Connection refused"), or
 * "open" when it connected (the API and etcd speak TLS, which busybox cannot: a connection is what
 * the fence acts on). The fence refuses with a reset, so a refusal is immediate and explicit.
 */
async function probeTcp(host: string, port: number): Promise<string> {
  const r = await inProbe(["timeout", "3", "nc", host, String(port)]);
  if (r.stderr.includes("can't connect")) return `closed: ${r.stderr.trim()}`;
  // Connected: nc ends when the server closes (0: nc's stdin is empty, so the TLS server sees the
  // client finish) or when busybox timeout stops it (143) while the server waits for a handshake.
  if ((r.code === 0 || r.code === 143) && r.stderr.trim() === "") return "open";
  return `probe failed (exit ${r.code}): ${r.stderr.trim()}`;
}

/** GET from inside the probe container: the body, or wget's error (e.g. "Connection refused"). */
async function probe(url: string): Promise<string> {
  // busybox's own `timeout`: its wget -T crashes on a refused connection.
  const r = await inProbe(["timeout", "10", "wget", "-q", "-O", "-", url]);
  return r.code === 0 ? `open: ${r.stdout}` : `closed: ${r.stderr.trim()}`;
}

const API_PORT = 7480;
const etcdAddress = () => {
  const u = new URL(cluster.endpoint);
  return { host: u.hostname, port: Number(u.port) };
};

beforeAll(async () => {
  const { archive } = await buildTestImage();
  cluster = await Cluster.start({ machines: 1 });
  m = cluster.machines[0] as Machine;
  etcd = new EtcdView(cluster.endpoint);
  // An ordinary HTTP server on the host bridge, beside etcd: the fence is specific, not a wall.
  control = createServer((_req, res) => res.end("beside etcd\n"));
  await new Promise<void>((resolve) => control.listen(0, cluster.bridge.ip, resolve));
  controlURL = `http://${cluster.bridge.ip}:${(control.address() as AddressInfo).port}/`;
  await copyFile(archive, path.join(cluster.runDir, m.name, "merged", "var", "tmp", "busybox.oci.tar"));
  await sh("podman load -q -i /var/tmp/busybox.oci.tar && rm /var/tmp/busybox.oci.tar");
  await waitForMembers(fc, etcd, 1);
  const unit = [
    "[Container]",
    `Image=${TEST_IMAGE_NAME}`,
    "Pull=never",
    "User=65534",
    "Exec=httpd -f -p 8080 -h /var/www",
    "PublishPort=8090:8080",
    "PodmanArgs=--init",
    "",
  ].join("\n");
  const start = await fc(["start", "probe.service"], { "probe.service": unit });
  expect(start.code, start.stderr).toBe(0);
  await waitFor("probe.service's container running", runningProbe, 60_000, 500);
}, 300_000);

afterAll(async () => {
  etcd?.close();
  control?.close();
  await cluster?.teardown();
}, 120_000);

describe("the container fence", () => {
  it("a bridged container as nobody: API and etcd refused, DNS answers, a server beside etcd reachable", async () => {
    expect((await inProbe(["id", "-u"])).stdout.trim()).toBe("65534");
    const gateway = /default via (\S+)/.exec((await inProbe(["ip", "route"])).stdout)?.[1];
    expect(gateway).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    // From the machine itself (and the host) the API and etcd answer: what is refused is the container.
    const tls =
      "--cacert /etc/flotilla/tls/ca.pem --cert /etc/flotilla/tls/machine.pem --key /etc/flotilla/tls/machine-key.pem";
    expect(
      await sh(
        `curl -sS -m 5 ${tls} -o /dev/null -w '%{http_code}' https://${m.ip}:${API_PORT}/flotilla/v1/health`,
      ),
    ).toBe("200");

    const results = {
      api: await probeTcp(m.ip, API_PORT),
      apiOnGateway: await probeTcp(gateway as string, API_PORT),
      etcd: await probeTcp(etcdAddress().host, etcdAddress().port),
      besideEtcd: await probe(controlURL),
    };
    const refused = (ip: string) => `closed: nc: can't connect to remote host (${ip}): Connection refused`;
    expect(results).toEqual({
      api: refused(m.ip),
      apiOnGateway: refused(gateway as string),
      etcd: refused(cluster.bridge.ip),
      besideEtcd: "open: beside etcd\n",
    });

    // The agent's DNS, on the machine's address (the container's first nameserver), answers.
    const dns = await waitFor(
      "probe.service.flotilla resolved in the container",
      async () => {
        const r = await inProbe(["nslookup", "probe.service.flotilla"]);
        return r.stdout.includes(`Address: ${m.ip}`) ? r.stdout : undefined;
      },
      30_000,
      500,
    );
    expect(dns).toContain(`Server:\t\t${m.ip}`);
    expect(await m.journal("flotilla-agent.service", 500)).toContain(
      "containers fenced off the API and etcd",
    );
  });

  it("it is the agent's table: without it the probes get through; a restarted agent puts it back", async () => {
    await sh("nft delete table inet flotilla");
    expect(await probeTcp(m.ip, API_PORT)).toBe("open");
    expect(await probeTcp(etcdAddress().host, etcdAddress().port)).toBe("open");

    const before = await runningProbe();
    expect(before).toBeDefined();
    await sh("systemctl restart flotilla-agent.service");
    await waitFor(
      "the fence back",
      async () => (await sh("nft list tables")).includes("inet flotilla"),
      30_000,
    );
    // The old agent's graceful stop stopped and unloaded probe.service (docs/architecture.md,
    // "Graceful stop"); the new agent starts it again, in a new container, some time after its
    // table is back: probing before that would find no container at all.
    await waitFor(
      "probe.service's container running again",
      async () => {
        const id = await runningProbe();
        return id !== undefined && id !== before;
      },
      60_000,
      500,
    );
    expect(await probeTcp(m.ip, API_PORT)).toMatch(/Connection refused/);
    expect(await probeTcp(etcdAddress().host, etcdAddress().port)).toMatch(/Connection refused/);
  });

  it("survives podman creating and removing networks (netavark's own rules)", async () => {
    const before = await sh("nft list table inet flotilla");
    await sh("podman network create fence-test && podman network rm fence-test");
    expect(await sh("nft list table inet flotilla")).toBe(before);
    expect(await probeTcp(m.ip, API_PORT)).toMatch(/Connection refused/);
    expect(await probe(controlURL)).toBe("open: beside etcd\n");
  });
});
