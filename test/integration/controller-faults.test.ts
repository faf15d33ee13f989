import { status } from "@grpc/grpc-js";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateVolumeRequest } from "../../src/gen/csi/v1/CreateVolumeRequest.js";
import { startControllerEnv, type ControllerEnv } from "../harness/controller.js";
import { failure } from "../harness/csi-client.js";

const cap = { mount: {}, accessMode: { mode: "SINGLE_NODE_WRITER" as const } };
const req = (name: string): CreateVolumeRequest => ({ name, capacityRange: { requiredBytes: String(4 << 20) }, volumeCapabilities: [cap] });

describe("a pool host whose host key does not match the pinned one", () => {
  let env: ControllerEnv;
  let commandsBefore: string;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "zcsi-otherkey-"));
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "k")]);
    const otherKey = readFileSync(join(dir, "k.pub"), "utf8").trim();
    rmSync(dir, { recursive: true, force: true });
    env = await startControllerEnv({ pinnedHostKey: otherKey });
    commandsBefore = (await env.zfs("list", "-H", "-o", "name", "-r", env.hosts[0]!.parent)).stdout;
  });
  afterAll(() => env?.stop());

  it("is refused: UNAVAILABLE naming the host and both fingerprints, and nothing is created", async () => {
    const err = await failure(env.client.createVolume(req("pvc-mitm")));
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.details).toMatch(/alice/);
    expect(err.details.match(/SHA256:[A-Za-z0-9+/]{43}/g)?.length).toBeGreaterThanOrEqual(2);
    expect((await env.zfs("list", "-H", "-o", "name", "-r", env.hosts[0]!.parent)).stdout).toBe(commandsBefore);
  });

  it("makes Probe report not ready", async () => {
    expect((await env.client.probe({})).ready?.value).toBe(false);
  });
});

describe("pool host outages", () => {
  let env: ControllerEnv;
  beforeAll(async () => {
    env = await startControllerEnv();
  });
  afterAll(() => env?.stop());

  it("answers UNAVAILABLE while sshd is down, and recovers on the same connection pool once it is back", async () => {
    await env.client.createVolume(req("pvc-before"));
    await env.hosts[0]!.sshd.kill();
    expect((await failure(env.client.createVolume(req("pvc-during")))).code).toBe(status.UNAVAILABLE);
    expect((await failure(env.client.listVolumes({}))).code).toBe(status.UNAVAILABLE);
    expect((await env.client.probe({})).ready?.value).toBe(false);
    await env.hosts[0]!.sshd.restart();
    // The executor backs off between connection attempts; a sidecar retries, and so do we.
    let created;
    for (let attempt = 0; attempt < 60 && !created; attempt++) {
      created = await env.client.createVolume(req("pvc-during")).catch(async (err: { code: number }) => {
        expect(err.code).toBe(status.UNAVAILABLE);
        await new Promise((r) => setTimeout(r, 250));
        return undefined;
      });
    }
    expect(created?.volume?.volumeId).toBe(`alice:${env.hosts[0]!.parent}/pvc-during`);
    const listed = (await env.client.listVolumes({})).entries.map((e) => e.volume?.volumeId);
    expect(listed).toEqual([`alice:${env.hosts[0]!.parent}/pvc-before`, `alice:${env.hosts[0]!.parent}/pvc-during`]);
  });

  it("reports not ready while the pool is not imported, and ready again after import", async () => {
    const { pool, importArgs } = env.hosts[0]!.pool;
    expect((await env.client.probe({})).ready?.value).toBe(true);
    const exported = await env.zfs("zpool", "export", pool);
    expect(exported.exitCode, exported.stderr).toBe(0);
    try {
      expect((await env.client.probe({})).ready?.value).toBe(false);
      expect((await failure(env.client.createVolume(req("pvc-no-pool")))).code).not.toBe(status.OK);
    } finally {
      const imported = await env.zfs("zpool", "import", ...importArgs, pool);
      expect(imported.exitCode, imported.stderr).toBe(0);
    }
    expect((await env.client.probe({})).ready?.value).toBe(true);
  });
});

describe("one pool host down of two", () => {
  let env: ControllerEnv;
  const capOf = (name: string, poolHost?: string): CreateVolumeRequest => ({ ...req(name), ...(poolHost && { parameters: { poolHost } }) });
  beforeAll(async () => {
    env = await startControllerEnv({ hostNames: ["alice", "bob"] });
  });
  afterAll(() => env?.stop());

  it("degrades only that host's volumes: Probe stays ready, the other host provisions, lists and serves", async () => {
    const onAlice = (await env.client.createVolume(capOf("pvc-on-alice", "alice"))).volume!.volumeId;
    const onBob = (await env.client.createVolume(capOf("pvc-on-bob", "bob"))).volume!.volumeId;
    expect((await env.client.listVolumes({})).entries).toHaveLength(2); // remembered as last seen
    await env.hosts[1]!.sshd.kill();
    try {
      expect((await env.client.probe({})).ready?.value).toBe(true);
      // Unpinned: placed on the host that answers.
      const placed = await env.client.createVolume(req("pvc-while-bob-down"));
      expect(placed.volume!.volumeId).toBe(`alice:${env.hosts[0]!.parent}/pvc-while-bob-down`);
      // Pinned to the down host, or about one of its volumes: UNAVAILABLE naming it.
      const pinned = await failure(env.client.createVolume(capOf("pvc-pinned-to-bob", "bob")));
      expect(pinned.code).toBe(status.UNAVAILABLE);
      expect(pinned.details).toMatch(/bob/);
      expect((await failure(env.client.controllerGetVolume({ volumeId: onBob }))).code).toBe(status.UNAVAILABLE);
      expect((await env.client.controllerGetVolume({ volumeId: onAlice })).status?.volumeCondition?.abnormal).toBe(false);
      // ListVolumes: alice's volumes as usual, bob's as last seen and abnormal with the reason.
      const listed = new Map((await env.client.listVolumes({})).entries.map((e) => [e.volume!.volumeId, e.status!.volumeCondition!]));
      expect([...listed.keys()].sort()).toEqual([onAlice, placed.volume!.volumeId, onBob].sort());
      expect(listed.get(onAlice)?.abnormal).toBe(false);
      expect(listed.get(onBob)?.abnormal).toBe(true);
      expect(listed.get(onBob)?.message).toMatch(/bob/);
      // Both down: the controller can serve nothing, and says so.
      await env.hosts[0]!.sshd.kill();
      try {
        expect((await env.client.probe({})).ready?.value).toBe(false);
      } finally {
        await env.hosts[0]!.sshd.restart();
      }
    } finally {
      await env.hosts[1]!.sshd.restart();
    }
    // Back: bob's volume answers again (the executor retries after its backoff; so do we).
    let condition;
    for (let attempt = 0; attempt < 60 && !condition; attempt++) {
      condition = await env.client.controllerGetVolume({ volumeId: onBob }).then(
        (r) => r.status?.volumeCondition,
        async () => new Promise<undefined>((r) => setTimeout(() => r(undefined), 250)),
      );
    }
    expect(condition?.abnormal).toBe(false);
  });
});
