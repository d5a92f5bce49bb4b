// A cluster from the image alone, as an operator deploys it (docs/deploy.md): three QEMU VMs (TCG)
// boot copy-on-write overlays of disk.qcow2 with Ignition configs that make them a 3-member etcd
// cluster (the image's etcd-member.service, TLS from the cluster PKI) and point their agents at it.
// The host runs only QEMU, a registry (Debian's docker-registry) and a release channel; the VMs sit
// on a private bridge through tap devices, with static addresses.
//
// One cluster, one boot of it, steps in order: fleetctl on the host submits a [Container] unit
// pulled from the registry; the VM running it is powered off (QEMU killed: the plug pulled), the
// unit moves, etcd keeps quorum and `dig` on a survivor follows NAME.service.flotilla; the VM boots
// again and rejoins; then a release is published and the three update one at a time under the
// etcd reboot lock. The figures (boot, failover, rolling update) are printed for docs/deploy.md.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UpdateStatus } from "../../agent/update/records.js";
import {
  buildVariant,
  ensureImage,
  IMAGE_DIR,
  REPO,
  readManifest,
  variantDirs,
} from "../../scripts/lib/image-build.js";
import { Vm } from "../../scripts/lib/image-vm.js";
import { makeRelease } from "../../scripts/lib/release.js";
import { buildTestImage, TEST_IMAGE_INDEX_HTML } from "../fixtures/images/build.js";
import { ChannelServer } from "../harness/channel-server.js";
import { type Bridge, createBridge } from "../harness/cluster.js";
import { harnessPki, type TlsFiles } from "../harness/index.js";
import { runOk } from "../harness/proc.js";
import { pushImage, startRegistry } from "../harness/registry.js";
import { Run } from "../harness/run.js";
import { EtcdView, fleetctl, fleetctlWith, waitFor } from "./support.js";
import { bump, type DownSpan, downSpans, maxHolders, overlapping, recordChanges } from "./update-cluster.js";
import { BOOT_MS, VM_POLL_MS } from "./vm-support.js";

const KEY = join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pem");
const NODES = 3;
const UNIT = "web.service";

const dataUrl = (s: string) => `data:;base64,${Buffer.from(s).toString("base64")}`;
const seconds = (ms: number) => Math.round(ms / 1000);

interface Node {
  name: string;
  ip: string;
  tap: string;
  mac: string;
  disk: string;
  ignition: string;
  vm: Vm;
  machineId: string;
}

let run: Run;
let bridge: Bridge;
let work: string;
let sshKey: string;
let server: ChannelServer;
let etcd: EtcdView;
let nodes: Node[] = [];
let v2: string;
let registryHost: string;
/** Every VM ever started (a rebooted node gets a new Vm), for teardown and logs. */
const started: Vm[] = [];
const figures: Record<string, string> = {};

const sh = (n: Node, cmd: string) => n.vm.ssh(sshKey, "core", cmd).trim();
const endpointOf = (n: Node) => `https://${n.ip}:7480`;
/**
 * fleetctl's 3 s default request timeout is for machines at full speed: under TCG on a loaded box
 * an agent's etcd write took longer (the unit was created, fleetctl had given up), so allow 30 s.
 */
const SLOW = "--request-timeout=30";
const byMachine = (id: string | undefined) => nodes.find((n) => n.machineId === id);

/** etcdctl on the host against `nodes`, with the admin certificate (etcd only checks the CA). */
function etcdctl(targets: readonly Node[], args: string[]): string {
  const { ca, cert, key } = harnessPki().admin;
  return execFileSync(
    "etcdctl",
    [
      `--endpoints=${targets.map((n) => `https://${n.ip}:2379`).join(",")}`,
      `--cacert=${ca}`,
      `--cert=${cert}`,
      `--key=${key}`,
      "--command-timeout=10s",
      ...args,
    ],
    { encoding: "utf8", env: { ...process.env, ETCDCTL_API: "3" }, stdio: ["ignore", "pipe", "pipe"] },
  );
}

/** Whether every one of `targets` answers as a healthy etcd member. */
function healthy(targets: readonly Node[]): boolean {
  try {
    etcdctl(targets, ["endpoint", "health"]);
    return true;
  } catch {
    return false;
  }
}

