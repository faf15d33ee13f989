import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config.js";
import { PARAMETERS, parseVolumeParameters } from "../../src/volumes/parameters.js";
import { planModification } from "../../src/volumes/modify.js";
import type { Volume } from "../../src/volumes/volume.js";
import {
  build,
  configDocument,
  containers,
  DEPLOY_DIR,
  find,
  hasKubectl,
  key,
  kubectlKustomize,
  miniKustomize,
  ofKind,
  REPO_ROOT,
  zcsiContainers,
  type K8sObject,
} from "./deploy-manifests.js";
import { schemaProblems } from "./k8s-schema.js";

/**
 * deploy/ as an operator applies it: built by kustomize, then every object checked against
 * the Kubernetes API's own schemas and against what zcsi's code expects.
 *
 * Schemas: kubernetes-models (JSON-schema validators generated from the Kubernetes OpenAPI
 * spec; types, required fields, formats) plus the OpenAPI-generated models of
 * @kubernetes/client-node for unknown fields (the OpenAPI schemas allow additional
 * properties, so a misspelt `mountPropogation` would otherwise pass, as it would with
 * `kubectl apply --validate=false`). The snapshot.storage.k8s.io kinds are CRDs: no npm
 * package carrying their schema is reachable from here, so they get targeted checks instead.
 */

const base = (): K8sObject[] => build(DEPLOY_DIR);
const withExamples = (): K8sObject[] => build(join(DEPLOY_DIR, "examples"));
const packageVersion = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;

const CRD_GROUPS = new Set(["snapshot.storage.k8s.io", "groupsnapshot.storage.k8s.io"]);


