// Containers as units on 3 real machines: real podman pulling from real registries (Debian's
// docker-registry on the cluster bridge, one open and one with htpasswd credentials), the test
// image built from busybox-static. Each test destroys its units, and the cluster is left with no
// container on any machine.
//
// Provisioning, as an operator would do it: every agent gets `insecure-registries` (both
// registries serve plain HTTP) and a registry auth file. The third machine's auth file holds a
// wrong password, so a pull from the private registry fails there.

import { copyFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildTestImage, TEST_IMAGE_INDEX_HTML, TEST_IMAGE_NAME } from "../fixtures/images/build.js";
import { Cluster, type Machine } from "../harness/index.js";
import { pushImage, type Registry, startRegistry } from "../harness/registry.js";
import {
  destroyAllUnits,
  EtcdView,
  fleetctlWith,
  httpRequest,
  machineByID,
  waitFor,
  waitForMembers,
} from "./support.js";

const AUTH = { user: "fleet", password: "s3cret pass" };

let cluster: Cluster;
let etcd: EtcdView;
let open: Registry;
let secured: Registry;
/** Machines sorted by ID: [0] and [1] hold the right credentials, [2] a wrong password. */
let machines: Machine[];
let archive: string;

const api = () => (machines.find((m) => m.running) as Machine).apiURL;
const fc = (args: string[], files: Record<string, string> = {}) => fleetctlWith(api(), args, files);
const openImage = () => `${open.host}/flotilla/busybox:latest`;
const privateImage = () => `${secured.host}/flotilla/private:latest`;

/** A [Container] unit; `--init` so that a stop takes well under a second (docs/containers.md). */
function containerUnit(container: string, extra: { unit?: string; service?: string; xfleet?: string } = {}) {
  return [
    extra.unit ? `[Unit]\n${extra.unit}\n` : "",
    `[Container]\n${container}\nPodmanArgs=--init\n`,
    extra.service ? `[Service]\n${extra.service}\n` : "",
    extra.xfleet ? `[X-Fleet]\n${extra.xfleet}\n` : "",
  ]
    .filter(Boolean)
    .join("\n");
}

const httpd = (port: number) => `Exec=httpd -f -p ${port} -h /var/www`;

