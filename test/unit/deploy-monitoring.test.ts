import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { ConfigMap } from "kubernetes-models/v1";
import { afterAll, describe, expect, it } from "vitest";
import { monitoringExpressions, readAlertRules, readDashboard, MONITORING_DIR } from "../harness/monitoring.js";
import { parsePromQL } from "../harness/promql.js";
import { build, containers, DEPLOY_DIR, hasKubectl, key, kubectlKustomize, miniKustomize, ofKind, REPO_ROOT, zcsiContainers, type K8sObject } from "./deploy-manifests.js";

/**
 * deploy/monitoring, the optional kustomize component (dashboard, alerts, PodMonitors), built
 * the way a user's overlay builds it: deploy/ plus `components: [monitoring]`.
 *
 * Validation: the ConfigMap against the Kubernetes schema (kubernetes-models). PodMonitor and
 * PrometheusRule are Prometheus Operator CRDs (monitoring.coreos.com/v1) with no schema
 * package in the npm cache, so MONITORING_SCHEMAS below states, by hand from the operator's
 * API reference, the fields of the parts zcsi uses: required ones, value types, Prometheus
 * duration syntax, relabel actions, and every field name allowed at each level, so a misspelt
 * or misplaced field fails as the API server's structural schema would reject it. Whether the
 * monitors scrape what the roles serve, and whether the PromQL parses, is checked against
 * deploy/base and by test/harness/promql.ts; test/integration/monitoring.test.ts checks the
 * PromQL against the real roles' /metrics.
 */

const overlayDir = mkdtempSync(join(tmpdir(), "zcsi-monitoring-overlay-"));
// Relative paths: kustomize refuses absolute ones.
writeFileSync(
  join(overlayDir, "kustomization.yaml"),
  [
    "apiVersion: kustomize.config.k8s.io/v1beta1",
    "kind: Kustomization",
    "resources:",
    `  - ${relative(overlayDir, DEPLOY_DIR)}`,
    "components:",
    `  - ${relative(overlayDir, MONITORING_DIR)}`,
    "",
  ].join("\n"),
);
afterAll(() => rmSync(overlayDir, { recursive: true, force: true }));

const withMonitoring = (): K8sObject[] => build(overlayDir);
const added = (): K8sObject[] => {
  const base = new Set(build(DEPLOY_DIR).map(key));
  return withMonitoring().filter((o) => !base.has(key(o)));
};

/** A field's expected value; `{ fields }` is an object whose every key must be listed. */
type Shape =
  | "string"
  | "integer"
  | "boolean"
  | "duration"
  | "intOrString"
  | "object"
  | { readonly array: Shape }
  | { readonly map: Shape }
  | { readonly enum: readonly string[] }
  | { readonly fields: Readonly<Record<string, Shape>>; readonly required?: readonly string[] };

/** Prometheus' duration, as the CRDs' `Duration` pattern states it. */
const DURATION = /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/;

