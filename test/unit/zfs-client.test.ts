import { describe, expect, it } from "vitest";
import { isZcsiError } from "../../src/errors.js";
import { Zfs } from "../../src/zfs/client.js";
import { isBusy } from "../../src/zfs/errors.js";
import { fixture } from "../fixtures/zfs/load.js";
import { fail, ok, ScriptedExecutor } from "../harness/scripted-executor.js";

const BUSY = fail("cannot destroy 'tank/a': dataset is busy\n");
const noSleep = async (): Promise<void> => {};

describe("Zfs.destroy", () => {
  it("runs one command when the dataset is not busy", async () => {
    const exec = new ScriptedExecutor([[/^zfs destroy tank\/a$/, ok()]]);
    await new Zfs(exec).destroy("tank/a");
    expect(exec.calls).toEqual([["zfs", "destroy", "tank/a"]]);
  });

  it("unmounts and retries while busy, then succeeds", async () => {
    let n = 0;
    const exec = new ScriptedExecutor([
      [/^zfs destroy/, () => (++n < 3 ? BUSY : ok())],
      [/^zfs unmount/, ok()],
    ]);
    const slept: number[] = [];
    await new Zfs(exec, { sleep: async (ms) => void slept.push(ms) }).destroy("tank/a");
    expect(exec.calls.map((c) => c[1])).toEqual(["destroy", "unmount", "destroy", "unmount", "destroy"]);
    expect(slept).toEqual([50, 100]);
  });

  it("treats an unmount of an unmounted dataset as done", async () => {
    let n = 0;
    const exec = new ScriptedExecutor([
      [/^zfs destroy/, () => (++n < 2 ? BUSY : ok())],
      [/^zfs unmount/, fail("cannot unmount 'tank/a': not currently mounted\n")],
    ]);
    await new Zfs(exec, { sleep: noSleep }).destroy("tank/a");
    expect(n).toBe(2);
  });

  it("gives up with a Busy error once the retry budget is spent", async () => {
    const exec = new ScriptedExecutor([
      [/^zfs destroy/, BUSY],
      [/^zfs unmount/, fail("umount: /m/a: target is busy.\ncannot unmount '/m/a': umount failed\n")],
    ]);
    const err = await new Zfs(exec, { sleep: noSleep, busyRetryBudgetMs: 5000 }).destroy("tank/a").catch((e: unknown) => e);
    expect(isBusy(err)).toBe(true);
    // 50+100+200+400+800+1000+1000+1000 = 4550 ms slept, the next 1000 would exceed 5000.
    expect(exec.calls.filter((c) => c[1] === "destroy")).toHaveLength(9);
  });

  it("passes NotFound through without retrying", async () => {
    const exec = new ScriptedExecutor([[/^zfs destroy/, fail("cannot open 'tank/a': dataset does not exist\n")]]);
    const err = await new Zfs(exec).destroy("tank/a").catch((e: unknown) => e);
    expect(isZcsiError(err, "NotFound")).toBe(true);
    expect(exec.calls).toHaveLength(1);
  });

  it("never unmounts for a snapshot", async () => {
    let n = 0;
    const exec = new ScriptedExecutor([[/^zfs destroy -d tank\/a@s$/, () => (++n < 2 ? BUSY : ok())]]);
    await new Zfs(exec, { sleep: noSleep }).destroy("tank/a@s", { deferred: true });
    expect(exec.calls.every((c) => c[1] === "destroy")).toBe(true);
  });
});