async function sh(m: Machine, script: string): Promise<string> {
  const r = await m.exec(["sh", "-c", script], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${m.name}: ${script}: exit ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Names of all containers on the machine, running or not. */
async function containers(m: Machine): Promise<string[]> {
  return (await sh(m, "podman ps -a --format '{{.Names}}'")).split("\n").filter(Boolean).sort();
}

async function activeMachine(unit: string): Promise<Machine> {
  const id = await waitFor(`${unit} active`, () => etcd.activeOn(unit), 60_000);
  return machineByID(cluster, id);
}

/** GET http://ip:port/ from machine `from`. */
async function fetchFrom(from: Machine, ip: string, port: number): Promise<string> {
  return sh(from, `curl -sS -m 5 http://${ip}:${port}/`);
}

beforeAll(async () => {
  archive = (await buildTestImage()).archive;
  cluster = await Cluster.start({ machines: 3 });
  etcd = new EtcdView(cluster.endpoint);
  machines = [...cluster.machines].sort((a, b) => (a.id < b.id ? -1 : 1));
  open = await startRegistry({ listenAddress: `${cluster.bridge.ip}:0` });
  secured = await startRegistry({ listenAddress: `${cluster.bridge.ip}:0`, auth: AUTH });
  await pushImage(archive, open.url, "flotilla/busybox:latest");
  await pushImage(archive, secured.url, "flotilla/private:latest", AUTH);

  const credentials = (password: string) =>
    JSON.stringify({
      auths: { [secured.host]: { auth: Buffer.from(`${AUTH.user}:${password}`).toString("base64") } },
    });
  await Promise.all(
    machines.map(async (m, i) => {
      const auth = credentials(i === 2 ? "wrong password" : AUTH.password);
      await sh(
        m,
        [
          `echo 'FLOTILLA_INSECURE_REGISTRIES="${open.host},${secured.host}"' >> /etc/flotilla/agent.env`,
          `printf '%s' '${auth}' > /etc/flotilla/registry-auth.json`,
          "systemctl restart flotilla-agent.service",
        ].join(" && "),
      );
    }),
  );
  await waitForMembers(fc, etcd, 3);
}, 300_000);

afterAll(async () => {
  etcd?.close();
  await open?.stop();
  await secured?.stop();
  await cluster?.teardown();
}, 120_000);

afterEach(async () => {
  await destroyAllUnits(fc);
  // Nothing may be left behind: the next test starts from machines without containers.
  await waitFor(
    "no container left on any machine",
    async () => (await Promise.all(machines.map(containers))).every((c) => c.length === 0),
    60_000,
    500,
  );
}, 120_000);

describe("a container unit", () => {
  it("serves its published port to another machine, runs in the unit's cgroup, and leaves nothing after stop", async () => {
    const text = containerUnit(`Image=${openImage()}\n${httpd(80)}\nPublishPort=8080:80`, {
      unit: "Description=web server",
      service: "MemoryMax=64M",
    });
    const start = await fc(["start", "web.service"], { "web.service": text });
    expect(start.code, start.stderr).toBe(0);
    const on = await activeMachine("web.service");
    const other = machines.find((m) => m !== on) as Machine;
    expect(await fetchFrom(other, on.ip, 8080)).toBe(TEST_IMAGE_INDEX_HTML);

    // fleetctl cat shows the unit as written, not the rendered service.
    expect((await fc(["cat", "web.service"])).stdout).toBe(text);
    expect(await containers(on)).toEqual(["systemd-web"]);
    expect(await sh(on, "podman inspect --format '{{.State.CgroupPath}}' systemd-web")).toMatch(
      /^\/system\.slice\/web\.service\//,
    );
    // Set on the unit; not enforced in these machines (docs/containers.md).
    expect((await sh(on, "systemctl show -p MemoryMax --value web.service")).trim()).toBe(String(64 << 20));

    const stop = await fc(["stop", "web.service"]);
    expect(stop.code, stop.stderr).toBe(0);
    await waitFor(
      "web.service inactive",
      async () => (await sh(on, "systemctl is-active web.service || true")).trim() === "inactive",
      30_000,
    );
    expect(await containers(on)).toEqual([]);
    await expect(fetchFrom(other, on.ip, 8080)).rejects.toThrow();
  });
});

describe("units as on CoreOS, and [Service] settings", () => {
  it("a plain unit whose ExecStart runs podman run works unchanged", async () => {
    const m = machines[1] as Machine;
    const text = [
      "[Service]",
      "ExecStartPre=-/usr/bin/podman rm -f plain",
      `ExecStart=/usr/bin/podman run --rm --init --name plain -p 8083:80 ${openImage()} httpd -f -p 80 -h /var/www`,
      "ExecStop=/usr/bin/podman stop plain",
      // As CoreOS units did with docker rm: a stop's SIGTERM to the unit's processes can cut
      // podman's own --rm removal short, leaving the container in state "Removing".
      "ExecStopPost=-/usr/bin/podman rm -f plain",
      "",
      "[X-Fleet]",
      `MachineID=${m.id}`,
      "",
    ].join("\n");
    const start = await fc(["start", "plain.service"], { "plain.service": text });
    expect(start.code, start.stderr).toBe(0);
    await waitFor(
      "plain.service serving",
      () => fetchFrom(machines[0] as Machine, m.ip, 8083).then((body) => body === TEST_IMAGE_INDEX_HTML),
      30_000,
      500,
    );
    expect(await sh(m, "systemctl show -p ExecStart --value plain.service")).toContain(
      "podman run --rm --init",
    );
  });

  it("Restart= restarts the unit when its container dies", async () => {
    const text = containerUnit(`Image=${openImage()}\nExec=sleep 1000`, {
      service: "Restart=always\nRestartSec=1",
    });
    expect((await fc(["start", "restarting.service"], { "restarting.service": text })).code).toBe(0);
    const on = await activeMachine("restarting.service");
    const invocation = () =>
      sh(on, "systemctl show -p InvocationID --value restarting.service").then((s) => s.trim());
    const before = await invocation();
    await sh(on, "podman kill --signal=KILL systemd-restarting");
    await waitFor(
      "restarting.service started again by systemd",
      async () =>
        (await invocation()) !== before &&
        (await sh(on, "systemctl is-active restarting.service || true")).trim() === "active",
      30_000,
      500,
    );
    expect(await containers(on)).toEqual(["systemd-restarting"]);
  });
});

describe("network modes, as in Docker", () => {
  it("bridge: own namespace and a working published port; host: the machine's; none: loopback only; container:NAME: NAME's", async () => {
    const target = machines[0] as Machine;
    const pin = `MachineID=${target.id}`;
    const files = {
      "netbase.service": containerUnit(
        `Image=${openImage()}\nContainerName=netbase\n${httpd(80)}\nPublishPort=8081:80`,
        { xfleet: pin },
      ),
      "nethost.service": containerUnit(`Image=${openImage()}\nNetwork=host\nExec=sleep 1000`, {
        xfleet: pin,
      }),
      "netnone.service": containerUnit(`Image=${openImage()}\nNetwork=none\nExec=sleep 1000`, {
        xfleet: pin,
      }),
      "netjoin.service": containerUnit(`Image=${openImage()}\nNetwork=container:netbase\nExec=sleep 1000`, {
        unit: "After=netbase.service\nBindsTo=netbase.service",
        xfleet: "MachineOf=netbase.service",
      }),
    };
    const start = await fc(["start", ...Object.keys(files)], files);
    expect(start.code, start.stderr).toBe(0);
    for (const unit of Object.keys(files)) expect(await activeMachine(unit)).toBe(target);

    const netns = (container?: string) =>
      sh(
        target,
        container ? `podman exec ${container} readlink /proc/1/ns/net` : "readlink /proc/1/ns/net",
      ).then((s) => s.trim());
    const links = async (container: string) =>
      (await sh(target, `podman exec ${container} ip -o link`))
        .split("\n")
        .filter(Boolean)
        .map((l) => (l.split(": ")[1] ?? "").replace(/@.*/, ""))
        .sort();
    const machineNetns = await netns();

    // bridge
    expect(await netns("netbase")).not.toBe(machineNetns);
    expect(await links("netbase")).toEqual(["eth0", "lo"]);
    expect(await fetchFrom(machines[1] as Machine, target.ip, 8081)).toBe(TEST_IMAGE_INDEX_HTML);
    // host
    expect(await netns("systemd-nethost")).toBe(machineNetns);
    expect(await links("systemd-nethost")).toContain("host0");
    expect(await sh(target, "podman exec systemd-nethost ip -o -4 addr show dev host0")).toContain(
      ` ${target.ip}/`,
    );
    // none
    expect(await links("systemd-netnone")).toEqual(["lo"]);
    // container:NAME — the same namespace, so NAME's server answers on the joiner's loopback.
    expect(await netns("systemd-netjoin")).toBe(await netns("netbase"));
    expect(await sh(target, "podman exec systemd-netjoin ip -o -4 addr show dev eth0")).toBe(
      await sh(target, "podman exec netbase ip -o -4 addr show dev eth0"),
    );
    expect(await sh(target, "podman exec systemd-netjoin wget -q -O - http://127.0.0.1:80/")).toBe(
      TEST_IMAGE_INDEX_HTML,
    );
  });
});

describe("volumes, environment and command", () => {
  it("a named volume keeps its data across a restart of the unit", async () => {
    const text = containerUnit(
      `Image=${openImage()}\nVolume=flotilla-test-data:/data\nExec=sh -c 'echo run >> /data/runs; exec sleep 1000'`,
    );
    expect((await fc(["start", "vol.service"], { "vol.service": text })).code).toBe(0);
    const on = await activeMachine("vol.service");
    const runs = () => sh(on, "podman exec systemd-vol cat /data/runs").catch(() => "");
    await waitFor("the first run recorded", async () => (await runs()) === "run\n", 30_000);
    const before = (await sh(on, "systemctl show -p InvocationID --value vol.service")).trim();

    const restart = await fc(["restart", "vol.service"]);
    expect(restart.code, restart.stderr).toBe(0);
    await waitFor(
      "vol.service running again",
      async () => {
        const now = (await sh(on, "systemctl show -p InvocationID --value vol.service")).trim();
        return (
          now !== before && (await sh(on, "systemctl is-active vol.service || true")).trim() === "active"
        );
      },
      60_000,
    );
    await waitFor("both runs in the volume", async () => (await runs()) === "run\nrun\n", 30_000);
    expect(await etcd.activeOn("vol.service")).toBe(on.id);
    // Only named volumes outlive the container; the machine is cleaned for the next test.
    await fc(["destroy", "vol.service"]);
    await waitFor("vol.service's container gone", async () => (await containers(on)).length === 0, 30_000);
    await sh(on, "podman volume rm flotilla-test-data");
  });

  it("Environment= and Exec= reach the container's process, literally", async () => {
    const text = containerUnit(
      [
        `Image=${openImage()}`,
        'Environment=GREETING="hello world" MODE=production',
        "Environment=PRICE=$5",
        `Exec=sh -c 'echo "greeting=$GREETING mode=$MODE price=$PRICE user=$(id -un)"; exec sleep 1000'`,
        "User=www-data",
      ].join("\n"),
    );
    expect((await fc(["start", "env.service"], { "env.service": text })).code).toBe(0);
    await activeMachine("env.service");
    const line = "greeting=hello world mode=production price=$5 user=www-data";
    const journal = await waitFor(
      "the container's output in the unit's journal",
      async () => {
        const r = await fc(["journal", "--lines=50", "env.service"]);
        return r.stdout.includes(line) ? r.stdout : undefined;
      },
      30_000,
      500,
    );
    expect(journal).toMatch(/ env\[\d+\]: greeting=hello world mode=production price=\$5 user=www-data/);
  });
});

describe("images", () => {
  it("pulls from an open registry and, with the agent's credentials, from a private one", async () => {
    const [m1, m2] = machines as [Machine, Machine];
    const files = {
      "open.service": containerUnit(`Image=${openImage()}\nPull=always\nExec=sleep 1000`, {
        xfleet: `MachineID=${m1.id}`,
      }),
      "private.service": containerUnit(`Image=${privateImage()}\nPull=always\nExec=sleep 1000`, {
        xfleet: `MachineID=${m2.id}`,
      }),
    };
    const start = await fc(["start", ...Object.keys(files)], files);
    expect(start.code, start.stderr).toBe(0);
    expect(await activeMachine("open.service")).toBe(m1);
    expect(await activeMachine("private.service")).toBe(m2);
    expect(await sh(m2, "podman images --format '{{.Repository}}:{{.Tag}}'")).toContain(privateImage());
  });

  it("a wrong credential fails the unit with the registry's reason in fleetctl status, and nothing runs", async () => {
    const bad = machines[2] as Machine;
    const text = containerUnit(`Image=${privateImage()}\nPull=always\nExec=sleep 1000`, {
      xfleet: `MachineID=${bad.id}`,
    });
    const start = await fc(["start", "--block-attempts=3", "private.service"], { "private.service": text });
    expect(start.code).toBe(1);
    expect(start.stderr).toContain("private.service to report active state (systemd: loaded/failed/failed)");
    const status = await fc(["status", "private.service"]);
    expect(status.code).not.toBe(0);
    expect(status.stdout).toContain("Active: failed");
    expect(status.stdout).toContain(
      `Error: initializing source docker://${privateImage()}: reading manifest latest in ${secured.host}/flotilla/private: unauthorized: authentication required`,
    );
    expect(await containers(bad)).toEqual([]);
    expect((await fc(["list-services", "--no-legend"])).stdout).toBe("");
  });

  it("runs an image imported from a local archive, without a registry", async () => {
    const m = machines[1] as Machine;
    // The machine's root is an overlay mounted under the run directory (its /tmp is a tmpfs).
    await copyFile(archive, path.join(cluster.runDir, m.name, "merged", "var", "tmp", "busybox.oci.tar"));
    await sh(m, "podman load -q -i /var/tmp/busybox.oci.tar && rm /var/tmp/busybox.oci.tar");
    const text = containerUnit(`Image=${TEST_IMAGE_NAME}\nPull=never\n${httpd(8082)}\nNetwork=host`, {
      xfleet: `MachineID=${m.id}`,
    });
    expect((await fc(["start", "local.service"], { "local.service": text })).code).toBe(0);
    expect(await fetchFrom(machines[0] as Machine, m.ip, 8082)).toBe(TEST_IMAGE_INDEX_HTML);
  });
});

describe("bad input", () => {
  it.each([
    ["noimage.service", "Exec=sleep 1000", "noimage.service: [Container] has no Image="],
    [
      "badnet.service",
      "Image=IMAGE\nNetwork=bridged",
      'badnet.service: [Container] Network=bridged: unknown network mode "bridged"',
    ],
    [
      "badport.service",
      "Image=IMAGE\nPublishPort=80:http",
      'badport.service: [Container] PublishPort=80:http: container port "http" is not a port number',
    ],
  ])("%s is refused at submit, and nothing is stored or started", async (name, container, message) => {
    const text = `[Container]\n${container.replace("IMAGE", openImage())}\n`;
    const r = await fc(["start", name], { [name]: text });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^Error creating units: /);
    expect(r.stderr).toContain("googleapi: Error 400: invalid unit options: ");
    expect(r.stderr).toContain(message);
    expect((await fc(["list-unit-files", "--no-legend"])).stdout).toBe("");
    // Straight to the API too: 400 with the same message.
    const res = await httpRequest("PUT", api(), `/fleet/v1/units/${name}`, {
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        desiredState: "launched",
        options: [{ section: "Container", name: "Network", value: "bridged" }],
      }),
    });
    expect(res.status).toBe(400);
    expect((JSON.parse(res.text) as { error: { message: string } }).error.message).toContain(
      "[Container] has no Image=",
    );
  });

  it("an image that does not exist fails the unit with podman's reason, and nothing runs", async () => {
    const m = machines[0] as Machine;
    const text = containerUnit(`Image=${open.host}/flotilla/nope:latest\nExec=sleep 1000`, {
      xfleet: `MachineID=${m.id}`,
    });
    const start = await fc(["start", "--block-attempts=3", "missing.service"], { "missing.service": text });
    expect(start.code).toBe(1);
    const status = await fc(["status", "missing.service"]);
    expect(status.stdout).toContain("Active: failed");
    expect(status.stdout).toContain(
      `reading manifest latest in ${open.host}/flotilla/nope: manifest unknown`,
    );
    expect(await containers(m)).toEqual([]);
    expect((await fc(["list-services", "--no-legend"])).stdout).toBe("");
  });
});
