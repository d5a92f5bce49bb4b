import { defineConfig } from "vitest/config";

// Projects (scripts/test tiers): `unit` is pure logic (no I/O beyond temp files); `machines` boots
// real etcd, systemd-nspawn machines and podman; `vm` boots the disk image in QEMU. Within a project
// files run one after another (their timing assertions assume a quiet box, and the image's variants
// are rebuilt in place); scripts/test runs `machines` and `vm` side by side, the VMs niced.
const vmFiles = [
  "test/integration/image-boot.test.ts",
  "test/integration/update-e2e.test.ts",
  // Builds against the main image cache and re-checks dist/image, which the VM files read.
  "test/integration/image-build.test.ts",
];

// Three VMs hosting their own etcd cluster, end to end (25–30 min under TCG on 2 cores): its own
// tier, run on request, until it fits the suite's 45-minute budget (docs/deploy.md).
const selfhostFiles = ["test/integration/selfhost.test.ts"];

const integration = { fileParallelism: false, testTimeout: 120_000, hookTimeout: 300_000 };

export default defineConfig({
  test: {
    projects: [
      { test: { name: "unit", include: ["test/unit/**/*.test.ts"] } },
      {
        test: {
          name: "machines",
          include: ["test/integration/**/*.test.ts"],
          exclude: [...vmFiles, ...selfhostFiles],
          ...integration,
        },
      },
      { test: { name: "vm", include: vmFiles, ...integration } },
      { test: { name: "selfhost", include: selfhostFiles, ...integration } },
    ],
  },
});
