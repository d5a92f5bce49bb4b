// The nspawn harness runs the OS image's own userland (the customize stage's tree): machines boot
// it, the disk-only units skip themselves, and the agents register in the harness's etcd.

import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Cluster } from "../harness/index.js";

let cluster: Cluster;

beforeAll(async () => {
  cluster = await Cluster.start({ machines: 2 });
}, 40 * 60_000);

afterAll(async () => {
  await cluster?.teardown();
});

describe("nspawn machines on the image rootfs", () => {
  it("boot the OS userland with the disk-only units skipped", async () => {
    for (const m of cluster.machines) {
      expect((await m.exec(["systemctl", "is-system-running", "--wait"])).stdout.trim()).toMatch(
        /^(running|degraded)$/,
      );
      expect((await m.exec(["grep", "^IMAGE_ID=", "/usr/lib/os-release"])).stdout.trim()).toBe(
        "IMAGE_ID=flotilla",
      );
      for (const unit of ["flotilla-ignition.service", "flotilla-growroot.service"]) {
        const r = await m.exec(["systemctl", "show", "-P", "ConditionResult", unit]);
        expect(r.stdout.trim(), unit).toBe("no");
      }
    }
  }, 120_000);

  it("run the agent, registered in the harness's etcd", async () => {
    const deadline = Date.now() + 90_000;
    let keys: string[] = [];
    while (Date.now() < deadline) {
      keys = execFileSync(
        "etcdctl",
        [
          `--endpoints=${cluster.endpoint}`,
          `--cacert=${cluster.etcd.tlsFiles.ca}`,
          `--cert=${cluster.etcd.tlsFiles.cert}`,
          `--key=${cluster.etcd.tlsFiles.key}`,
          "get",
          "--prefix",
          "--keys-only",
          "/flotilla/machines/",
        ],
        {
          encoding: "utf8",
          env: { ...process.env, ETCDCTL_API: "3" },
        },
      )
        .split("\n")
        .filter(Boolean);
      if (keys.length >= cluster.machines.length) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    for (const m of cluster.machines) {
      expect(keys).toContain(`/flotilla/machines/${m.id}`);
      expect((await m.exec(["systemctl", "is-active", "flotilla-agent.service"])).stdout.trim()).toBe(
        "active",
      );
    }
  }, 120_000);
});
