/**
 * The PromQL in deploy/monitoring, with where each expression sits and the labels its result
 * must carry: an alert's `$labels.x` in its annotations, a panel target's `{{x}}` legend. A
 * Grafana variable query `label_values(m, l)` becomes `sum by (l) (m)`: the same demand.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";

export const MONITORING_DIR = join(import.meta.dirname, "../../deploy/monitoring");

export interface MonitoringExpression {
  readonly where: string;
  readonly expr: string;
  readonly resultLabels: readonly string[];
}

export interface DashboardTarget {
  readonly refId: string;
  readonly expr: string;
  readonly legendFormat?: string;
}
export interface DashboardPanel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly gridPos: { h: number; w: number; x: number; y: number };
  readonly targets?: DashboardTarget[];
}
export interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly panels: DashboardPanel[];
  readonly templating: { list: Array<{ name: string; type: string; query?: unknown; definition?: string }> };
}

export interface AlertRule {
  readonly alert?: string;
  readonly record?: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

export function readDashboard(): Dashboard {
  return JSON.parse(readFileSync(join(MONITORING_DIR, "dashboards/zcsi.json"), "utf8")) as Dashboard;
}

export function readAlertRules(): AlertRule[] {
  const rule = parseYaml(readFileSync(join(MONITORING_DIR, "prometheusrule.yaml"), "utf8")) as { spec: { groups: Array<{ rules: AlertRule[] }> } };
  return rule.spec.groups.flatMap((g) => g.rules);
}

const templateLabels = (text: string, pattern: RegExp): string[] => [...new Set([...text.matchAll(pattern)].map((m) => m[1]!))];

export function monitoringExpressions(dashboard: Dashboard = readDashboard(), rules: AlertRule[] = readAlertRules()): MonitoringExpression[] {
  const out: MonitoringExpression[] = [];
  for (const rule of rules) {
    const text = Object.values(rule.annotations ?? {}).join("\n");
    out.push({ where: `alert ${rule.alert ?? rule.record}`, expr: rule.expr, resultLabels: templateLabels(text, /\$labels\.([A-Za-z_][A-Za-z0-9_]*)/g) });
  }
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      out.push({ where: `panel "${panel.title}" ${target.refId}`, expr: target.expr, resultLabels: templateLabels(target.legendFormat ?? "", /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g) });
    }
  }
  for (const variable of dashboard.templating.list) {
    if (variable.type !== "query") continue;
    const m = /^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$/.exec(variable.definition ?? "");
    if (!m) throw new Error(`dashboard variable ${variable.name}: only label_values(metric, label) queries are checked`);
    out.push({ where: `variable ${variable.name}`, expr: `sum by (${m[2]}) (${m[1]})`, resultLabels: [m[2]!] });
  }
  return out;
}
