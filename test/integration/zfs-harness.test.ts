import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createTestPool } from "../harness/zfs-pool.js";

function poolExists(name: string): boolean {
  // Avoid the client under test: ask zpool directly, synchronously.
  return readFileSync("/proc/self/mountinfo", "utf8").includes(` ${name} `);
}

describe("test pool harness", () => {
  it("creates independent pools and leaves nothing behind, even when destroyed twice", async () => {
    const [a, b] = await Promise.all([createTestPool({ sizeMiB: 128 }), createTestPool({ sizeMiB: 128 })]);
    try {
      expect(a.pool).toMatch(/^zt[0-9a-f]{10}$/);
      expect(a.pool).not.toBe(b.pool);
      const list = await a.exec.run(["zpool", "list", "-H", "-o", "name"]);
      expect(list.stdout.split("\n")).toEqual(expect.arrayContaining([a.pool, b.pool]));
      expect(poolExists(a.pool)).toBe(true);
      const create = await a.exec.run(["zfs", "create", `${a.pool}/x`]);
      expect(create.exitCode).toBe(0);
      expect(existsSync(`${a.mountRoot}/x`)).toBe(true);
    } finally {
      await Promise.all([a.destroy(), b.destroy(), a.destroy()]);
    }
    await b.destroy();
    const after = await a.exec.run(["zpool", "list", "-H", "-o", "name"]);
    expect(after.stdout).not.toContain(a.pool);
    expect(after.stdout).not.toContain(b.pool);
    expect(poolExists(a.pool)).toBe(false);
    expect(poolExists(b.pool)).toBe(false);
    expect(existsSync(a.dir)).toBe(false);
    expect(existsSync(b.dir)).toBe(false);
  });
});