describe("Zfs.get", () => {
  it("runs one command for many datasets and passes the timeout", async () => {
    const f = fixture("zfs-fuse", "get-created");
    const exec = new ScriptedExecutor([[/^zfs get/, ok(f.stdout)]]);
    const map = await new Zfs(exec, { timeoutMs: 1234 }).get(["zrec/k8s/a", "zrec/k8s/b"], ["quota", "used"]);
    expect(map.size).toBe(2);
    expect(exec.calls).toHaveLength(1);
    expect(exec.options[0]).toEqual({ timeoutMs: 1234, onStdout: expect.any(Function) });
  });

  it("reads a listing the executor hands over piece by piece as it reads one returned whole", async () => {
    const f = fixture("zfs-fuse", "get-recursive-depth1");
    const whole = await new Zfs(new ScriptedExecutor([[/^zfs get/, ok(f.stdout)]])).get(["zrec/k8s"], ["type"], { depth: 1 });
    const streaming = new ScriptedExecutor([[/^zfs get/, ok("")]]);
    const run = streaming.run.bind(streaming);
    streaming.run = async (argv, options) => {
      const bytes = Buffer.from(f.stdout);
      for (let i = 0; i < bytes.length; i += 5) options?.onStdout?.(bytes.subarray(i, i + 5));
      return run(argv, options);
    };
    const pieces = await new Zfs(streaming).get(["zrec/k8s"], ["type"], { depth: 1 });
    expect([...pieces.keys()]).toEqual(["zrec/k8s", "zrec/k8s/a", "zrec/k8s/b"]);
    expect(pieces).toEqual(whole);
  });

  it("fails with NotFound when a name is missing, or returns the rest with missingOk", async () => {
    const f = fixture("zfs-fuse", "get-partial-missing");
    const exec = new ScriptedExecutor([[/^zfs get/, f]]);
    const zfs = new Zfs(exec);
    const err = await zfs.get(["zrec/k8s/a", "zrec/k8s/nope"], ["used"]).catch((e: unknown) => e);
    expect(isZcsiError(err, "NotFound")).toBe(true);
    const map = await zfs.get(["zrec/k8s/a", "zrec/k8s/nope"], ["used"], { missingOk: true });
    expect([...map.keys()]).toEqual(["zrec/k8s/a"]);
  });

  it("prefixes sudo -n when configured", async () => {
    const exec = new ScriptedExecutor([[/^sudo -n zfs get/, ok("t\tused\t1\t-\n")]]);
    await new Zfs(exec, { sudo: true }).get(["t"], ["used"]);
    expect(exec.calls[0]?.slice(0, 3)).toEqual(["sudo", "-n", "zfs"]);
  });
});

describe("Zfs.set", () => {
  const zfsFuseVersion = fixture("zfs-fuse", "zfs-version");
  const openzfsVersion = fixture("openzfs", "zfs-version");

  it("sets one property in one call without probing", async () => {
    const exec = new ScriptedExecutor([[/^zfs set refquota=1 t\/a$/, ok()]]);
    await new Zfs(exec).set("t/a", { refquota: "1" });
    expect(exec.calls).toHaveLength(1);
  });

  it("sets several properties in one call on OpenZFS (after one cached probe)", async () => {
    const exec = new ScriptedExecutor([
      [/^zfs version$/, openzfsVersion],
      [/^zfs set a:b=1 a:c=2 t\/a$/, ok()],
    ]);
    const zfs = new Zfs(exec);
    await zfs.set("t/a", { "a:b": "1", "a:c": "2" });
    await zfs.set("t/a", { "a:b": "1", "a:c": "2" });
    expect(exec.calls.map((c) => c[1])).toEqual(["version", "set", "set"]);
  });

  it("sets one property per call on zfs-fuse", async () => {
    const exec = new ScriptedExecutor([
      [/^zfs version$/, zfsFuseVersion],
      [/^zfs set/, ok()],
    ]);
    await new Zfs(exec).set("t/a", { "a:b": "1", "a:c": "2" });
    expect(exec.calls).toEqual([["zfs", "version"], ["zfs", "set", "a:b=1", "t/a"], ["zfs", "set", "a:c=2", "t/a"]]);
  });

  it("validates every property before running anything", async () => {
    const exec = new ScriptedExecutor([]);
    await expect(new Zfs(exec).set("t/a", { "a:b": "1", "a:c": "x\ny" })).rejects.toThrow(/newline/);
    expect(exec.calls).toHaveLength(0);
  });
});

describe("Zfs.capabilities", () => {
  it("probes once and caches", async () => {
    const exec = new ScriptedExecutor([[/^zfs version$/, fixture("zfs-fuse", "zfs-version")]]);
    const zfs = new Zfs(exec);
    const [a, b] = await Promise.all([zfs.capabilities(), zfs.capabilities()]);
    expect(a).toBe(b);
    expect(a.implementation).toBe("zfs-fuse");
    expect(exec.calls).toHaveLength(1);
  });

  it("does not cache a failed probe", async () => {
    let n = 0;
    const exec = new ScriptedExecutor([
      [/^zfs version$/, () => (++n === 1 ? fixture("zfs-fuse", "daemon-not-running") : fixture("zfs-fuse", "zfs-version"))],
    ]);
    const zfs = new Zfs(exec);
    const err = await zfs.capabilities().catch((e: unknown) => e);
    expect(isZcsiError(err, "Unavailable")).toBe(true);
    expect((await zfs.capabilities()).implementation).toBe("zfs-fuse");
  });
});

