import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import type { ExecResult, ExecStream, Executor } from "../../src/exec/executor.js";
import { resolveRestoreCapacity } from "../../src/volumes/capacity.js";
import { snapshotNameFromCsi, volumeLeafFromName } from "../../src/volumes/ids.js";
import { parseSnapshotParameters, parseVolumeParameters } from "../../src/volumes/parameters.js";
import { classifySnapshot } from "../../src/volumes/snapshots.js";
import { zfsReceive, zfsSend } from "../../src/zfs/argv.js";
import { Zfs } from "../../src/zfs/client.js";
import { parseGet } from "../../src/zfs/parse.js";

const MiB = 1n << 20n;

describe("snapshot names", () => {
  it("keep the external-snapshotter's names unchanged", () => {
    expect(snapshotNameFromCsi("snapshot-8f3a1c2e-0b7d-4f43-9a8e-2b1d5c6e7f80")).toBe("snapshot-8f3a1c2e-0b7d-4f43-9a8e-2b1d5c6e7f80");
  });
  it.each(["", "a@b", "a/b", "-x", "..", "a b", "x".repeat(129), "zcsi-auto-hourly-1", "zcsi-clone-pvc-1", "zcsi-"])("refuse %j with INVALID_ARGUMENT", (name) => {
    expect(() => snapshotNameFromCsi(name)).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
  });
  it("reserve the staging prefix of copies for volume names only", () => {
    expect(() => volumeLeafFromName("zcsi-recv-pvc-1")).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
    expect(volumeLeafFromName("zcsi-pvc-1")).toBe("zcsi-pvc-1");
  });
});

describe("parameters", () => {
  it("restoreMode is clone by default and copy when asked; nothing else", () => {
    expect(parseVolumeParameters({}, []).restoreMode).toBe("clone");
    expect(parseVolumeParameters({ restoreMode: "copy" }, []).restoreMode).toBe("copy");
    expect(() => parseVolumeParameters({ restoreMode: "rsync" }, [])).toThrow(/restoreMode/);
  });
  it("VolumeSnapshotClass parameters accept only the snapshotter's keys, and record them", () => {
    expect(
      parseSnapshotParameters({
        "csi.storage.k8s.io/volumesnapshot/name": "nightly",
        "csi.storage.k8s.io/volumesnapshot/namespace": "db",
        "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-1",
      }),
    ).toEqual({ volumeSnapshotName: "nightly", volumeSnapshotNamespace: "db", volumeSnapshotContentName: "snapcontent-1" });
    expect(parseSnapshotParameters({ "csi.storage.k8s.io/volumesnapshot/name": "Bad Name" })).toEqual({});
    expect(() => parseSnapshotParameters({ compression: "lz4" })).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
  });
});

describe("resolveRestoreCapacity", () => {
  const def = 64n * MiB;
  it("takes the requested size when it holds the content", () => {
    expect(resolveRestoreCapacity({ requiredBytes: String(32n * MiB) }, def, 10n * MiB, "s")).toBe(32n * MiB);
    expect(resolveRestoreCapacity({ requiredBytes: String(10n * MiB) }, def, 10n * MiB, "s")).toBe(10n * MiB);
  });
  it("is OUT_OF_RANGE when required or limit is below the content", () => {
    expect(() => resolveRestoreCapacity({ requiredBytes: String(9n * MiB) }, def, 10n * MiB, "snapshot x")).toThrow(/smaller than snapshot x/);
    expect(() => resolveRestoreCapacity({ limitBytes: String(9n * MiB) }, def, 10n * MiB, "s")).toThrow(expect.objectContaining({ kind: "OutOfRange" }));
  });
  it("without required_bytes takes the larger of default and content, within the limit", () => {
    expect(resolveRestoreCapacity(null, def, 10n * MiB, "s")).toBe(def);
    expect(resolveRestoreCapacity(null, def, 100n * MiB, "s")).toBe(100n * MiB);
    expect(resolveRestoreCapacity({ limitBytes: String(20n * MiB) }, def, 10n * MiB, "s")).toBe(20n * MiB);
  });
});

describe("classifySnapshot", () => {
  const tab = (rows: string[][]): string => rows.map((r) => r.join("\t")).join("\n") + "\n";
  const volume = [
    ["tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1", "local"],
    ["tank/k8s/pvc-1", "defer_destroy", "-", "-"],
  ];
  const snap = (name: string, marker: string | undefined, deferred = "off"): string[][] => [
    [name, "zcsi:csi-snapshot-name", marker ?? "-", marker ? "local" : "-"],
    [name, "zcsi:csi-name", "pvc-1", "inherited from tank/k8s/pvc-1"],
    [name, "defer_destroy", deferred, "-"],
    [name, "creation", "1700000000", "-"],
    [name, "referenced", "3145728", "-"],
  ];
  it("reads a CSI snapshot's handle, source, size and creation time", () => {
    const all = parseGet(tab([...volume, ...snap("tank/k8s/pvc-1@snapshot-1", "snapshot-1")]));
    expect(classifySnapshot("alice", "tank/k8s/pvc-1@snapshot-1", all)).toEqual({
      state: "csi",
      snapshot: {
        id: "alice:tank/k8s/pvc-1@snapshot-1",
        ref: { poolHost: "alice", dataset: "tank/k8s/pvc-1", snapshot: "snapshot-1" },
        sourceVolumeId: "alice:tank/k8s/pvc-1",
        creationSeconds: 1700000000n,
        sizeBytes: 3145728n,
      },
    });
  });
  it("tells deleted, unmarked and foreign-dataset snapshots apart", () => {
    const deleted = parseGet(tab([...volume, ...snap("tank/k8s/pvc-1@s", "s", "on")]));
    expect(classifySnapshot("alice", "tank/k8s/pvc-1@s", deleted).state).toBe("deleted");
    const unmarked = parseGet(tab([...volume, ...snap("tank/k8s/pvc-1@s", undefined)]));
    expect(classifySnapshot("alice", "tank/k8s/pvc-1@s", unmarked).state).toBe("other");
    // The marker inherited from a dataset does not count; nor does a dataset that is not a volume.
    const inherited = parseGet(tab(snap("tank/k8s/x@s", "s").map((r) => (r[1] === "zcsi:csi-snapshot-name" ? [r[0]!, r[1]!, "s", "inherited from tank/k8s/x"] : r))));
    expect(classifySnapshot("alice", "tank/k8s/x@s", inherited).state).toBe("other");
    const notVolume = parseGet(tab(snap("tank/k8s/x@s", "s")));
    expect(classifySnapshot("alice", "tank/k8s/x@s", notVolume).state).toBe("other");
    expect(classifySnapshot("alice", "tank/k8s/pvc-1@gone", parseGet(tab(volume))).state).toBe("absent");
  });
});

