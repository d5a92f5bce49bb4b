// Service discovery on 3 real machines: the agents publish a record for each active container
// unit, every agent's DNS answers `web.service.flotilla` from its watch-fed cache, and a record
// follows its unit when the unit's machine dies. DNS is asked with the real `dig` from another
// machine, and by busybox's resolver inside a container.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { WireService, WireServiceList } from "../../agent/api/schema.js";
import { buildTestImage, TEST_IMAGE_INDEX_HTML } from "../fixtures/images/build.js";
import { Cluster, type Machine } from "../harness/index.js";
import { pushImage, type Registry, startRegistry } from "../harness/registry.js";
import {
  destroyAllUnits,
  EtcdView,
  fleetctl,
  fleetctlWith,
  httpRequest,
  machineByID,
  waitFor,
  waitForMembers,
} from "./support.js";

const TTL_MS = 5000;
const PORT = 8080;

let cluster: Cluster;
let etcd: EtcdView;
let registry: Registry;

const running = () => cluster.machines.filter((m) => m.running);
const api = () => (running()[0] as Machine).apiURL;

const fc = (args: string[], files: Record<string, string> = {}) => fleetctlWith(api(), args, files);

/** Instances of `web` on different machines, each serving the test page on PORT. */
const template = () =>
  [
    "[Container]",
    `Image=${registry.host}/flotilla/busybox:latest`,
    "Exec=httpd -f -p 80 -h /var/www",
    `PublishPort=${PORT}:80`,
    "PodmanArgs=--init",
    "",
    "[X-Fleet]",
    "Conflicts=web@*.service",
    "",
  ].join("\n");

