import pino from "pino";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { isZcsiError } from "../../src/errors.js";
import { DELETE_SNAPSHOT_PROGRAM, deleteSnapshotProgramArgs } from "../../src/volumes/delete-snapshot-program.js";
import { PoolHosts } from "../../src/volumes/hosts.js";
import { SnapshotService } from "../../src/volumes/snapshots.js";
import { zfsProgram } from "../../src/zfs/argv.js";
import { capabilitiesFromUsage } from "../../src/zfs/capabilities.js";
import { fixture } from "../fixtures/zfs/load.js";
import { fail, ok, ScriptedExecutor, type Reply } from "../harness/scripted-executor.js";

/**
 * SnapshotService.delete over a scripted pool host: on OpenZFS one channel program decides and
 * destroys, and the answer comes from the facts it returns; elsewhere the lookup and the destroy.
 * What the program does on a real pool is test/integration/snapshots.test.ts on the OpenZFS VM.
 */
const logger = pino({ level: "silent" });
const config = parseConfig({
  privateKeyFile: "/nonexistent",
  poolHosts: [{ name: "alice", address: "127.0.0.1", user: "zcsi", parentDataset: "tank/k8s", mountRoot: "/tank/k8s", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl" }],
});
const ref = { poolHost: "alice", dataset: "tank/k8s/pvc-1", snapshot: "snapshot-1" };
const NAME = "tank/k8s/pvc-1@snapshot-1";
const openzfs = fixture("openzfs", "zfs-version");
const zfsFuse = fixture("zfs-fuse", "zfs-version");

function service(version: Reply, script: Array<[RegExp, Reply]>): { snapshots: SnapshotService; exec: ScriptedExecutor } {
  const exec = new ScriptedExecutor([[/^zfs version$/, version], ...script]);
  return { snapshots: new SnapshotService(new PoolHosts([{ config: config.poolHosts[0]!, exec }]), logger), exec };
}

/** What the program returns (as `zfs program -j` prints it) for a snapshot with these own properties. */
function returned(snapshot: Record<string, string>, opts: { destroyed?: boolean; error?: number; dataset?: Record<string, string> } = {}): Reply {
  const value = {
    exists: true,
    snapshot: { defer_destroy: "off", creation: "1700000000", referenced: "4096", ...snapshot },
    dataset: opts.dataset ?? { "zcsi:csi-name": "pvc-1" },
    destroyed: opts.destroyed ?? false,
    error: opts.error ?? 0,
  };
  return ok(JSON.stringify({ return: value }) + "\n");
}

const commands = (exec: ScriptedExecutor): string[] => exec.calls.map((c) => c.slice(0, 2).join(" "));

describe("DeleteSnapshot on OpenZFS: one channel program", () => {
  it("deletes a CSI snapshot in one command, the name passed as an argument and never written into the script", async () => {
    const { snapshots, exec } = service(openzfs, [[/^zfs program/, returned({ "zcsi:csi-snapshot-name": "snapshot-1" }, { destroyed: true })]]);
    expect(await snapshots.delete(ref)).toBe(true);
    expect(commands(exec)).toEqual(["zfs version", "zfs program"]);
    expect(exec.calls[1]).toEqual(["zfs", "program", "-j", "tank", "-", NAME, ...deleteSnapshotProgramArgs(NAME).slice(1)]);
    expect(exec.options[1]?.stdin).toBe(DELETE_SNAPSHOT_PROGRAM);
    expect(DELETE_SNAPSHOT_PROGRAM).not.toContain("tank");
    expect(DELETE_SNAPSHOT_PROGRAM).not.toContain("zcsi:");
    // The capability probe is cached: the next delete is the program alone.
    await snapshots.delete(ref);
    expect(commands(exec).slice(2)).toEqual(["zfs program"]);
  });

  it("answers from the program's facts: gone or already deferred is OK, a scheduled snapshot is left, anything else is FAILED_PRECONDITION", async () => {
    const cases: Array<[string, Reply, boolean | "FailedPrecondition"]> = [
      ["absent", ok(JSON.stringify({ return: { exists: false } })), false],
      ["already deferred", returned({ "zcsi:csi-snapshot-name": "snapshot-1", defer_destroy: "on" }), false],
      ["scheduled", returned({ "zcsi:auto-snapshot": "hourly" }), false],
      ["taken by hand", returned({}), "FailedPrecondition"],
      ["not of a zcsi volume", returned({ "zcsi:csi-snapshot-name": "snapshot-1" }, { dataset: {} }), "FailedPrecondition"],
      ["marked by a group it is not a member of", returned({ "zcsi:csi-snapshot-name": "snapshot-1", "zcsi:group-members": "pvc-2,pvc-3" }), "FailedPrecondition"],
    ];
    for (const [what, reply, expected] of cases) {
      const snapshotName = what === "scheduled" ? "zcsi-auto-hourly-1" : "snapshot-1";
      const { snapshots, exec } = service(openzfs, [[/^zfs program/, reply]]);
      const answer = await snapshots.delete({ ...ref, snapshot: snapshotName }).catch((err: unknown) => (isZcsiError(err) ? err.kind : err));
      expect({ what, answer }).toEqual({ what, answer: expected });
      expect({ what, commands: commands(exec) }).toEqual({ what, commands: ["zfs version", "zfs program"] });
    }
  });

  it("says so when the program's rule and the lookup's disagree, rather than answering OK for a snapshot left in place", async () => {
    const { snapshots } = service(openzfs, [[/^zfs program/, returned({ "zcsi:csi-snapshot-name": "snapshot-1" }, { destroyed: false })]]);
    await expect(snapshots.delete(ref)).rejects.toMatchObject({ kind: "Internal", message: expect.stringMatching(/disagree/) });
  });

  it("retries with zfs destroy -d when the program could not destroy (EBUSY: a snapshot mounted under .zfs/snapshot)", async () => {
    const { snapshots, exec } = service(openzfs, [
      [/^zfs program/, returned({ "zcsi:csi-snapshot-name": "snapshot-1" }, { error: 16 })],
      [/^zfs destroy -d tank\/k8s\/pvc-1@snapshot-1$/, ok()],
    ]);
    expect(await snapshots.delete(ref)).toBe(true);
    expect(commands(exec)).toEqual(["zfs version", "zfs program", "zfs destroy"]);
  });

  it("falls back to the lookup and the destroy on a host that refuses channel programs, and asks no more", async () => {
    const get = ok(
      [
        ["tank/k8s/pvc-1", "zcsi:csi-name", "pvc-1", "local"],
        [NAME, "zcsi:csi-snapshot-name", "snapshot-1", "local"],
        [NAME, "defer_destroy", "off", "-"],
        [NAME, "creation", "1700000000", "-"],
        [NAME, "referenced", "4096", "-"],
      ]
        .map((r) => r.join("\t"))
        .join("\n") + "\n",
    );
    const { snapshots, exec } = service(openzfs, [
      [/^zfs program/, fail("cannot run channel program: permission denied\n")],
      [/^zfs get/, get],
      [/^zfs destroy -d/, ok()],
    ]);
    expect(await snapshots.delete(ref)).toBe(true);
    expect(await snapshots.delete(ref)).toBe(true);
    expect(commands(exec)).toEqual(["zfs version", "zfs program", "zfs get", "zfs destroy", "zfs get", "zfs destroy"]);
  });
});

describe("DeleteSnapshot on zfs-fuse: the lookup, then the destroy", () => {
  it("never tries a channel program", async () => {
    const { snapshots, exec } = service(zfsFuse, [[/^zfs get/, fail(`cannot open '${NAME}': dataset does not exist\n`)]]);
    expect(await snapshots.delete(ref)).toBe(false);
    expect(commands(exec)).toEqual(["zfs version", "zfs get"]);
  });
});

describe("zfs program argv and capability", () => {
  it("refuses an argument the CLI would read as an option", () => {
    expect(() => zfsProgram("tank", ["-n"])).toThrow(/must not start with "-"/);
    expect(() => zfsProgram("tank", ["a\u0000b"])).toThrow(/NUL/);
    expect(zfsProgram("tank", ["tank/a@s"])).toEqual(["zfs", "program", "-j", "tank", "-", "tank/a@s"]);
  });

  it("reads `zfs program` from an old CLI's usage text", () => {
    expect(capabilitiesFromUsage("\tprogram [-jn] [-t <instruction limit>] [-m <memory limit (b)>]\n\t    <pool> <program file> [lua args...]\n").channelPrograms).toBe(true);
    expect(capabilitiesFromUsage("\tsend [-RDp] [-[iI] snapshot] <snapshot>\n").channelPrograms).toBe(false);
  });
});
