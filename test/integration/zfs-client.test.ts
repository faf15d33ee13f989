import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import type { ExecOptions, ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import { Zfs } from "../../src/zfs/client.js";
import { isBusy, zfsError } from "../../src/zfs/errors.js";
import { ownUserPropertyValue, parseExactInteger } from "../../src/zfs/parse.js";
import { createPoolHost, zfsBackend, type PoolHost } from "../harness/backend.js";

const backend = zfsBackend();
const onOpenZfs = backend === "openzfs-vm";

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
/** Polls `check` until it holds; the bound only turns a hang into a failure. */
async function waitFor(check: () => Promise<boolean>, what: string, boundMs = 30_000): Promise<void> {
  const until = Date.now() + boundMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`${what}: not reached within ${boundMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until `path` is a mount point on the pool host (a new dataset's mount settles after `zfs create` returns). */
async function mountedAt(tp: PoolHost, path: string): Promise<void> {
  await waitFor(async () => (await tp.exec.run(["grep", "-qF", "--", ` ${path} `, "/proc/mounts"])).exitCode === 0, `mount at ${path}`);
}

async function zfsGetRaw(tp: PoolHost, name: string, prop: string): Promise<string> {
  const r = await tp.exec.run(["zfs", "get", "-Hp", "-o", "value", prop, name]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

describe(`Zfs client on a real ${backend} pool`, () => {
  let tp: PoolHost;
  let exec: CountingExecutor;
  let zfs: Zfs;
  let root: string;

  beforeAll(async () => {
    tp = await createPoolHost();
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

  it("sets one property in one call and several (OpenZFS: one call; zfs-fuse: one call each) after one probe", async () => {
    const ds = `${root}/set`;
    await zfs.create(ds);
    exec.reset();
    await zfs.set(ds, { refquota: "50000000" });
    expect(exec.calls).toHaveLength(1);
    expect(await zfsGetRaw(tp, ds, "refquota")).toBe("50000000");
    exec.reset();
    await zfs.set(ds, { "zcsi:a": "1", "zcsi:b": "2" });
    expect(exec.calls.map((c) => c.slice(0, 4).join(" "))).toEqual(
      onOpenZfs ? ["zfs version", "zfs set zcsi:a=1 zcsi:b=2"] : ["zfs version", "zfs set zcsi:a=1 " + ds, "zfs set zcsi:b=2 " + ds],
    );
    exec.reset();
    await zfs.set(ds, { "zcsi:a": "3", "zcsi:b": "4" });
    expect(exec.calls).toHaveLength(onOpenZfs ? 1 : 2); // probe cached
    expect(await zfsGetRaw(tp, ds, "zcsi:b")).toBe("4");
    await zfs.inherit(ds, "zcsi:b");
    expect((await zfs.get([ds], ["zcsi:b"])).get(ds)?.get("zcsi:b")).toEqual({ value: "-", source: "-" });
    expect(await kindOf(zfs.inherit(ds, "quota"))).toBe("InvalidArgument");
  });

  it("renames a mounted filesystem (zfs-fuse: busy until unmounted) and keeps it mounted", async () => {
    await zfs.create(`${root}/old`);
    await tp.files.write(`${tp.mountRoot}/k8s/old/file`, "data");
    await zfs.snapshot(`${root}/old@s1`);
    await zfs.rename(`${root}/old`, `${root}/new`);
    expect(await zfs.exists(`${root}/old`)).toBe(false);
    expect((await zfs.get([`${root}/new`], ["mounted"])).get(`${root}/new`)?.get("mounted")?.value).toBe("yes");
    expect(await tp.files.read(`${tp.mountRoot}/k8s/new/file`)).toBe("data");
    await zfs.rename(`${root}/new@s1`, `${root}/new@s2`);
    expect(await zfs.exists(`${root}/new@s2`)).toBe(true);
    expect(await kindOf(zfs.rename(`${root}/missing`, `${root}/x`))).toBe("NotFound");
    await zfs.create(`${root}/taken`);
    expect(await kindOf(zfs.rename(`${root}/new`, `${root}/taken`))).toBe("AlreadyExists");
  });

  it("snapshots with properties, clones, and promotes", async () => {
    const src = `${root}/src`;
    await zfs.create(src);
    await tp.files.write(`${tp.mountRoot}/k8s/src/hello`, "hello");
    await zfs.snapshot(`${src}@snap`, { "zcsi:csi-name": "snapshot-1" });
    await zfs.clone(`${src}@snap`, `${root}/copy`, { "zcsi:csi-name": "pvc-copy", refquota: "100000000" });
    const before = await zfs.get([`${src}@snap`, `${root}/copy`], ["origin", "zcsi:csi-name", "refquota"]);
    expect(ownUserPropertyValue(before.get(`${src}@snap`)?.get("zcsi:csi-name"))).toBe("snapshot-1");
    expect(before.get(`${root}/copy`)?.get("origin")?.value).toBe(`${src}@snap`);
    expect(before.get(`${root}/copy`)?.get("refquota")?.value).toBe("100000000");
    expect(await tp.files.read(`${tp.mountRoot}/k8s/copy/hello`)).toBe("hello");

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
    expect(await tp.files.exists(`${tp.mountRoot}/k8s/rtree/a`)).toBe(false);
  });

  it("reports a mount held by a process as Busy once the bounded retries run out", async () => {
    const ds = `${root}/held`;
    await zfs.create(ds);
    await mountedAt(tp, `${tp.mountRoot}/k8s/held`);
    const holder = await tp.files.hold(`${tp.mountRoot}/k8s/held`);
    try {
      // The budget counts time slept; an injected sleep records it, so no wall clock is read.
      const slept: number[] = [];
      const impatient = new Zfs(exec, { busyRetryBudgetMs: 300, sleep: async (ms) => void slept.push(ms) });
      expect(await kindOf(impatient.destroy(ds))).toBe("Busy");
      expect(slept.length).toBeGreaterThan(0); // it did retry
      expect(slept.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(300); // and gave up within its budget
      expect(await zfs.exists(ds)).toBe(true);
    } finally {
      await holder.release();
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
    await mountedAt(tp, `${tp.mountRoot}/k8s/full`);
    // Random bytes: OpenZFS compresses by default (lz4), and a run of one byte would use nothing.
    await tp.files.write(`${tp.mountRoot}/k8s/full/data`, randomBytes(3 * 1024 * 1024));
    await tp.exec.run(["sync"]);
    // zfs-fuse accounts written blocks a moment later: wait until `used` shows the data.
    await waitFor(
      async () => parseExactInteger((await zfs.get([ds], ["used"])).get(ds)?.get("used")?.value ?? "0") > 2n * 1024n * 1024n,
      "used shows the 3 MiB written",
    );
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
    // What datasets can hold: the 512 MiB disk less labels and the slop space that zfs keeps
    // back (OpenZFS 2.x: at least 128 MiB, spa_min_slop; zfs-fuse: 1/32 of the pool).
    expect(pool.sizeBytes).toBeGreaterThan((onOpenZfs ? 320n : 400n) * 1024n * 1024n);
    expect(pool.sizeBytes).toBeLessThanOrEqual(512n * 1024n * 1024n);
    expect(pool.allocatedBytes).toBeGreaterThan(0n);
    expect(BigInt(await zfsGetRaw(tp, tp.pool, "available"))).toBe(pool.freeBytes);
  });

  it("probes capabilities once, and what it says is true of this host's CLI", async () => {
    const fresh = new Zfs(exec);
    const caps = await fresh.capabilities();
    if (onOpenZfs) {
      expect(caps).toMatchObject({ implementation: "openzfs", version: expect.stringMatching(/^2\./), listParsable: true, resumableSend: true, bookmarks: true, getTypeFilter: true, multiPropertySet: true, multiSnapshot: true });
    } else {
      expect(caps).toMatchObject({ implementation: "zfs-fuse", listParsable: false, resumableSend: false, bookmarks: false, getTypeFilter: false, multiPropertySet: false, multiSnapshot: false });
    }
    await fresh.capabilities();
    expect(exec.calls).toEqual([["zfs", "version"]]);
    expect(await kindOf(zfs.list(tp.pool, { props: [] }))).toBe("ok");
    // Each option the probe names works where it says so, and is refused where it says not.
    const listP = await tp.exec.run(["zfs", "list", "-p", "-H", "-o", "name,used", tp.pool]);
    expect(listP.exitCode === 0, listP.stderr).toBe(caps.listParsable);
    if (caps.listParsable) expect(listP.stdout).toMatch(new RegExp(`^${tp.pool}\t\\d+\n$`));
    const getT = await tp.exec.run(["zfs", "get", "-H", "-t", "filesystem", "-o", "value", "type", tp.pool]);
    expect(getT.exitCode === 0, getT.stderr).toBe(caps.getTypeFilter);
    if (caps.getTypeFilter) expect(getT.stdout).toBe("filesystem\n");
  });
});

/**
 * Features only OpenZFS has. Each test runs on both backends: where the probe reports the
 * feature it is exercised for real; where it does not (zfs-fuse), the test checks that the
 * host really refuses it, so "unsupported" is a tested fact, never a silent skip.
 */
describe(`OpenZFS-only features on ${backend}, as the capability probe reports them`, () => {
  let tp: PoolHost;
  let zfs: Zfs;
  let root: string;
  beforeAll(async () => {
    tp = await createPoolHost({ sizeMiB: 256 });
    zfs = new Zfs(tp.exec, { timeoutMs: 60_000 });
    root = `${tp.pool}/feat`;
    await zfs.create(root);
  });
  afterAll(async () => {
    await tp?.destroy();
  });
  const sh = (script: string, ...args: string[]) => tp.exec.run(["sh", "-c", script, "sh", ...args]);

  it("bookmarks: `zfs bookmark` makes one that `zfs list -t bookmark` shows, or is an unknown command", async () => {
    const caps = await zfs.capabilities();
    await zfs.create(`${root}/bm`);
    await zfs.snapshot(`${root}/bm@s1`);
    const r = await tp.exec.run(["zfs", "bookmark", `${root}/bm@s1`, `${root}/bm#b1`]);
    if (caps.bookmarks) {
      expect(r.exitCode, r.stderr).toBe(0);
      const list = await tp.exec.run(["zfs", "list", "-H", "-t", "bookmark", "-o", "name", "-r", `${root}/bm`]);
      expect(list.stdout).toBe(`${root}/bm#b1\n`);
    } else {
      expect(r.exitCode).not.toBe(0);
      expect(zfsError(tp.exec.host, ["zfs", "bookmark"], r).kind).toBe("Unimplemented");
    }
  });

  it("resumable send: an interrupted `receive -s` leaves a token and `send -t` completes it, or -s is an invalid option", async () => {
    const caps = await zfs.capabilities();
    const src = `${root}/src`;
    const dst = `${root}/dst`;
    await zfs.create(src);
    await tp.files.write(`${tp.mountRoot}/feat/src/data`, randomBytes(3 << 20));
    await zfs.snapshot(`${src}@s1`);
    // Cut the stream after 1 MiB: the receive fails half-way.
    const cut = await sh('zfs send "$1" | head -c 1048576 | zfs receive -s "$2"', `${src}@s1`, dst);
    expect(cut.exitCode).not.toBe(0);
    if (!caps.resumableSend) {
      expect(zfsError(tp.exec.host, ["zfs", "receive"], cut).kind).toBe("Unimplemented");
      return;
    }
    const token = (await zfs.get([dst], ["receive_resume_token"])).get(dst)?.get("receive_resume_token")?.value ?? "-";
    expect(token).toMatch(/^[0-9a-f]+-[0-9a-f]+-/);
    // Both ends of the pipe must succeed: a send that dies can still leave a receive "ok".
    const resumed = await sh('f=$(mktemp) && zfs send -t "$1" > "$f" && zfs receive -s "$2" < "$f"; r=$?; rm -f "$f"; exit $r', token, dst);
    expect(resumed.exitCode, resumed.stderr).toBe(0);
    expect(await zfs.exists(`${dst}@s1`)).toBe(true);
    const sums = await sh('cd "$1" && md5sum src/data && cd dst && md5sum data', `${tp.mountRoot}/feat`);
    const [a, b] = sums.stdout.trim().split("\n").map((l) => l.split(/\s+/)[0]);
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(b).toBe(a);
  });
});