async function sh(m: Machine, script: string): Promise<string> {
  const r = await m.exec(["sh", "-c", script], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${m.name}: ${script}: exit ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** `dig +short` run on machine `from`, asking the agent on machine `server`; sorted lines. */
async function dig(from: Machine, server: Machine, name: string, type: "A" | "SRV"): Promise<string[]> {
  const out = await sh(from, `dig +short +tries=1 +time=2 @${server.ip} ${name} ${type}`);
  return out.split("\n").filter(Boolean).sort();
}

async function services(m: Machine, service?: string): Promise<WireService[]> {
  const query = service === undefined ? "" : `?service=${service}`;
  const res = await httpRequest("GET", m.apiURL, `/flotilla/v1/services${query}`);
  if (res.status !== 200) throw new Error(`GET services: ${res.status} ${res.text}`);
  return (JSON.parse(res.text) as WireServiceList).services;
}

/** The machine where `unit` is active. */
async function activeMachine(unit: string): Promise<Machine> {
  return machineByID(cluster, await waitFor(`${unit} active`, () => etcd.activeOn(unit), 60_000));
}

const node = (m: Machine) => `${m.id.slice(0, 8)}.node.flotilla.`;
const record = (m: Machine, unit: string): WireService => ({
  service: "web",
  machineID: m.id,
  unit,
  ip: m.ip,
  ports: [{ container: 80, host: PORT, protocol: "tcp" }],
});
const byUnit = (a: WireService, b: WireService) => (a.unit < b.unit ? -1 : 1);

beforeAll(async () => {
  const { archive } = await buildTestImage();
  cluster = await Cluster.start({ machines: 3 });
  etcd = new EtcdView(cluster.endpoint);
  registry = await startRegistry({ listenAddress: `${cluster.bridge.ip}:0` });
  await pushImage(archive, registry.url, "flotilla/busybox:latest");
  // Provisioning: the registry serves plain HTTP. The image is pulled in advance on every
  // machine, so that a moved unit starts without a pull.
  await Promise.all(
    cluster.machines.map((m) =>
      sh(
        m,
        `echo 'FLOTILLA_INSECURE_REGISTRIES="${registry.host}"' >> /etc/flotilla/agent.env && ` +
          "systemctl restart flotilla-agent.service && " +
          `podman pull -q ${registry.host}/flotilla/busybox:latest`,
      ),
    ),
  );
  await waitForMembers(fc, etcd, 3);
}, 300_000);

afterAll(async () => {
  etcd?.close();
  await registry?.stop();
  await cluster?.teardown();
}, 120_000);

afterEach(async () => {
  await destroyAllUnits(fc);
  await waitFor(
    "no service record and no container left",
    async () => {
      if ((await services(running()[0] as Machine)).length > 0) return false;
      for (const m of running()) if ((await sh(m, "podman ps -a -q")).trim() !== "") return false;
      return true;
    },
    60_000,
    500,
  );
}, 120_000);

describe("service discovery", () => {
  it("records appear on start and go on stop; dig from another machine and containers see the live instances", async () => {
    const start = await fc(["start", "web@1.service", "web@2.service"], { "web@.service": template() });
    expect(start.code, start.stderr).toBe(0);
    const a = await activeMachine("web@1.service");
    const b = await activeMachine("web@2.service");
    const other = cluster.machines.find((m) => m !== a && m !== b) as Machine;
    expect(new Set([a, b, other]).size).toBe(3);

    // The API of a machine that runs neither instance, and fleetctl.
    const both = [record(a, "web@1.service"), record(b, "web@2.service")];
    await waitFor(
      "both records on the third machine",
      async () => JSON.stringify((await services(other, "web")).sort(byUnit)) === JSON.stringify(both),
      20_000,
    );
    const table = await fleetctl(other.apiURL, [
      "list-services",
      "--no-legend",
      "--fields=service,unit,ip,ports",
    ]);
    expect(table.stdout.split("\n").filter(Boolean)).toEqual([
      `web\tweb@1.service\t${a.ip}\t${PORT}->80/tcp`,
      `web\tweb@2.service\t${b.ip}\t${PORT}->80/tcp`,
    ]);

    // dig from the third machine, asking each agent (both answer for the whole cluster).
    for (const server of [a, other]) {
      expect(await dig(other, server, "web.service.flotilla", "A")).toEqual([a.ip, b.ip].sort());
      expect(await dig(other, server, "web.service.flotilla", "SRV")).toEqual(
        [`1 1 ${PORT} ${node(a)}`, `1 1 ${PORT} ${node(b)}`].sort(),
      );
    }
    expect(await dig(other, b, node(a).slice(0, -1), "A")).toEqual([a.ip]);

    // A container on the third machine resolves the name through its machine's agent, and
    // reaches the service by it. (Not from inside an instance: a container reaching its own
    // published port through the machine's address gets no answer under netavark.)
    const client = [
      "[Container]",
      `Image=${registry.host}/flotilla/busybox:latest`,
      "Exec=sleep 1000",
      "PodmanArgs=--init",
      "",
      "[X-Fleet]",
      `MachineID=${other.id}`,
      "",
    ].join("\n");
    expect((await fc(["start", "client.service"], { "client.service": client })).code).toBe(0);
    const lookup = await sh(other, "podman exec systemd-client nslookup web.service.flotilla");
    expect(lookup).toContain(`Server:\t\t${other.ip}`);
    expect(lookup).toContain(`Address: ${a.ip}`);
    expect(lookup).toContain(`Address: ${b.ip}`);
    expect(
      await sh(other, `podman exec systemd-client wget -q -O - http://web.service.flotilla:${PORT}/`),
    ).toBe(TEST_IMAGE_INDEX_HTML);

    // Stop one instance: its record goes, everywhere.
    const stop = await fc(["stop", "web@2.service"]);
    expect(stop.code, stop.stderr).toBe(0);
    await waitFor(
      "web@2's record gone",
      async () =>
        JSON.stringify(await services(other, "web")) === JSON.stringify([record(a, "web@1.service")]),
      20_000,
    );
    expect(await dig(other, b, "web.service.flotilla", "A")).toEqual([a.ip]);
    expect(await dig(other, other, "web.service.flotilla", "SRV")).toEqual([`1 1 ${PORT} ${node(a)}`]);
  });

  it("after its machine is killed, the unit runs elsewhere and its record follows within TTL + 5 s", async () => {
    const start = await fc(["start", "web@1.service"], { "web@.service": template() });
    expect(start.code, start.stderr).toBe(0);
    const victim = await activeMachine("web@1.service");
    const [watcher, asker] = cluster.machines.filter((m) => m !== victim) as [Machine, Machine];
    await waitFor(
      "the record on the victim",
      async () => (await services(watcher, "web"))[0]?.machineID === victim.id,
      20_000,
    );

    const t0 = Date.now();
    await victim.kill();
    const moved = await waitFor(
      "web@1's record on a surviving machine, and none on the dead one",
      async () => {
        const now = await services(watcher, "web");
        return now.length === 1 && now[0]?.machineID !== victim.id ? (now[0] as WireService) : undefined;
      },
      TTL_MS + 5000,
      100,
    );
    const elapsed = Date.now() - t0;
    console.log(
      `machine loss: web@1's record points at its new machine ${elapsed} ms after the machine died`,
    );
    const to = machineByID(cluster, moved.machineID);
    expect(moved).toEqual(record(to, "web@1.service"));
    expect(await etcd.activeOn("web@1.service")).toBe(to.id);

    // Every surviving agent answers with the new instance only; it serves the page.
    for (const server of [watcher, asker]) {
      expect(await dig(asker, server, "web.service.flotilla", "A")).toEqual([to.ip]);
      expect(await dig(watcher, server, "web.service.flotilla", "SRV")).toEqual([`1 1 ${PORT} ${node(to)}`]);
    }
    const from = to === watcher ? asker : watcher;
    expect(await sh(from, `curl -sS -m 5 http://${to.ip}:${PORT}/`)).toBe(TEST_IMAGE_INDEX_HTML);
  });
});