describe("Zfs.pool, exists, unmount", () => {
  it("takes health from zpool list and exact bytes from the root dataset", async () => {
    const exec = new ScriptedExecutor([
      [/^zpool list/, ok("tank\tONLINE\t250M\t249M\t1.12M\n")],
      [/^zfs get .* used,available tank$/, ok("tank\tused\t1000\t-\ntank\tavailable\t9000\t-\n")],
    ]);
    expect(await new Zfs(exec).pool("tank")).toEqual({ name: "tank", health: "ONLINE", sizeBytes: 10000n, freeBytes: 9000n, allocatedBytes: 1000n });
    expect(exec.calls).toHaveLength(2);
  });

  it("maps a missing pool to NotFound", async () => {
    const exec = new ScriptedExecutor([
      [/^zpool list/, fixture("zfs-fuse", "zpool-list-missing")],
      [/^zfs get/, fail("cannot open 'nopool': dataset does not exist\n")],
    ]);
    const err = await new Zfs(exec).pool("nopool").catch((e: unknown) => e);
    expect(isZcsiError(err, "NotFound")).toBe(true);
  });

  it("answers exists with one command", async () => {
    const exec = new ScriptedExecutor([
      [/ t\/a$/, ok("t/a\ttype\tfilesystem\t-\n")],
      [/ t\/b$/, fail("cannot open 't/b': dataset does not exist\n")],
    ]);
    const zfs = new Zfs(exec);
    expect(await zfs.exists("t/a")).toBe(true);
    expect(await zfs.exists("t/b")).toBe(false);
    expect(exec.calls).toHaveLength(2);
  });
});

describe("Zfs.rename", () => {
  const RENAME_BUSY = fail("cannot rename 'tank/a': dataset is busy\n");

  it("runs one command when zfs renames a mounted filesystem itself (OpenZFS)", async () => {
    const exec = new ScriptedExecutor([[/^zfs rename tank\/a tank\/b$/, ok()]]);
    await new Zfs(exec).rename("tank/a", "tank/b");
    expect(exec.calls).toHaveLength(1);
  });

  it("on zfs-fuse's busy: unmounts, renames, and mounts the new name", async () => {
    let mounted = true;
    const exec = new ScriptedExecutor([
      [/^zfs rename/, () => (mounted ? RENAME_BUSY : ok())],
      [/^zfs unmount tank\/a$/, () => ((mounted = false), ok())],
      [/^zfs mount tank\/b$/, ok()],
    ]);
    await new Zfs(exec, { sleep: noSleep }).rename("tank/a", "tank/b");
    expect(exec.calls.map((c) => c.slice(1).join(" "))).toEqual(["rename tank/a tank/b", "unmount tank/a", "rename tank/a tank/b", "mount tank/b"]);
  });

  it("mounts the old name again when the rename then fails", async () => {
    let mounted = true;
    const exec = new ScriptedExecutor([
      [/^zfs rename/, () => (mounted ? RENAME_BUSY : fail("cannot rename 'tank/a': dataset already exists\n"))],
      [/^zfs unmount tank\/a$/, () => ((mounted = false), ok())],
      [/^zfs mount tank\/a$/, ok()],
    ]);
    const err = await new Zfs(exec, { sleep: noSleep }).rename("tank/a", "tank/b").catch((e: unknown) => e);
    expect(isZcsiError(err, "AlreadyExists")).toBe(true);
    expect(exec.calls.at(-1)).toEqual(["zfs", "mount", "tank/a"]);
  });

  it("retries a busy snapshot rename without unmounting", async () => {
    let n = 0;
    const exec = new ScriptedExecutor([[/^zfs rename/, () => (++n < 2 ? RENAME_BUSY : ok())]]);
    await new Zfs(exec, { sleep: noSleep }).rename("tank/a@s", "tank/a@t");
    expect(exec.calls.map((c) => c[1])).toEqual(["rename", "rename"]);
  });
});

