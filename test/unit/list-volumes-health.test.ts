import pino from "pino";
import { describe, expect, it } from "vitest";
import { ControllerService } from "../../src/csi/controller.js";
import { HEALTH_REUSE_MS, PoolHosts } from "../../src/volumes/hosts.js";
import { PROP } from "../../src/volumes/properties.js";
import { VolumeService } from "../../src/volumes/service.js";
import { SnapshotService } from "../../src/volumes/snapshots.js";
import { FakePoolHost, TWO_POOL_HOSTS } from "../harness/fake-pool-host.js";

/**
 * ListVolumes and the hosts' health (issue 17, item 3): a first page reuses a check that found
 * its host up less than HEALTH_REUSE_MS ago instead of running `zpool list` and two `zfs get`s
 * beside the listing; a host found down, or whose listing failed, is checked again. The clock
 * is injected: no test waits.
 */

const logger = pino({ level: "silent" });

function poolHost(name: string, pool: string): FakePoolHost {
  const space = (available: string): Map<string, string> => new Map([["used", "1000"], ["available", available]]);
  const volume = new Map(
    Object.entries({ [PROP.csiName]: "pvc-1", [PROP.state]: "ready", [PROP.parameters]: "{}", refquota: "1073741824", referenced: "4096", mountpoint: `/m/${pool}/pvc-1`, mounted: "yes" }),
  );
  return new FakePoolHost(
    name,
    new Map([
      [pool, space("9000000000")],
      [`${pool}/k8s`, space("8000000000")],
      [`${pool}/k8s/pvc-1`, volume],
    ]),
  );
}

function controller() {
  const clock = { ms: 1_000_000 };
  const alice = poolHost("alice", "tank");
  const bob = poolHost("bob", "pool2");
  const hosts = new PoolHosts(
    [
      { config: TWO_POOL_HOSTS.poolHosts[0]!, exec: alice },
      { config: TWO_POOL_HOSTS.poolHosts[1]!, exec: bob },
    ],
    { now: () => clock.ms },
  );
  const service = new ControllerService(TWO_POOL_HOSTS, new VolumeService(hosts, logger), new SnapshotService(hosts, logger), logger);
  /** Each volume's condition, by id. */
  const list = async () => new Map((await service.listVolumes({ maxEntries: 0, startingToken: "" })).entries!.map((e) => [e.volume!.volumeId, e.status!.volumeCondition!]));
  /** Commands each host ran since the last call, as `zpool list` / `zfs get` names. */
  const ran = (host: FakePoolHost): string[] => host.commands.splice(0).map((argv) => `${argv[0]} ${argv[1]}${argv.includes("-d") ? " -d" : ""}`);
  return { clock, alice, bob, list, ran };
}

describe("ListVolumes, the hosts' health", () => {
  it("checks each host beside its listing, then reuses a check that found it up for HEALTH_REUSE_MS: a walk is then one listing per host", async () => {
    const { clock, alice, bob, list, ran } = controller();
    await list();
    expect(ran(alice).sort()).toEqual(["zfs get", "zfs get", "zfs get -d", "zpool list"]);
    expect(ran(bob).sort()).toEqual(["zfs get", "zfs get", "zfs get -d", "zpool list"]);
    clock.ms += HEALTH_REUSE_MS - 1;
    const listed = await list();
    expect(ran(alice)).toEqual(["zfs get -d"]);
    expect(ran(bob)).toEqual(["zfs get -d"]);
    expect([...listed.values()].every((c) => !c.abnormal)).toBe(true);
    clock.ms += 1;
    await list();
    expect(ran(alice)).toContain("zpool list");
  });

  it("sees a pool that degraded at the first ListVolumes after the reuse window, and checks a host found down every time", async () => {
    const { clock, alice, bob, list, ran } = controller();
    await list();
    alice.poolHealth = "DEGRADED";
    clock.ms += HEALTH_REUSE_MS;
    const degraded = await list();
    expect(degraded.get("alice:tank/k8s/pvc-1")).toEqual({ abnormal: true, message: "pool tank on alice is DEGRADED" });
    expect(degraded.get("bob:pool2/k8s/pvc-1")?.abnormal).toBe(false);
    ran(alice);
    ran(bob);
    // Down is never reused: the next call, at once, checks alice again (and finds her back).
    alice.poolHealth = "ONLINE";
    const back = await list();
    expect(ran(alice)).toContain("zpool list");
    expect(ran(bob)).toEqual(["zfs get -d"]);
    expect(back.get("alice:tank/k8s/pvc-1")?.abnormal).toBe(false);
  });

  it("lists a host whose listing fails abnormal at once, however fresh its check, and checks it on the next call", async () => {
    const { clock, alice, bob, list, ran } = controller();
    await list();
    ran(alice);
    ran(bob);
    bob.down = true;
    clock.ms += 1;
    const during = await list();
    expect(during.get("bob:pool2/k8s/pvc-1")).toEqual({ abnormal: true, message: expect.stringMatching(/bob: connection refused/) });
    expect(during.get("alice:tank/k8s/pvc-1")?.abnormal).toBe(false);
    expect(ran(alice)).toEqual(["zfs get -d"]);
    bob.down = false;
    clock.ms += 1;
    await list();
    expect(ran(bob)).toContain("zpool list");
    expect(ran(alice)).toEqual(["zfs get -d"]);
  });
});