/** The started members' names, from the cluster's own member list. */
function members(via: readonly Node[]): string[] {
  const list = JSON.parse(etcdctl(via, ["member", "list", "-w", "json"])) as {
    members: { name?: string }[];
  };
  return list.members.map((m) => m.name ?? "").sort();
}

/** What a node's agent DNS answers for the unit's A record. */
function dig(n: Node): string[] {
  return sh(n, `dig +short +time=2 +tries=1 @127.0.0.1 ${UNIT.replace(/\.service$/, "")}.service.flotilla A`)
    .split("\n")
    .filter(Boolean);
}

function ignition(
  n: Omit<Node, "vm" | "machineId" | "ignition">,
  all: readonly { name: string; ip: string }[],
) {
  const tls: TlsFiles = harnessPki().machine(n.name, [n.ip, "127.0.0.1"], join(work, "tls"));
  const file = (path: string, contents: string, mode = 0o644) => ({
    path,
    mode,
    contents: { source: dataUrl(contents) },
  });
  const peers = all.map((p) => `${p.name}=https://${p.ip}:2380`).join(",");
  const etcdEnv = [
    `ETCD_NAME=${n.name}`,
    `ETCD_INITIAL_CLUSTER=${peers}`,
    "ETCD_INITIAL_CLUSTER_STATE=new",
    "ETCD_INITIAL_CLUSTER_TOKEN=flotilla-selfhost-test",
    `ETCD_LISTEN_PEER_URLS=https://${n.ip}:2380`,
    `ETCD_INITIAL_ADVERTISE_PEER_URLS=https://${n.ip}:2380`,
    `ETCD_LISTEN_CLIENT_URLS=https://${n.ip}:2379,https://127.0.0.1:2379`,
    `ETCD_ADVERTISE_CLIENT_URLS=https://${n.ip}:2379`,
    "",
  ].join("\n");
  const agent = {
    "etcd-endpoints": all.map((p) => `https://${p.ip}:2379`).join(","),
    "public-ip": n.ip,
    "api-listen": "0.0.0.0:7480",
    // The registry serves plain HTTP on the private bridge.
    "insecure-registries": registryHost,
    "update-channel-url": `http://${bridge.ip}:${server.port}/stable`,
    "update-interval-seconds": 10,
    "health-soak-seconds": 10,
    "health-settle-seconds": 60,
  };
  const network = `[Match]\nMACAddress=${n.mac}\n\n[Network]\nAddress=${n.ip}/${bridge.prefixLength}\n`;
  const config = {
    ignition: { version: "3.4.0" },
    passwd: {
      users: [
        {
          name: "core",
          sshAuthorizedKeys: [readFileSync(`${sshKey}.pub`, "utf8").trim()],
          groups: ["systemd-journal"],
        },
      ],
    },
    storage: {
      files: [
        file("/etc/hostname", `${n.name}\n`),
        // Sorts before the image's 80-dhcp.network, so this link takes the static address.
        file("/etc/systemd/network/10-cluster.network", network),
        file("/etc/flotilla/etcd-member.env", etcdEnv),
        file("/etc/flotilla/agent.json", JSON.stringify(agent)),
        file("/etc/flotilla/tls/ca.pem", readFileSync(tls.ca, "utf8")),
        file("/etc/flotilla/tls/machine.pem", readFileSync(tls.cert, "utf8")),
        file("/etc/flotilla/tls/machine-key.pem", readFileSync(tls.key, "utf8"), 0o600),
      ],
    },
    systemd: { units: [{ name: "etcd-member.service", enabled: true }] },
  };
  const path = join(work, `${n.name}.ign`);
  writeFileSync(path, JSON.stringify(config));
  return path;
}

async function boot(n: Node): Promise<Vm> {
  const vm = new Vm({
    disk: n.disk,
    stateDir: join(work, `${n.name}-${started.length}`),
    cpus: 1,
    ignition: n.ignition,
    tap: { name: n.tap, mac: n.mac, address: n.ip },
  });
  started.push(vm);
  await vm.start();
  n.vm = vm;
  return vm;
}

function status(id: string, raw: string | null): UpdateStatus | undefined {
  if (raw === null) return undefined;
  const s = JSON.parse(raw) as UpdateStatus;
  return s.machineId === id ? s : undefined;
}