const labelSelector: Shape = {
  fields: {
    matchLabels: { map: "string" },
    matchExpressions: { array: { fields: { key: "string", operator: { enum: ["In", "NotIn", "Exists", "DoesNotExist"] }, values: { array: "string" } }, required: ["key", "operator"] } },
  },
};
const relabelConfig: Shape = {
  fields: {
    sourceLabels: { array: "string" },
    separator: "string",
    targetLabel: "string",
    regex: "string",
    modulus: "integer",
    replacement: "string",
    action: { enum: ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"] },
  },
};
const objectMeta: Shape = { fields: { name: "string", namespace: "string", labels: { map: "string" }, annotations: { map: "string" } }, required: ["name"] };

/** monitoring.coreos.com/v1, the parts zcsi uses (Prometheus Operator API reference: PodMonitorSpec, PodMetricsEndpoint, PrometheusRuleSpec, RuleGroup, Rule). */
const MONITORING_SCHEMAS: Readonly<Record<string, Shape>> = {
  PodMonitor: {
    fields: {
      apiVersion: "string",
      kind: "string",
      metadata: objectMeta,
      spec: {
        required: ["selector", "podMetricsEndpoints"],
        fields: {
          jobLabel: "string",
          podTargetLabels: { array: "string" },
          selector: labelSelector,
          namespaceSelector: { fields: { any: "boolean", matchNames: { array: "string" } } },
          sampleLimit: "integer",
          targetLimit: "integer",
          labelLimit: "integer",
          labelNameLengthLimit: "integer",
          labelValueLengthLimit: "integer",
          keepDroppedTargets: "integer",
          attachMetadata: { fields: { node: "boolean" } },
          scrapeClass: "string",
          scrapeProtocols: { array: "string" },
          podMetricsEndpoints: {
            array: {
              fields: {
                port: "string",
                portNumber: "integer",
                targetPort: "intOrString",
                path: "string",
                scheme: { enum: ["http", "https", "HTTP", "HTTPS"] },
                params: { map: { array: "string" } },
                interval: "duration",
                scrapeTimeout: "duration",
                honorLabels: "boolean",
                honorTimestamps: "boolean",
                trackTimestampsStaleness: "boolean",
                filterRunning: "boolean",
                enableHttp2: "boolean",
                followRedirects: "boolean",
                proxyUrl: "string",
                relabelings: { array: relabelConfig },
                metricRelabelings: { array: relabelConfig },
                tlsConfig: "object",
                basicAuth: "object",
                bearerTokenSecret: "object",
                authorization: "object",
                oauth2: "object",
              },
            },
          },
        },
      },
    },
    required: ["apiVersion", "kind", "metadata", "spec"],
  },
  PrometheusRule: {
    required: ["apiVersion", "kind", "metadata", "spec"],
    fields: {
      apiVersion: "string",
      kind: "string",
      metadata: objectMeta,
      spec: {
        fields: {
          groups: {
            array: {
              required: ["name"],
              fields: {
                name: "string",
                labels: { map: "string" },
                interval: "duration",
                query_offset: "duration",
                limit: "integer",
                partial_response_strategy: "string",
                rules: {
                  array: {
                    required: ["expr"],
                    fields: { record: "string", alert: "string", expr: "intOrString", for: "duration", keep_firing_for: "duration", labels: { map: "string" }, annotations: { map: "string" } },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

function shapeProblems(value: unknown, shape: Shape, path: string): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
  if (shape === "string") return typeof value === "string" ? [] : [`${path} must be a string`];
  if (shape === "integer") return Number.isInteger(value) ? [] : [`${path} must be an integer`];
  if (shape === "boolean") return typeof value === "boolean" ? [] : [`${path} must be a boolean`];
  if (shape === "intOrString") return typeof value === "string" || Number.isInteger(value) ? [] : [`${path} must be an integer or a string`];
  if (shape === "duration") return typeof value === "string" && DURATION.test(value) ? [] : [`${path} must be a Prometheus duration (30s, 5m, 1h)`];
  if (shape === "object") return isObject(value) ? [] : [`${path} must be an object`];
  if ("enum" in shape) return typeof value === "string" && shape.enum.includes(value) ? [] : [`${path} must be one of ${shape.enum.join(", ")}`];
  if ("array" in shape) return Array.isArray(value) ? value.flatMap((v, i) => shapeProblems(v, shape.array, `${path}[${i}]`)) : [`${path} must be an array`];
  if (!isObject(value)) return [`${path} must be an object`];
  if ("map" in shape) return Object.entries(value).flatMap(([k, v]) => shapeProblems(v, shape.map, `${path}.${k}`));
  const problems = (shape.required ?? []).filter((f) => value[f] === undefined).map((f) => `${path}: missing required field ${f}`);
  for (const [field, v] of Object.entries(value)) {
    const child = shape.fields[field];
    problems.push(...(child === undefined ? [`${path}: unknown field ${field}`] : shapeProblems(v, child, `${path}.${field}`)));
  }
  return problems;
}

function monitoringProblems(obj: K8sObject): string[] {
  if (obj.apiVersion !== "monitoring.coreos.com/v1") return [`${key(obj)}: apiVersion must be monitoring.coreos.com/v1`];
  const shape = MONITORING_SCHEMAS[obj.kind];
  if (shape === undefined) return [`${key(obj)}: no schema for ${obj.kind}`];
  const problems = shapeProblems(obj, shape, obj.kind);
  if (obj.kind === "PrometheusRule") {
    for (const rule of readRules(obj)) if ((rule.alert === undefined) === (rule.record === undefined)) problems.push(`${key(obj)}: a rule must have exactly one of alert and record`);
  }
  return problems;
}

type Rule = { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
const readRules = (obj: K8sObject): Rule[] => ((obj.spec as { groups?: Array<{ rules?: Rule[] }> }).groups ?? []).flatMap((g) => g.rules ?? []);

describe("the monitoring component", () => {
  it("adds two PodMonitors, a PrometheusRule and the dashboard ConfigMap to deploy/, and deploy/ alone stays without them", () => {
    expect(added().map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(["ConfigMap/zcsi-grafana-dashboard", "PodMonitor/zcsi-controller", "PodMonitor/zcsi-node", "PrometheusRule/zcsi"]);
    expect(build(DEPLOY_DIR).filter((o) => o.apiVersion.startsWith("monitoring.coreos.com/"))).toEqual([]);
    for (const obj of added()) expect(obj.metadata.namespace, key(obj)).toBe("zcsi");
  });

  it.skipIf(!hasKubectl())("the built-in subset builds exactly what kubectl kustomize builds", () => {
    const sort = (objs: K8sObject[]): K8sObject[] => [...objs].sort((a, b) => (key(a) < key(b) ? -1 : 1));
    expect(sort(miniKustomize(overlayDir))).toEqual(sort(kubectlKustomize(overlayDir)));
  });

  it("the built-in subset refuses a Component used as a resource, and a generated name with a hash", () => {
    const dir = mkdtempSync(join(tmpdir(), "zcsi-kustomize-"));
    try {
      writeFileSync(join(dir, "kustomization.yaml"), `resources:\n  - ${relative(dir, MONITORING_DIR)}\n`);
      expect(() => miniKustomize(dir)).toThrow(/is a Component where a Kustomization is expected/);
      writeFileSync(join(dir, "kustomization.yaml"), "configMapGenerator:\n  - name: x\n    files: [kustomization.yaml]\n");
      expect(() => miniKustomize(dir)).toThrow(/disableNameSuffixHash/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the dashboard ConfigMap validates against the Kubernetes schema and carries the Grafana sidecar label and the dashboard JSON", () => {
    const cm = added().find((o) => o.kind === "ConfigMap")!;
    expect(() => new ConfigMap(cm as unknown as ConstructorParameters<typeof ConfigMap>[0]).validate()).not.toThrow();
    expect(cm.metadata.labels?.grafana_dashboard).toBe("1");
    const data = cm.data as Record<string, string>;
    expect(Object.keys(data)).toEqual(["zcsi.json"]);
    expect(JSON.parse(data["zcsi.json"]!)).toEqual(readDashboard());
  });

  it("PodMonitor and PrometheusRule have the monitoring.coreos.com/v1 structure: required fields, types, durations, no unknown field", () => {
    const objects = added().filter((o) => o.kind !== "ConfigMap");
    expect(objects.flatMap(monitoringProblems)).toEqual([]);
  });

  it("the hand schema catches a misspelt field, a wrong type, a bad duration and a missing required field", () => {
    const monitor = structuredClone(added().find((o) => o.kind === "PodMonitor")!) as K8sObject & { spec: Record<string, unknown> & { podMetricsEndpoints: Array<Record<string, unknown>> } };
    monitor.spec.podMetricsEndpoints[0]!.intreval = "30s";
    monitor.spec.podMetricsEndpoints[0]!.interval = "30 seconds";
    monitor.spec.podMetricsEndpoints[0]!.honorLabels = "true";
    delete monitor.spec.selector;
    const problems = monitoringProblems(monitor).join("\n");
    expect(problems).toMatch(/podMetricsEndpoints\[0\]: unknown field intreval/);
    expect(problems).toMatch(/interval must be a Prometheus duration/);
    expect(problems).toMatch(/honorLabels must be a boolean/);
    expect(problems).toMatch(/spec: missing required field selector/);
    const rule = structuredClone(added().find((o) => o.kind === "PrometheusRule")!);
    (rule.spec as { groups: Array<{ rules: Rule[] }> }).groups[0]!.rules.push({ expr: "up" });
    expect(monitoringProblems(rule).join("\n")).toMatch(/exactly one of alert and record/);
  });
});

describe("what the PodMonitors scrape", () => {
  it("every zcsi container that serves /metrics is scraped on its named port, by a monitor whose selector matches its pod", () => {
    const objects = withMonitoring();
    const monitors = ofKind(objects, "PodMonitor") as Array<K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; podMetricsEndpoints: Array<{ port: string; path: string }> } }>;
    const serving = zcsiContainers(objects).filter((c) => (c.container.env ?? []).some((e) => e.name === "ZCSI_METRICS_ADDRESS" && e.value));
    expect(serving.map((c) => c.role).sort()).toEqual(["controller", "node", "replicator", "snapshotter"]);
    for (const { workload, container, role } of serving) {
      const port = Number(/:([0-9]+)$/.exec(container.env!.find((e) => e.name === "ZCSI_METRICS_ADDRESS")!.value!)?.[1]);
      const named = ((container.ports ?? []) as Array<{ name?: string; containerPort: number }>).find((p) => p.containerPort === port)?.name;
      expect(named, `${role}: a named container port ${port}`).toBeDefined();
      const podLabels = (workload.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
      const scraping = monitors.filter(
        (m) => Object.entries(m.spec.selector.matchLabels).every(([k, v]) => podLabels[k] === v) && m.spec.podMetricsEndpoints.some((e) => e.port === named && e.path === "/metrics"),
      );
      expect(scraping.length, `${role} on port ${named}`).toBe(1);
    }
    // Nothing else is selected: each monitor's endpoints are ports of the pods it selects.
    for (const m of monitors) {
      const pods = containers(objects).filter((c) => Object.entries(m.spec.selector.matchLabels).every(([k, v]) => (c.workload.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels[k] === v));
      const ports = pods.flatMap((c) => ((c.container.ports ?? []) as Array<{ name?: string }>).map((p) => p.name));
      for (const e of m.spec.podMetricsEndpoints) expect(ports, `${m.metadata.name}: ${e.port}`).toContain(e.port);
    }
  });
});

describe("alerts and dashboard", () => {
  const rules = readAlertRules();

  it("has the alerts an operator expects, each with a severity, a summary and a description, and PromQL that parses", () => {
    expect(rules.map((r) => r.alert).sort()).toEqual([
      "ZcsiPoolCapacityHigh",
      "ZcsiPoolHostNotServing",
      "ZcsiPoolHostUnreachable",
      "ZcsiPoolNotOnline",
      "ZcsiReplicationLagging",
      "ZcsiSnapshotsFailing",
    ]);
    for (const rule of rules) {
      expect(["critical", "warning"], rule.alert).toContain(rule.labels?.severity);
      expect(Object.keys(rule.annotations ?? {}).sort(), rule.alert).toEqual(["description", "summary"]);
      expect(() => parsePromQL(rule.expr), rule.alert).not.toThrow();
    }
    const expr = (name: string): string => rules.find((r) => r.alert === name)!.expr;
    // The thresholds the issue asks for, stated in the expressions themselves.
    expect(expr("ZcsiPoolCapacityHigh")).toMatch(/zcsi_pool_allocated_bytes \/ zcsi_pool_size_bytes\) > 0\.85$/);
    expect(expr("ZcsiReplicationLagging")).toMatch(/zcsi_replication_lag_seconds\)\s+> on \(job_id, source, target\) 2 \* max by \(job_id, source, target\) \(zcsi_replication_interval_seconds\)$/);
    expect(expr("ZcsiPoolNotOnline")).toContain('zcsi_pool_health{state!="ONLINE"}');
  });

  it("the dashboard: a datasource variable every query uses, unique panel ids, panels inside 24 columns and not overlapping, PromQL that parses", () => {
    const dashboard = readDashboard();
    expect(dashboard.uid).toBe("zcsi-overview");
    expect(dashboard.templating.list.map((v) => `${v.name}:${v.type}`)).toEqual(["datasource:datasource", "host:query"]);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Map<string, number>();
    for (const panel of dashboard.panels) {
      const { x, y, w, h } = panel.gridPos;
      expect(x + w, panel.title).toBeLessThanOrEqual(24);
      for (let i = x; i < x + w; i++) for (let j = y; j < y + h; j++) {
        expect(cells.get(`${i},${j}`), `${panel.title} overlaps panel ${cells.get(`${i},${j}`)}`).toBeUndefined();
        cells.set(`${i},${j}`, panel.id);
      }
      for (const target of panel.targets ?? []) {
        expect((target as { datasource?: { uid?: string } }).datasource?.uid, panel.title).toBe("${datasource}");
        expect(() => parsePromQL(target.expr), `${panel.title}: ${target.expr}`).not.toThrow();
      }
    }
    expect(monitoringExpressions().length).toBeGreaterThan(25);
  });

  it("the dashboard shows each thing the issue names: pool health and capacity, volumes, provisioning latency and errors, snapshot and replication runs, lag per target, command latency per host", () => {
    const exprs = readDashboard().panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    const shows = (pattern: RegExp): boolean => exprs.some((e) => pattern.test(e));
    expect(shows(/zcsi_pool_health\b/)).toBe(true);
    expect(shows(/zcsi_pool_allocated_bytes.*zcsi_pool_size_bytes/)).toBe(true);
    expect(shows(/zcsi_volumes\b/)).toBe(true);
    expect(shows(/histogram_quantile\(.*zcsi_csi_operation_duration_seconds_bucket\{[^}]*CreateVolume/)).toBe(true);
    expect(shows(/zcsi_csi_operation_duration_seconds_count\{[^}]*code!="OK"/)).toBe(true);
    expect(shows(/zcsi_snapshots_taken_total/) && shows(/zcsi_snapshot_failures_total/)).toBe(true);
    expect(shows(/zcsi_replication_runs_total/) && shows(/zcsi_replication_failures_total/)).toBe(true);
    expect(shows(/max by \(target\) \(zcsi_replication_lag_seconds/)).toBe(true);
    expect(shows(/histogram_quantile\(0\.9, sum by \(le, host\) \(rate\(zcsi_command_duration_seconds_bucket/)).toBe(true);
  });
});

describe("docs/monitoring.md", () => {
  it("documents every metric src/ defines, and names no metric src/ does not define", () => {
    const srcFiles = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? srcFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []));
    const defined = new Set(srcFiles(join(REPO_ROOT, "src")).flatMap((f) => [...readFileSync(f, "utf8").matchAll(/"(zcsi_[a-z0-9_]+)"/g)].map((m) => m[1]!)));
    expect(defined.size).toBeGreaterThan(15);
    const doc = readFileSync(join(REPO_ROOT, "docs/monitoring.md"), "utf8");
    const documented = new Set([...doc.matchAll(/^\| `(zcsi_[a-z0-9_]+)`/gm)].map((m) => m[1]!));
    expect([...defined].filter((m) => !documented.has(m))).toEqual([]);
    expect([...documented].filter((m) => !defined.has(m))).toEqual([]);
    expect(readFileSync(join(REPO_ROOT, "README.md"), "utf8")).toContain("docs/monitoring.md");
  });
});
