import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Integration suites share one zfs-fuse daemon and mount real filesystems; running
    // files in parallel on a 2-core machine only adds contention and flakiness.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ["./test/harness/summary-reporter.ts", "default"],
  },
});