describe("send/receive argv", () => {
  it("sends without properties and receives unmounted, never forced", () => {
    expect(zfsSend("tank/a@s")).toEqual(["zfs", "send", "tank/a@s"]);
    expect(zfsReceive("tank/b")).toEqual(["zfs", "receive", "-u", "tank/b"]);
    expect(() => zfsSend("tank/a")).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
    expect(() => zfsReceive("tank/b@s")).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
    expect(() => zfsReceive("-F")).toThrow(expect.objectContaining({ kind: "InvalidArgument" }));
  });
});

/**
 * A scripted pipeline: `zfs send` writes `bytes` then exits with `sendExit`; `zfs receive`
 * reads its stdin to the end and exits with `recvExit` (or exits at once, unread, if
 * `recvFailsEarly`). Records kills and what the receiver got.
 */
class PipelineExecutor implements Executor {
  readonly host = "fake";
  readonly killed: string[] = [];
  received = 0;
  constructor(private readonly script: { bytes: number; sendExit: number; sendStderr?: string; recvExit: number; recvStderr?: string; recvFailsEarly?: boolean }) {}
  run(): Promise<ExecResult> {
    throw new Error("not used");
  }
  async stream(argv: readonly string[]): Promise<ExecStream> {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let finish!: (r: ExecResult) => void;
    const done = new Promise<ExecResult>((resolve) => (finish = resolve));
    const exit = (code: number | null, message = "", signal: string | null = null): void => {
      stderr.end(message);
      stdout.end();
      finish({ stdout: "", stderr: "", exitCode: code, signal });
    };
    const name = argv[1] ?? "";
    let exited = false;
    const kill = (): void => {
      this.killed.push(name);
      if (!exited) {
        exited = true;
        exit(null, "", "SIGKILL");
      }
    };
    if (name === "send") {
      // Write in chunks with backpressure, as a real sender would; stop when killed.
      void (async () => {
        let left = this.script.bytes;
        while (left > 0 && !exited) {
          const n = Math.min(left, 16384);
          left -= n;
          if (!stdout.write(Buffer.alloc(n))) await new Promise((r) => setTimeout(r, 1));
        }
        if (!exited) {
          exited = true;
          exit(this.script.sendExit, this.script.sendStderr);
        }
      })();
    } else if (this.script.recvFailsEarly) {
      setImmediate(() => {
        exited = true;
        exit(this.script.recvExit, this.script.recvStderr);
      });
    } else {
      stdin.on("data", (b: Buffer) => (this.received += b.length));
      stdin.on("end", () => {
        exited = true;
        exit(this.script.recvExit, this.script.recvStderr);
      });
    }
    return { stdin, stdout, stderr, done, kill };
  }
  async close(): Promise<void> {}
}

describe("Zfs.sendReceive", () => {
  it("pipes the whole stream and succeeds when both ends do", async () => {
    const exec = new PipelineExecutor({ bytes: 1 << 20, sendExit: 0, recvExit: 0 });
    await new Zfs(exec).sendReceive("tank/a@s", "tank/b");
    expect(exec.received).toBe(1 << 20);
  });
  it("fails when the send fails even though the receive succeeded, naming the send's error", async () => {
    const exec = new PipelineExecutor({ bytes: 65536, sendExit: 1, sendStderr: "warning: cannot send 'tank/a@s': I/O error\n", recvExit: 0 });
    await expect(new Zfs(exec).sendReceive("tank/a@s", "tank/b")).rejects.toThrow(/zfs send: warning: cannot send 'tank\/a@s': I\/O error/);
  });
  it("reports the send's error, not the receive's complaint, when the send fails first", async () => {
    const exec = new PipelineExecutor({
      bytes: 10,
      sendExit: 1,
      sendStderr: "WARNING: could not send tank/a@s: does not exist\n",
      recvExit: 1,
      recvStderr: "cannot receive: failed to read from stream\n",
    });
    await expect(new Zfs(exec).sendReceive("tank/a@s", "tank/b")).rejects.toMatchObject({ kind: "NotFound", message: expect.stringContaining("zfs send") });
  });
  it("kills the send when the receive fails, so it cannot block forever, and reports the receive", async () => {
    const exec = new PipelineExecutor({
      bytes: 64 << 20,
      sendExit: 0,
      recvExit: 1,
      recvFailsEarly: true,
      recvStderr: "cannot receive new filesystem stream: destination 'tank/b' exists\n",
    });
    await expect(new Zfs(exec).sendReceive("tank/a@s", "tank/b")).rejects.toThrow(/zfs receive: cannot receive new filesystem stream: destination 'tank\/b' exists/);
    expect(exec.killed).toContain("send");
  });
});