describe("Zfs.mount / unmount", () => {
  it("treats already mounted / not mounted as success", async () => {
    const exec = new ScriptedExecutor([
      [/^zfs mount/, fail("cannot mount 'tank/a': filesystem already mounted\n")],
      [/^zfs unmount/, fail("cannot unmount 'tank/a': not currently mounted\n")],
    ]);
    const zfs = new Zfs(exec);
    await zfs.mount("tank/a");
    await zfs.unmount("tank/a");
    expect(exec.calls).toHaveLength(2);
  });
});

describe("what a call tolerates, decided on the recorded failures of both backends", () => {
  const backends = ["zfs-fuse", "openzfs"] as const;

  it.each(backends)("%s: a second hold of the same tag is done; a hold refused otherwise fails", async (source) => {
    const exec = new ScriptedExecutor([
      [/^zfs hold keep tank\/a@s1$/, fixture(source, "hold-twice")],
      [/^zfs hold keep tank\/b@s1$/, fixture(source, "destroy-missing")],
    ]);
    const zfs = new Zfs(exec);
    await zfs.hold("keep", "tank/a@s1");
    expect(isZcsiError(await zfs.hold("keep", "tank/b@s1").catch((e: unknown) => e), "NotFound")).toBe(true);
  });

  it.each(backends)("%s: a release of a tag that is not there returns false; other failures throw", async (source) => {
    const exec = new ScriptedExecutor([
      [/^zfs release keep tank\/a@s1$/, fixture(source, "release-missing-tag")],
      [/^zfs release keep tank\/a@s2$/, ok()],
      [/^zfs release keep tank\/b@s1$/, fixture(source, "destroy-missing")],
    ]);
    const zfs = new Zfs(exec);
    expect(await zfs.release("keep", "tank/a@s1")).toBe(false);
    expect(await zfs.release("keep", "tank/a@s2")).toBe(true);
    expect(isZcsiError(await zfs.release("keep", "tank/b@s1").catch((e: unknown) => e), "NotFound")).toBe(true);
  });

  it.each(backends)("%s: mount of a mounted and unmount of an unmounted filesystem are done", async (source) => {
    const exec = new ScriptedExecutor([
      [/^zfs mount/, fixture(source, "mount-already-mounted")],
      [/^zfs unmount/, fixture(source, "unmount-not-mounted")],
    ]);
    const zfs = new Zfs(exec);
    await zfs.mount("tank/a");
    await zfs.unmount("tank/a");
    expect(exec.calls).toHaveLength(2);
  });

  it("an unmount refused because the mount is in use is not 'already unmounted'", async () => {
    const exec = new ScriptedExecutor([[/^zfs unmount/, fixture("openzfs", "unmount-held-mount")]]);
    const err = await new Zfs(exec).unmount("tank/a").catch((e: unknown) => e);
    expect(isBusy(err)).toBe(true);
  });

  it("exists() answers false only for a missing dataset, not for a missing parent or a refused call", async () => {
    const exec = new ScriptedExecutor([
      [/ t\/a$/, fixture("openzfs", "get-partial-missing")],
      [/ t\/b$/, fixture("openzfs", "not-root")],
    ]);
    const zfs = new Zfs(exec);
    expect(await zfs.exists("t/a")).toBe(false);
    expect(isZcsiError(await zfs.exists("t/b").catch((e: unknown) => e), "PermissionDenied")).toBe(true);
  });
});

describe("Zfs.pool reads exact numbers or fails", () => {
  it("refuses a garbled available as Internal naming the host and property, never as 0 bytes free", async () => {
    const exec = new ScriptedExecutor([
      [/^zpool list/, ok("tank\tONLINE\t250M\t249M\t1.12M\n")],
      [/^zfs get .* used,available tank$/, ok("tank\tused\t1000\t-\ntank\tavailable\t9.89M\t-\n")],
    ]);
    const err = await new Zfs(exec).pool("tank").catch((e: unknown) => e);
    expect(isZcsiError(err, "Internal")).toBe(true);
    expect((err as Error).message).toContain("fake: tank: property available");
  });
});
