import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import { Zfs } from "../../src/zfs/client.js";
import { isBusy } from "../../src/zfs/errors.js";
import { ownUserPropertyValue, parseExactInteger } from "../../src/zfs/parse.js";
import { createTestPool, type TestPool } from "../harness/zfs-pool.js";

/** Counts every command that passes, so tests can assert invocation counts. */
class CountingExecutor implements Executor {
  readonly calls: string[][] = [];
  constructor(private readonly inner: Executor) {}
  get host(): string {
    return this.inner.host;
  }
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult> {
    this.calls.push([...argv]);
    return this.inner.run(argv, options);
  }
  stream(argv: readonly string[]): Promise<ExecStream> {
    this.calls.push([...argv]);
    return this.inner.stream(argv);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  reset(): void {
    this.calls.length = 0;
  }
}

async function kindOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (isBusy(err)) return "Busy";
    if (isZcsiError(err)) return err.kind;
    throw err;
  }
  return "ok";
}

/** Reads a property straight from zfs, bypassing the client under test. */
async function zfsGetRaw(tp: TestPool, name: string, prop: string): Promise<string> {
  const r = await tp.exec.run(["zfs", "get", "-Hp", "-o", "value", prop, name]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

describe("Zfs client on a real zfs-fuse pool", () => {
  let tp: TestPool;
  let exec: CountingExecutor;
  let zfs: Zfs;
  let root: string;

  beforeAll(async () => {
    tp = await createTestPool();
    exec = new CountingExecutor(tp.exec);
    zfs = new Zfs(exec, { timeoutMs: 30_000 });
    root = `${tp.pool}/k8s`;
    await zfs.create(root);
  });

  afterAll(async () => {
    await tp?.destroy();
  });

  beforeEach(() => exec.reset());

  it("creates with every property in one command, and zfs get shows them exactly", async () => {
    const ds = `${root}/props`;
    await zfs.create(ds, { quota: "1073741824", refquota: "123456789", "zcsi:csi-name": "pvc-1", "zcsi:note": "a b=c; $(x)" });
    expect(exec.calls).toEqual([
      ["zfs", "create", "-o", "quota=1073741824", "-o", "refquota=123456789", "-o", "zcsi:csi-name=pvc-1", "-o", "zcsi:note=a b=c; $(x)", ds],
    ]);
    expect(await zfsGetRaw(tp, ds, "quota")).toBe("1073741824");
    expect(await zfsGetRaw(tp, ds, "refquota")).toBe("123456789");
    const props = (await zfs.get([ds], ["quota", "refquota", "zcsi:csi-name", "zcsi:note", "zcsi:unset"])).get(ds);
    expect(parseExactInteger(props?.get("quota")?.value ?? "")).toBe(1073741824n);
    expect(props?.get("refquota")).toEqual({ value: "123456789", source: "local" });
    expect(props?.get("zcsi:note")).toEqual({ value: "a b=c; $(x)", source: "local" });
    expect(props?.get("zcsi:unset")).toEqual({ value: "-", source: "-" });
  });

  it("gets many datasets in one zfs call", async () => {
    const names = Array.from({ length: 12 }, (_, i) => `${root}/batch${i}`);
    for (const [i, n] of names.entries()) await zfs.create(n, { "zcsi:index": String(i) });
    exec.reset();
    const map = await zfs.get(names, ["used", "available", "zcsi:index"]);
    expect(exec.calls).toHaveLength(1);
    expect([...map.keys()].sort()).toEqual([...names].sort()); // zfs sorts by name
    for (const [i, n] of names.entries()) {
      expect(ownUserPropertyValue(map.get(n)?.get("zcsi:index"))).toBe(String(i));
      expect(parseExactInteger(map.get(n)?.get("used")?.value ?? "")).toBeGreaterThan(0n);
    }
    // A recursive depth-1 get of the parent is also one call and sees them all.
    exec.reset();
    const tree = await zfs.get([root], ["zcsi:index"], { depth: 1 });
    expect(exec.calls).toHaveLength(1);
    for (const n of names) expect(tree.has(n)).toBe(true);
  });

  it("returns what exists when asked with missingOk, NotFound otherwise", async () => {
    const present = `${root}/batch0`;
    const missing = `${root}/never-created`;
    expect(await kindOf(zfs.get([present, missing], ["used"]))).toBe("NotFound");
    const map = await zfs.get([present, missing], ["used"], { missingOk: true });
    expect([...map.keys()]).toEqual([present]);
  });

  it("lists children and snapshots in one call each", async () => {
    const parent = `${root}/tree`;
    await zfs.create(parent);
    await zfs.create(`${parent}/a`, { "zcsi:csi-name": "a" });
    await zfs.create(`${parent}/b`);
    await zfs.create(`${parent}/a/deep`);
    await zfs.snapshot(`${parent}/a@s1`);
    exec.reset();
    const depth1 = await zfs.list(parent, { type: "filesystem", depth: 1, props: ["zcsi:csi-name", "used"] });
    expect(exec.calls).toHaveLength(1);
    expect(depth1.map((r) => r.name)).toEqual([parent, `${parent}/a`, `${parent}/b`]);
    expect(depth1[1]?.["zcsi:csi-name"]).toBe("a");
    const all = await zfs.list(parent, { type: "filesystem", props: [] });
    expect(all.map((r) => r.name)).toContain(`${parent}/a/deep`);
    const snaps = await zfs.list(parent, { type: "snapshot", props: ["used"] });
    expect(snaps.map((r) => r.name)).toEqual([`${parent}/a@s1`]);
    expect(await kindOf(zfs.list(`${root}/nope`, { props: [] }))).toBe("NotFound");
  });

  it("sets one property in one call and several (zfs-fuse: one call each after one probe)", async () => {
    const ds = `${root}/set`;
    await zfs.create(ds);
    exec.reset();
    await zfs.set(ds, { refquota: "50000000" });
    expect(exec.calls).toHaveLength(1);
    expect(await zfsGetRaw(tp, ds, "refquota")).toBe("50000000");
    exec.reset();
    await zfs.set(ds, { "zcsi:a": "1", "zcsi:b": "2" });
    expect(exec.calls.map((c) => c.slice(0, 3).join(" "))).toEqual(["zfs version", "zfs set zcsi:a=1", "zfs set zcsi:b=2"]);
    exec.reset();
    await zfs.set(ds, { "zcsi:a": "3", "zcsi:b": "4" });
    expect(exec.calls).toHaveLength(2); // probe cached
    expect(await zfsGetRaw(tp, ds, "zcsi:b")).toBe("4");
    await zfs.inherit(ds, "zcsi:b");
    expect((await zfs.get([ds], ["zcsi:b"])).get(ds)?.get("zcsi:b")).toEqual({ value: "-", source: "-" });
    expect(await kindOf(zfs.inherit(ds, "quota"))).toBe("InvalidArgument");
  });

  it("renames a mounted filesystem (zfs-fuse: busy until unmounted) and keeps it mounted", async () => {
    await zfs.create(`${root}/old`);
    await writeFile(`${tp.mountRoot}/k8s/old/file`, "data");
    await zfs.snapshot(`${root}/old@s1`);
    await zfs.rename(`${root}/old`, `${root}/new`);
    expect(await zfs.exists(`${root}/old`)).toBe(false);
    expect((await zfs.get([`${root}/new`], ["mounted"])).get(`${root}/new`)?.get("mounted")?.value).toBe("yes");
    expect(readFileSync(`${tp.mountRoot}/k8s/new/file`, "utf8")).toBe("data");
    await zfs.rename(`${root}/new@s1`, `${root}/new@s2`);
    expect(await zfs.exists(`${root}/new@s2`)).toBe(true);
    expect(await kindOf(zfs.rename(`${root}/missing`, `${root}/x`))).toBe("NotFound");
    await zfs.create(`${root}/taken`);
    expect(await kindOf(zfs.rename(`${root}/new`, `${root}/taken`))).toBe("AlreadyExists");
  });

  it("snapshots with properties, clones, and promotes", async () => {
    const src = `${root}/src`;
    await zfs.create(src);
    await writeFile(`${tp.mountRoot}/k8s/src/hello`, "hello");
    await zfs.snapshot(`${src}@snap`, { "zcsi:csi-name": "snapshot-1" });
    await zfs.clone(`${src}@snap`, `${root}/copy`, { "zcsi:csi-name": "pvc-copy", refquota: "100000000" });
    const before = await zfs.get([`${src}@snap`, `${root}/copy`], ["origin", "zcsi:csi-name", "refquota"]);
    expect(ownUserPropertyValue(before.get(`${src}@snap`)?.get("zcsi:csi-name"))).toBe("snapshot-1");
    expect(before.get(`${root}/copy`)?.get("origin")?.value).toBe(`${src}@snap`);
    expect(before.get(`${root}/copy`)?.get("refquota")?.value).toBe("100000000");
    expect(readFileSync(`${tp.mountRoot}/k8s/copy/hello`, "utf8")).toBe("hello");

    expect(await kindOf(zfs.destroy(`${src}@snap`))).toBe("FailedPrecondition"); // has dependent clones
    expect(await kindOf(zfs.promote(src))).toBe("FailedPrecondition"); // not a clone
    await zfs.promote(`${root}/copy`);
    const after = await zfs.get([src, `${root}/copy`], ["origin"]);
    expect(after.get(src)?.get("origin")?.value).toBe(`${root}/copy@snap`);
    expect(after.get(`${root}/copy`)?.get("origin")?.value).toBe("-");
  });

  it("destroys right after create despite zfs-fuse's 'dataset is busy'", async () => {
    for (let i = 0; i < 3; i++) {
      const ds = `${root}/quick${i}`;
      await zfs.create(ds);
      exec.reset();
      await zfs.destroy(ds);
      expect(await zfs.exists(ds)).toBe(false);
      // One destroy, plus (unmount, destroy) per busy retry.
      const destroys = exec.calls.filter((c) => c[1] === "destroy").length;
      expect(exec.calls.filter((c) => c[1] === "unmount").length).toBe(destroys - 1);
    }
  });

  it("destroys a tree recursively, and a snapshot deferred", async () => {
    const top = `${root}/rtree`;
    await zfs.create(top);
    await zfs.create(`${top}/a`);
    await zfs.snapshot(`${top}/a@s`);
    expect(await kindOf(zfs.destroy(top))).toBe("FailedPrecondition"); // has children
    await zfs.snapshot(`${top}@d`);
    await zfs.destroy(`${top}@d`, { deferred: true });
    expect(await zfs.exists(`${top}@d`)).toBe(false);
    await zfs.destroy(top, { recursive: true });
    expect(await zfs.exists(top)).toBe(false);
    expect(existsSync(`${tp.mountRoot}/k8s/rtree/a`)).toBe(false);
  });

  it("reports a mount held by a process as Busy once the bounded retries run out", async () => {
    const ds = `${root}/held`;
    await zfs.create(ds);
    await new Promise((r) => setTimeout(r, 300));
    const holder = spawn("sleep", ["30"], { cwd: `${tp.mountRoot}/k8s/held`, stdio: "ignore" });
    try {
      await new Promise((r) => setTimeout(r, 200));
      const impatient = new Zfs(exec, { busyRetryBudgetMs: 300 });
      const started = Date.now();
      expect(await kindOf(impatient.destroy(ds))).toBe("Busy");
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await zfs.exists(ds)).toBe(true);
    } finally {
      holder.kill("SIGKILL");
      await new Promise((r) => holder.once("exit", r));
    }
    await zfs.destroy(ds);
    expect(await zfs.exists(ds)).toBe(false);
  });

  it("classifies real failures", async () => {
    const ds = `${root}/errs`;
    await zfs.create(ds);
    expect(await kindOf(zfs.create(ds))).toBe("AlreadyExists");
    expect(await kindOf(zfs.snapshot(`${ds}@x`))).toBe("ok");
    expect(await kindOf(zfs.snapshot(`${ds}@x`))).toBe("AlreadyExists");
    expect(await kindOf(zfs.destroy(`${root}/missing`))).toBe("NotFound");
    expect(await kindOf(zfs.destroy(`${ds}@missing`))).toBe("NotFound");
    expect(await kindOf(zfs.create(`${root}/no/parent`))).toBe("FailedPrecondition");
    expect(await kindOf(zfs.create(`${root}/bad`, { quota: "lots" }))).toBe("InvalidArgument");
    expect(await kindOf(zfs.create(`${root}/big`, { reservation: "999999999999" }))).toBe("ResourceExhausted");
    expect(await kindOf(zfs.pool("nosuchpool"))).toBe("NotFound");
  });

  it("refuses to shrink a quota below what is used: OutOfRange", async () => {
    const ds = `${root}/full`;
    await zfs.create(ds, { refquota: "8388608" });
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(`${tp.mountRoot}/k8s/full/data`, Buffer.alloc(3 * 1024 * 1024, 7));
    await tp.exec.run(["sync"]);
    // zfs-fuse accounts written blocks a moment later: wait until `used` shows the data.
    for (let i = 0; i < 50; i++) {
      const used = parseExactInteger((await zfs.get([ds], ["used"])).get(ds)?.get("used")?.value ?? "0");
      if (used > 2n * 1024n * 1024n) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await kindOf(zfs.set(ds, { refquota: "1048576" }))).toBe("OutOfRange");
    expect(await zfsGetRaw(tp, ds, "refquota")).toBe("8388608");
  });

  it("never runs a command for a hostile name", async () => {
    for (const name of [`${root}/$(id)`, `${root}/a;b`, "-rf", `${root}/../x`, `${root}/a\nb`, `${root}/a b`]) {
      expect(await kindOf(zfs.create(name))).toBe("InvalidArgument");
      expect(await kindOf(zfs.destroy(name))).toBe("InvalidArgument");
    }
    expect(exec.calls).toHaveLength(0);
  });

  it("reports the pool: health, and exact, sane byte counts", async () => {
    const pool = await zfs.pool(tp.pool);
    expect(exec.calls).toHaveLength(2);
    expect(pool.name).toBe(tp.pool);
    expect(pool.health).toBe("ONLINE");
    expect(pool.sizeBytes).toBe(pool.freeBytes + pool.allocatedBytes);
    expect(pool.sizeBytes).toBeGreaterThan(400n * 1024n * 1024n);
    expect(pool.sizeBytes).toBeLessThanOrEqual(512n * 1024n * 1024n);
    expect(pool.allocatedBytes).toBeGreaterThan(0n);
    expect(BigInt(await zfsGetRaw(tp, tp.pool, "available"))).toBe(pool.freeBytes);
  });

  it("probes capabilities once: zfs-fuse, no list -p, no resumable send", async () => {
    const fresh = new Zfs(exec);
    const caps = await fresh.capabilities();
    expect(caps).toMatchObject({ implementation: "zfs-fuse", listParsable: false, resumableSend: false, bookmarks: false, getTypeFilter: false });
    await fresh.capabilities();
    expect(exec.calls).toEqual([["zfs", "version"]]);
    // And the probe is right: the options it says are missing really are.
    expect(await kindOf(zfs.list(tp.pool, { props: [] }))).toBe("ok");
    const r = await tp.exec.run(["zfs", "list", "-p", "-H", "-o", "name", tp.pool]);
    expect(r.exitCode).not.toBe(0);
  });
});