describe("kustomize build", () => {
  it("builds deploy/, and deploy/examples on top of it", () => {
    const driver = base();
    const all = withExamples();
    expect(driver.map((o) => o.kind)).toEqual(expect.arrayContaining(["Namespace", "CSIDriver", "Deployment", "DaemonSet", "ConfigMap", "Secret", "ServiceAccount", "ClusterRole"]));
    expect(all.map(key)).toEqual(expect.arrayContaining(driver.map(key)));
    expect(all.map((o) => o.kind)).toEqual(expect.arrayContaining(["StorageClass", "VolumeSnapshotClass", "PersistentVolumeClaim", "VolumeSnapshot", "VolumeAttributesClass"]));
    expect(new Set(all.map(key)).size).toBe(all.length);
  });

  it.skipIf(!hasKubectl())("the built-in subset builds exactly what kubectl kustomize builds", () => {
    for (const dir of [DEPLOY_DIR, join(DEPLOY_DIR, "examples")]) {
      const sort = (objs: K8sObject[]): K8sObject[] => [...objs].sort((a, b) => (key(a) < key(b) ? -1 : 1));
      expect(sort(miniKustomize(dir))).toEqual(sort(kubectlKustomize(dir)));
    }
  });

  it("the built-in subset refuses a kustomization field it does not implement", () => {
    const dir = mkdtempSync(join(tmpdir(), "zcsi-kustomize-"));
    try {
      writeFileSync(join(dir, "kustomization.yaml"), "resources: []\nnamePrefix: x-\n");
      expect(() => miniKustomize(dir)).toThrow(/namePrefix is not in the built-in kustomize subset/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("Kubernetes schemas", () => {
  it("every object of a built-in kind validates against the Kubernetes OpenAPI schema, with no unknown field", async () => {
    const objects = withExamples().filter((o) => !CRD_GROUPS.has(o.apiVersion.split("/")[0] ?? ""));
    expect(objects.length).toBeGreaterThan(15);
    const problems = (await Promise.all(objects.map(schemaProblems))).flat();
    expect(problems).toEqual([]);
  });

  it("catches a misspelt field, a wrong type and a missing required field", async () => {
    const node = find(base(), "DaemonSet", "zcsi-node") as K8sObject & { spec: { template: { spec: { containers: Array<Record<string, unknown>> } } } };
    const container = node.spec.template.spec.containers[0]!;
    (container.volumeMounts as Array<Record<string, unknown>>)[0]!.mountPropogation = "Bidirectional";
    container.ports = [{ containerPort: "9808" }];
    delete container.name;
    const problems = (await schemaProblems(node)).join("\n");
    expect(problems).toMatch(/unknown field spec\.template\.spec\.containers\[0\]\.volumeMounts\[0\]\.mountPropogation/);
    expect(problems).toMatch(/containerPort must be integer/);
    expect(problems).toMatch(/must have required property 'name'|must have required property name/);
  });

  it("a VolumeAttributesClass (no kubernetes-models schema yet) is checked by hand: required driverName, string parameters, no unknown field", async () => {
    const vac = find(withExamples(), "VolumeAttributesClass", "zfs-archive");
    expect(await schemaProblems(vac)).toEqual([]);
    const broken = { ...vac, driver: vac.driverName, parameters: { compression: "gzip", recordsize: 1048576 } } as K8sObject;
    delete broken.driverName;
    const problems = (await schemaProblems(broken)).join("\n");
    expect(problems).toMatch(/required property 'driverName'/);
    expect(problems).toMatch(/parameters\.recordsize must be string/);
    expect(problems).toMatch(/unknown field driver\b/);
  });

  it("snapshot objects (CRDs: no schema package reachable) have the fields the snapshot controller requires", () => {
    const all = withExamples();
    for (const vsc of ofKind(all, "VolumeSnapshotClass")) {
      expect(vsc.apiVersion).toBe("snapshot.storage.k8s.io/v1");
      expect(Object.keys(vsc).sort()).toEqual(expect.arrayContaining(["driver", "deletionPolicy"]));
      expect(["Delete", "Retain"]).toContain(vsc.deletionPolicy);
      for (const field of Object.keys(vsc)) expect(["apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"]).toContain(field);
    }
    for (const vs of ofKind(all, "VolumeSnapshot")) {
      expect(vs.apiVersion).toBe("snapshot.storage.k8s.io/v1");
      const spec = vs.spec as { volumeSnapshotClassName?: string; source?: Record<string, unknown> };
      expect(Object.keys(spec.source ?? {})).toEqual(["persistentVolumeClaimName"]);
      expect(vs.metadata.namespace).toBeTruthy();
    }
    // The group kinds in the API version csi-snapshotter v8.7 serves (v1 since v8.6, CHANGELOG-8.6).
    const classes = ofKind(all, "VolumeGroupSnapshotClass");
    expect(classes.length).toBeGreaterThan(0);
    for (const vgsc of classes) {
      expect(vgsc.apiVersion).toBe("groupsnapshot.storage.k8s.io/v1");
      expect(["Delete", "Retain"]).toContain(vgsc.deletionPolicy);
      for (const field of Object.keys(vgsc)) expect(["apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"]).toContain(field);
    }
    for (const vgs of ofKind(all, "VolumeGroupSnapshot")) {
      expect(vgs.apiVersion).toBe("groupsnapshot.storage.k8s.io/v1");
      const spec = vgs.spec as { volumeGroupSnapshotClassName?: string; source?: { selector?: { matchLabels?: Record<string, string> } } };
      expect(Object.keys(spec.source ?? {})).toEqual(["selector"]);
      expect(classes.map((c) => c.metadata.name)).toContain(spec.volumeGroupSnapshotClassName);
      // The selector picks the example PVC, in the VolumeGroupSnapshot's namespace.
      const pvc = find(all, "PersistentVolumeClaim", "zcsi-example-data");
      expect(pvc.metadata.namespace).toBe(vgs.metadata.namespace);
      for (const [k, v] of Object.entries(spec.source?.selector?.matchLabels ?? {})) expect(pvc.metadata.labels?.[k]).toBe(v);
    }
  });
});

describe("images", () => {
  it("pins every image by version tag or digest, never latest", () => {
    for (const { container } of containers(withExamples())) {
      const image = container.image;
      const digest = /@sha256:[0-9a-f]{64}$/.test(image);
      const tag = /:([^/:@]+)(@|$)/.exec(image)?.[1];
      expect(digest || (tag !== undefined && /[0-9]/.test(tag) && tag !== "latest"), `${container.name}: ${image}`).toBe(true);
    }
  });

  it("uses the upstream sig-storage sidecars and the zcsi image of this package version", () => {
    const sidecars = containers(base())
      .map((c) => c.container.image)
      .filter((image) => image.startsWith("registry.k8s.io/"));
    expect(new Set(sidecars.map((image) => image.replace(/:v[0-9]+\.[0-9]+\.[0-9]+$/, "")))).toEqual(
      new Set([
        "registry.k8s.io/sig-storage/csi-provisioner",
        "registry.k8s.io/sig-storage/csi-snapshotter",
        "registry.k8s.io/sig-storage/csi-resizer",
        "registry.k8s.io/sig-storage/csi-attacher",
        "registry.k8s.io/sig-storage/livenessprobe",
        "registry.k8s.io/sig-storage/csi-node-driver-registrar",
      ]),
    );
    for (const { container } of zcsiContainers(base())) expect(container.image.endsWith(`/zcsi:${packageVersion}`), container.image).toBe(true);
  });
});

describe("driver wiring", () => {
  const envValue = (c: { env?: Array<{ name: string; value?: string }> }, name: string): string | undefined => c.env?.find((e) => e.name === name)?.value;

  it("uses one driver name everywhere: CSIDriver, config, kubelet registration, StorageClasses, VolumeSnapshotClass, VolumeAttributesClass", () => {
    const all = withExamples();
    const driver = ofKind(all, "CSIDriver").map((d) => d.metadata.name);
    expect(driver).toEqual(["zfs.zcsi.dev"]);
    const name = driver[0]!;
    expect(parseConfig(configDocument(all)).driverName).toBe(name);
    for (const sc of ofKind(all, "StorageClass")) expect(sc.provisioner).toBe(name);
    for (const vsc of ofKind(all, "VolumeSnapshotClass")) expect(vsc.driver).toBe(name);
    for (const vgsc of ofKind(all, "VolumeGroupSnapshotClass")) expect(vgsc.driver).toBe(name);
    for (const vac of ofKind(all, "VolumeAttributesClass")) expect(vac.driverName).toBe(name);
    const registrar = containers(all).find((c) => c.container.name === "node-driver-registrar")!;
    expect(registrar.container.args).toContain(`--kubelet-registration-path=/var/lib/kubelet/plugins/${name}/csi.sock`);
    const volumes = registrar.podSpec.volumes as Array<{ name: string; hostPath?: { path: string } }>;
    expect(volumes.find((v) => v.name === "socket-dir")?.hostPath?.path).toBe(`/var/lib/kubelet/plugins/${name}`);
  });

  it("CSIDriver: attach required (the serving host is chosen at attach time), pod info on mount, persistent volumes only, no fsGroup rewriting", () => {
    expect(find(base(), "CSIDriver", "zfs.zcsi.dev").spec).toMatchObject({
      attachRequired: true,
      podInfoOnMount: true,
      volumeLifecycleModes: ["Persistent"],
      fsGroupPolicy: "None",
    });
  });

  it("the ConfigMap holds a config zcsi accepts, and every file a zcsi container reads is mounted into it", () => {
    const all = base();
    const config = parseConfig(configDocument(all));
    for (const { container, podSpec, role } of zcsiContainers(all)) {
      const mounts = (container.volumeMounts ?? []) as Array<{ name: string; mountPath: string }>;
      const volumes = podSpec.volumes as Array<{ name: string; configMap?: { name: string }; secret?: { secretName: string } }>;
      const mountedFrom = (path: string): { name: string; configMap?: { name: string }; secret?: { secretName: string } } | undefined => {
        const mount = mounts.find((m) => path.startsWith(m.mountPath.replace(/\/?$/, "/")));
        return mount && volumes.find((v) => v.name === mount.name);
      };
      const configPath = envValue(container, "ZCSI_CONFIG");
      expect(configPath, `${role}: ZCSI_CONFIG`).toBeDefined();
      expect(mountedFrom(configPath!)?.configMap?.name, `${role}: ${configPath}`).toBe("zcsi-config");
      expect(configPath!.endsWith("/config.yaml")).toBe(true);
      const keyFile = envValue(container, "ZCSI_PRIVATE_KEY_FILE") ?? config.privateKeyFile;
      const secret = mountedFrom(keyFile)?.secret?.secretName;
      expect(secret, `${role}: ${keyFile}`).toBe(role === "node" ? "zcsi-node-ssh" : "zcsi-controller-ssh");
      const secretObj = find(all, "Secret", secret!) as K8sObject & { stringData?: Record<string, string> };
      expect(Object.keys(secretObj.stringData ?? {})).toContain(keyFile.split("/").pop());
    }
  });

  it("mounts every pool host's mountRoot into the node plugin at the same path, propagating new dataset mounts", () => {
    const all = base();
    const node = zcsiContainers(all).find((c) => c.role === "node")!;
    const mounts = node.container.volumeMounts as Array<{ name: string; mountPath: string; mountPropagation?: string }>;
    const volumes = node.podSpec.volumes as Array<{ name: string; hostPath?: { path: string } }>;
    for (const host of parseConfig(configDocument(all)).poolHosts) {
      const mount = mounts.find((m) => m.mountPath === host.mountRoot);
      expect(mount, `mountRoot ${host.mountRoot} of ${host.name}`).toBeDefined();
      expect(mount?.mountPropagation).toBe("HostToContainer");
      expect(volumes.find((v) => v.name === mount?.name)?.hostPath?.path).toBe(host.mountRoot);
    }
  });

  it("runs every zcsi role: controller, snapshotter and replicator in the controller pod, node in the DaemonSet", () => {
    const roles = zcsiContainers(base()).map((c) => `${c.workload.kind}/${c.workload.metadata.name}: ${c.role}`);
    expect(roles.sort()).toEqual([
      "DaemonSet/zcsi-node: node",
      "Deployment/zcsi-controller: controller",
      "Deployment/zcsi-controller: replicator",
      "Deployment/zcsi-controller: snapshotter",
    ]);
    const node = zcsiContainers(base()).find((c) => c.role === "node")!;
    expect(node.container.args).toEqual(expect.arrayContaining(["--node-id=$(NODE_NAME)", "--endpoint=unix:///csi/csi.sock"]));
    expect((node.container.env as Array<{ name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>).find((e) => e.name === "NODE_NAME")?.valueFrom?.fieldRef?.fieldPath).toBe("spec.nodeName");
  });

  it("starts zcsi with flags and roles its command line knows (an unknown flag stops zcsi at start)", () => {
    const cli = readFileSync(join(REPO_ROOT, "src/cli.ts"), "utf8");
    const options = new Set([...cli.matchAll(/^\s+(?:"([a-z][a-z-]*)"|([a-z]+)): \{ type: "(?:string|boolean)"/gm)].map((m) => m[1] ?? m[2]));
    expect(options).toContain("endpoint");
    // Roles whose command line is still being written; once cli.ts has their case, they are checked like the others.
    const pendingRoles = new Set<string>();
    for (const { container, role } of zcsiContainers(base())) {
      if (!cli.includes(`case "${role}":`)) {
        expect(pendingRoles.has(role), `cli.ts has no role ${role}`).toBe(true);
        continue;
      }
      for (const arg of (container.args ?? []).slice(1)) {
        const flag = /^--([a-z][a-z-]*)(=|$)/.exec(arg)?.[1];
        expect(flag, `${role}: ${arg}`).toBeDefined();
        expect(options.has(flag), `${role}: ${arg}`).toBe(true);
      }
    }
  });

  it("elects leaders in every controller sidecar and passes PVC and snapshot metadata", () => {
    const args = (name: string): string[] => containers(base()).find((c) => c.container.name === name)!.container.args ?? [];
    for (const sidecar of ["csi-provisioner", "csi-snapshotter", "csi-resizer", "csi-attacher"]) expect(args(sidecar)).toContain("--leader-election");
    expect(args("csi-provisioner")).toContain("--extra-create-metadata");
    expect(args("csi-snapshotter")).toContain("--extra-create-metadata");
    // Every CSI client in a pod talks to the socket its zcsi container serves.
    for (const { container } of containers(base())) {
      const address = container.args?.find((a) => a.startsWith("--csi-address="));
      if (address) expect(address).toBe("--csi-address=/csi/csi.sock");
    }
  });
});

describe("privileges", () => {
  it("only the node plugin is privileged; it has the host network, Bidirectional kubelet mounts and /dev/fuse", () => {
    const all = base();
    const privileged = containers(all).filter((c) => (c.container.securityContext as { privileged?: boolean } | undefined)?.privileged === true);
    expect(privileged.map((c) => c.container.name)).toEqual(["zcsi-node"]);
    const node = privileged[0]!;
    expect(node.podSpec.hostNetwork).toBe(true);
    expect(node.podSpec.automountServiceAccountToken).toBe(false);
    const mounts = node.container.volumeMounts as Array<{ name: string; mountPath: string; mountPropagation?: string }>;
    expect(mounts.find((m) => m.mountPath === "/var/lib/kubelet")?.mountPropagation).toBe("Bidirectional");
    const fuse = mounts.find((m) => m.mountPath === "/dev/fuse");
    const volumes = node.podSpec.volumes as Array<{ name: string; hostPath?: { path: string; type?: string } }>;
    expect(volumes.find((v) => v.name === fuse?.name)?.hostPath).toEqual({ path: "/dev/fuse", type: "CharDevice" });
    // Bidirectional propagation is only allowed in privileged containers.
    for (const c of containers(all)) {
      const bidi = ((c.container.volumeMounts ?? []) as Array<{ mountPropagation?: string }>).some((m) => m.mountPropagation === "Bidirectional");
      if (bidi) expect(c.container.name).toBe("zcsi-node");
    }
  });

  it("runs the controller pod as non-root, without capabilities, on a read-only root filesystem", () => {
    const controller = find(base(), "Deployment", "zcsi-controller");
    const [first] = containers([controller]);
    const podSecurity = first!.podSpec.securityContext as Record<string, unknown>;
    expect(podSecurity).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(podSecurity.runAsUser).not.toBe(0);
    expect(first!.podSpec.hostNetwork).toBeUndefined();
    for (const { container } of containers([controller])) {
      expect(container.securityContext, container.name).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    }
  });

  it("ships no key material: Secrets and the ConfigMap hold placeholders only", () => {
    for (const obj of [...ofKind(base(), "Secret"), ...ofKind(base(), "ConfigMap")]) {
      const text = JSON.stringify({ data: obj.data, stringData: obj.stringData });
      expect(text, key(obj)).not.toMatch(/PRIVATE KEY/);
      // A private key (OpenSSH or PEM) is long unbroken base64; a Secret with any is not a placeholder.
      if (obj.kind === "Secret") expect(text, key(obj)).not.toMatch(/[A-Za-z0-9+/=]{40,}/);
    }
    // The pinned host keys are public, but the example must not pin a real host either.
    for (const host of parseConfig(configDocument(base())).poolHosts) {
      for (const hostKey of host.hostKeys) expect(hostKey, host.name).toMatch(/Replace/);
    }
  });
});

describe("examples", () => {
  it("StorageClass parameters are all ones CreateVolume accepts (a PVC of the class would fail otherwise)", () => {
    const all = withExamples();
    const hosts = parseConfig(configDocument(all)).poolHosts.map((h) => h.name);
    for (const sc of ofKind(all, "StorageClass")) {
      const params = (sc.parameters ?? {}) as Record<string, string>;
      expect(() => parseVolumeParameters(params, hosts), sc.metadata.name).not.toThrow();
    }
    const protectedClass = find(all, "StorageClass", "zfs-protected");
    expect(Object.keys(protectedClass.parameters as object)).toEqual(expect.arrayContaining(["snapshotSchedule", "replicateTo", "replicationInterval"]));
  });

  it("VolumeAttributesClass parameters are all ones ControllerModifyVolume accepts on a volume of either StorageClass", () => {
    const all = withExamples();
    const hosts = parseConfig(configDocument(all)).poolHosts.map((h) => h.name);
    const vacs = ofKind(all, "VolumeAttributesClass");
    expect(vacs.length).toBeGreaterThan(0);
    for (const vac of vacs) {
      const params = (vac.parameters ?? {}) as Record<string, string>;
      expect(Object.keys(params).length, vac.metadata.name).toBeGreaterThan(0);
      for (const sc of ofKind(all, "StorageClass")) {
        const stored = parseVolumeParameters((sc.parameters ?? {}) as Record<string, string>, hosts).canonical;
        const volume: Volume = { id: "x", ref: { poolHost: "elsewhere", dataset: "tank/k8s/pvc-1" }, csiName: "pvc-1", capacityBytes: 1n, sizeMode: "refquota", usedBytes: 0n, mountpoint: "", mounted: true, state: "ready", parameters: stored };
        expect(() => planModification(volume, params, hosts), `${vac.metadata.name} on ${sc.metadata.name}`).not.toThrow();
      }
    }
  });

  it("the PVC, the Deployment and the VolumeSnapshot refer to each other and to the classes", () => {
    const all = withExamples();
    const pvc = find(all, "PersistentVolumeClaim", "zcsi-example-data") as K8sObject & { spec: { storageClassName: string } };
    expect(ofKind(all, "StorageClass").map((s) => s.metadata.name)).toContain(pvc.spec.storageClassName);
    const app = find(all, "Deployment", "zcsi-example");
    const [first] = containers([app]);
    const claims = (first!.podSpec.volumes as Array<{ persistentVolumeClaim?: { claimName: string } }>).map((v) => v.persistentVolumeClaim?.claimName);
    expect(claims).toContain(pvc.metadata.name);
    expect(app.metadata.namespace).toBe(pvc.metadata.namespace);
    const snapshot = find(all, "VolumeSnapshot", "zcsi-example-data-1") as K8sObject & { spec: { volumeSnapshotClassName: string; source: { persistentVolumeClaimName: string } } };
    expect(snapshot.spec.source.persistentVolumeClaimName).toBe(pvc.metadata.name);
    expect(snapshot.metadata.namespace).toBe(pvc.metadata.namespace);
    expect(ofKind(all, "VolumeSnapshotClass").map((v) => v.metadata.name)).toContain(snapshot.spec.volumeSnapshotClassName);
  });
});