beforeAll(async () => {
  ensureImage();
  v2 = bump(readManifest().version, 1);
  // The same variant update-e2e builds (the vm tier runs its files one after another).
  buildVariant({ ...variantDirs(v2), version: v2 });
  const image = await buildTestImage();
  work = mkdtempSync(join(tmpdir(), "flotilla-selfhost-"));
  sshKey = join(work, "id_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", sshKey]);
  run = Run.create();
  bridge = await createBridge(run);
  const registry = await startRegistry({ listenAddress: `${bridge.ip}:5000`, run });
  registryHost = registry.host;
  await pushImage(image.archive, registry.url, "flotilla/web:latest");
  mkdirSync(join(work, "channels"), { recursive: true });
  server = await ChannelServer.start(join(work, "channels"));

  const base = bridge.ip.replace(/\.1$/, "");
  const plan = Array.from({ length: NODES }, (_, i) => ({
    name: `node-${i + 1}`,
    ip: `${base}.${11 + i}`,
    tap: `${run.id}t${i + 1}`,
    mac: `52:54:00:f1:07:${(0x11 + i).toString(16)}`,
    disk: join(work, `node-${i + 1}.qcow2`),
  }));
  for (const p of plan) {
    // Persistent taps on the bridge: a node powered off and booted again gets the same link.
    run.trackBridge(p.tap);
    await runOk("ip", ["tuntap", "add", "dev", p.tap, "mode", "tap"]);
    await runOk("ip", ["link", "set", p.tap, "master", bridge.name, "up"]);
    execFileSync("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-F",
      "qcow2",
      "-b",
      join(IMAGE_DIR, "disk.qcow2"),
      p.disk,
    ]);
  }
  nodes = plan.map((p) => ({
    ...p,
    ignition: ignition(p, plan),
    vm: undefined as unknown as Vm,
    machineId: "",
  }));
  etcd = new EtcdView(nodes.map((n) => `https://${n.ip}:2379`));
}, 20 * 60_000);

afterAll(async () => {
  const logs = join(REPO, ".cache/image/test-logs");
  mkdirSync(logs, { recursive: true });
  for (const vm of started) {
    await vm.kill();
    try {
      writeFileSync(join(logs, `selfhost-${vm.opts.stateDir.split("/").pop()}.log`), vm.serial());
    } catch {}
  }
  etcd?.close();
  await server?.close();
  await run?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
  console.log(`[selfhost] figures: ${JSON.stringify(figures)}`);
}, 120_000);

