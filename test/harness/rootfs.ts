import { execFile } from "node:child_process";
import path from "node:path";
import { repoRoot } from "./paths.js";

/**
 * Supplies the read-only base rootfs every machine overlays. Contract: a directory with a bootable
 * systemd userland, dbus, systemd-networkd enabled, podman configured for nspawn (runc, no pids
 * limit), flotilla-agent.service installed and enabled, and directories /usr/lib/flotilla and
 * /etc/flotilla. Everything machine- or harness-specific (machine-id, hostname, address, D-Bus
 * socket for the host, agent.env) is written into each machine's overlay, never into the rootfs.
 */
export type RootfsProvider = () => Promise<string>;

/**
 * The OS image's own userland: the image pipeline's customize stage (`scripts/build-image
 * --rootfs-only`, cached by the hash of its inputs), so machines run the packages, units, /etc
 * defaults and Node the image ships. Disk-only units (provisioning, growroot, health gates) skip
 * themselves in containers (ConditionVirtualization=!container); the harness configures each machine.
 */
export const imageRootfs: RootfsProvider = () =>
  new Promise((resolve, reject) => {
    execFile(
      path.join(repoRoot, "scripts/build-image"),
      // Test machines trust the committed update key, like every test image.
      ["--rootfs-only", "--test-keys"],
      { cwd: repoRoot, encoding: "utf8", maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(
              `scripts/build-image --rootfs-only failed:\n${stderr.split("\n").slice(-20).join("\n")}`,
            ),
          );
        else resolve(stdout.trim().split("\n").pop() as string);
      },
    );
  });
