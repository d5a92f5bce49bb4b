// A RootfsProvider (test/harness/rootfs.ts) backed by the OS image: the customize stage's tree,
// so nspawn machines run the real OS userland (same packages, units, /etc defaults, Node, paths).
// Units that only make sense on a disk (provisioning, growroot, health) skip themselves in
// containers (ConditionVirtualization=!container); the harness configures each machine instead.

import { execFile } from "node:child_process";
import { join } from "node:path";
import { REPO } from "./image-build.js";

export function imageRootfs(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      join(REPO, "scripts/build-image"),
      ["--rootfs-only"],
      { cwd: REPO, encoding: "utf8", maxBuffer: 64 << 20 },
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
}
