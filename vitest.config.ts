import { defineConfig } from "vitest/config";

// Tiers: `unit` is pure logic (no I/O beyond temp files); `integration` boots real
// etcd + systemd-nspawn machines and runs serially because they share one bridge.
export default defineConfig({
  test: {
    projects: [
      { test: { name: "unit", include: ["test/unit/**/*.test.ts"] } },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