describe.sequential("a 3-VM cluster from the image alone", () => {
  it(
    "boots three VMs that form their own etcd cluster over TLS, with every agent joined",
    async () => {
      const t0 = Date.now();
      // In parallel: TCG keeps a core busy per VM, and etcd needs a majority up to start.
      await Promise.all(nodes.map((n) => boot(n)));
      await Promise.all(nodes.map((n) => n.vm.waitForSsh(sshKey, "core", 2 * BOOT_MS)));
      for (const n of nodes) n.machineId = sh(n, "cat /etc/machine-id");
      await waitFor("all three etcd members healthy", async () => healthy(nodes), BOOT_MS, VM_POLL_MS);
      expect(members(nodes)).toEqual(nodes.map((n) => n.name));
      // The members serve clients only with a certificate from the cluster CA.
      expect(() =>
        execFileSync(
          "etcdctl",
          [`--endpoints=https://${nodes[0]?.ip}:2379`, `--cacert=${harnessPki().ca.cert}`, "get", "x"],
          {
            env: { ...process.env, ETCDCTL_API: "3" },
            stdio: ["ignore", "pipe", "pipe"],
            timeout: 30_000,
          },
        ),
      ).toThrow();
      for (const n of nodes) expect(sh(n, "systemctl is-active etcd-member.service")).toBe("active");
      const listed = await waitFor(
        "three machines listed",
        async () => {
          const r = await fleetctl(endpointOf(nodes[0] as Node), [
            SLOW,
            "list-machines",
            "--no-legend",
            "--full",
          ]);
          return r.code === 0 && nodes.every((n) => r.stdout.includes(n.machineId)) ? r.stdout : undefined;
        },
        BOOT_MS,
        VM_POLL_MS,
      );
      for (const n of nodes) expect(listed).toContain(n.ip);
      figures.clusterBootSeconds = String(seconds(Date.now() - t0));
      console.log(`[selfhost] 3-member cluster up, agents joined, after ${figures.clusterBootSeconds} s`);
    },
    3 * BOOT_MS,
  );

  let runner: Node;

  it(
    "runs a [Container] unit submitted from the host, pulled from the registry, found by name",
    async () => {
      const unit = [
        "[Unit]",
        "Description=busybox httpd in a container, from the host's registry",
        "",
        "[Container]",
        `Image=${registryHost}/flotilla/web:latest`,
        "Exec=httpd -f -p 8080 -h /var/www",
        "PublishPort=8080:8080",
        "User=65534",
        "PodmanArgs=--init",
        "",
        "[Service]",
        "Restart=on-failure",
        "",
      ].join("\n");
      const r = await fleetctlWith(endpointOf(nodes[0] as Node), [SLOW, "start", "--no-block", UNIT], {
        [UNIT]: unit,
      });
      expect(r.code, r.stderr).toBe(0);
      const id = await waitFor("the unit active", () => etcd.activeOn(UNIT), BOOT_MS, VM_POLL_MS);
      runner = byMachine(id) as Node;
      expect(runner).toBeDefined();
      const page = await waitFor(
        "the container serving on its published port",
        async () => {
          const res = await fetch(`http://${runner.ip}:8080/`, { signal: AbortSignal.timeout(5000) });
          return res.ok ? res.text() : undefined;
        },
        60_000,
        VM_POLL_MS,
      );
      expect(page).toBe(TEST_IMAGE_INDEX_HTML);
      const other = nodes.find((n) => n !== runner) as Node;
      await waitFor(
        "dig on another VM answers the runner",
        async () => dig(other).join() === runner.ip,
        60_000,
        VM_POLL_MS,
      );
    },
    BOOT_MS,
  );

  let survivors: Node[];

  it(
    "moves the unit when its VM is powered off; etcd keeps quorum and dig follows the record",
    async () => {
      survivors = nodes.filter((n) => n !== runner);
      const [a, b] = survivors as [Node, Node];
      const t0 = Date.now();
      await runner.vm.kill();
      const moved = await waitFor(
        "dig on a survivor answering another machine",
        async () => {
          const answer = dig(a);
          return answer.length === 1 && survivors.some((n) => n.ip === answer[0]) ? answer[0] : undefined;
        },
        BOOT_MS,
        1000,
      );
      figures.failoverSeconds = String(seconds(Date.now() - t0));
      console.log(
        `[selfhost] ${runner.name} off; ${UNIT} answered at ${moved} after ${figures.failoverSeconds} s`,
      );
      // Each agent answers from its own view of etcd: the other survivor's follows within moments.
      await waitFor("dig on the other survivor following", async () => dig(b).join() === moved, 30_000, 1000);
      const id = await waitFor("the unit active again", () => etcd.activeOn(UNIT), 120_000, VM_POLL_MS);
      expect(byMachine(id)?.ip).toBe(moved);
      // Quorum: two of three answer and take a write.
      expect(healthy(survivors)).toBe(true);
      expect(healthy([runner])).toBe(false);
      etcdctl(survivors, ["put", "/selfhost-test/quorum", String(Date.now())]);
      const page = await fetch(`http://${moved}:8080/`, { signal: AbortSignal.timeout(5000) }).then((res) =>
        res.text(),
      );
      expect(page).toBe(TEST_IMAGE_INDEX_HTML);
      const listed = await fleetctl(endpointOf(a), [SLOW, "list-machines", "--no-legend", "--full"]);
      expect(listed.stdout).not.toContain(runner.machineId);
    },
    BOOT_MS,
  );

  it(
    "rejoins when the VM boots again: its etcd member and its agent",
    async () => {
      const t0 = Date.now();
      await boot(runner);
      await runner.vm.waitForSsh(sshKey, "core", BOOT_MS);
      // Provisioned once: the second boot keeps what the first wrote, and its machine ID.
      expect(sh(runner, "cat /etc/machine-id")).toBe(runner.machineId);
      await waitFor("three etcd members healthy again", async () => healthy(nodes), BOOT_MS, VM_POLL_MS);
      expect(members(nodes)).toEqual(nodes.map((n) => n.name));
      await waitFor(
        "the machine listed again",
        async () =>
          (
            await fleetctl(endpointOf(runner), [SLOW, "list-machines", "--no-legend", "--full"])
          ).stdout.includes(runner.machineId),
        120_000,
        VM_POLL_MS,
      );
      figures.rejoinSeconds = String(seconds(Date.now() - t0));
      console.log(`[selfhost] ${runner.name} rejoined ${figures.rejoinSeconds} s after its boot began`);
    },
    2 * BOOT_MS,
  );

  it(
    "takes a release one VM at a time under the etcd reboot lock, each booting slot B and blessing it",
    async () => {
      const from = Number((await etcd.client.get("/selfhost-test/quorum").exec()).header.revision);
      const t0 = Date.now();
      await makeRelease({
        payload: join(variantDirs(v2).out, "payload"),
        key: KEY,
        channel: "stable",
        out: join(server.root),
        version: v2,
        log: () => {},
      });
      // Until now the channel had no release, and a failed check waits longer than the interval:
      // ask every machine to check at once, as an operator would.
      const check = await fleetctl(endpointOf(nodes[0] as Node), [SLOW, "update", "check"]);
      expect(check.code, check.stderr).toBe(0);
      let last = "";
      await waitFor(
        `all three on ${v2}, blessed`,
        async () => {
          const all = await Promise.all(
            nodes.map(async (n) =>
              status(n.machineId, await etcd.client.get(etcd.keys.updateStatus(n.machineId)).string()),
            ),
          );
          const now = all
            .map((s, i) => `${nodes[i]?.name}: ${s ? `${s.version} ${s.state}` : "none"}`)
            .join(", ");
          if (now !== last) console.log(`[selfhost] +${seconds(Date.now() - t0)} s ${now}`);
          last = now;
          return all.every((s) => s?.version === v2 && s.state === "blessed");
        },
        NODES * 3 * BOOT_MS,
        VM_POLL_MS,
      );
      figures.rollingUpdateSeconds = String(seconds(Date.now() - t0));
      console.log(`[selfhost] rolling update to ${v2} took ${figures.rollingUpdateSeconds} s`);

      // etcd's history, replayed from before the release: one holder at a time, and no two
      // machines out of service at once.
      const recorder = await recordChanges(etcd, from);
      await new Promise((r) => setTimeout(r, 2000));
      const changes = await recorder.stop();
      expect(maxHolders(etcd.keys, changes, "default")).toBe(1);
      const spans = downSpans(etcd.keys, changes, v2);
      expect([...spans.keys()].sort()).toEqual(nodes.map((n) => n.machineId).sort());
      expect([...spans.values()].every((s: DownSpan) => s.to !== undefined)).toBe(true);
      expect(overlapping([...spans.values()])).toBe(false);

      // Each machine's own view: slot B, the new version, its boot blessed by systemd.
      for (const n of nodes) {
        await n.vm.waitForSsh(sshKey, "core", BOOT_MS);
        expect(sh(n, "cat /proc/cmdline")).toMatch(/PARTLABEL=USR-B /);
        expect(sh(n, ". /usr/lib/os-release; echo $IMAGE_VERSION")).toBe(v2);
        const raw = Buffer.from(
          sh(
            n,
            "base64 -w0 /sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
          ),
          "base64",
        );
        // 4 bytes of attributes, then the entry id in UTF-16LE (with its counter).
        expect(raw.subarray(4).toString("utf16le").replace(/\0+$/, "")).toMatch(
          /^flotilla-b(\+\d+(-\d+)?)?\.conf$/,
        );
        expect(sh(n, "systemctl is-active systemd-bless-boot")).toBe("active");
      }
      const table = await fleetctl(endpointOf(nodes[0] as Node), [SLOW, "update-status"]);
      expect(table.code, table.stderr).toBe(0);
      for (const n of nodes)
        expect(table.stdout).toMatch(
          new RegExp(`${n.machineId.slice(0, 8)}.*\\s${v2.replaceAll(".", "\\.")}\\s+B\\s`),
        );
      // Through it all the cluster kept its members and the unit.
      expect(healthy(nodes)).toBe(true);
      expect(members(nodes)).toEqual(nodes.map((n) => n.name));
      await waitFor("the unit active after the update", () => etcd.activeOn(UNIT), 120_000, VM_POLL_MS);
    },
    NODES * 3 * BOOT_MS + 5 * 60_000,
  );
});
