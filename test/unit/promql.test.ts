import { describe, expect, it } from "vitest";
import { checkExpression, metricLabels, parsePromQL, selectors } from "../harness/promql.js";

/** The small PromQL reader the monitoring tests check deploy/monitoring's expressions with. */

const served = metricLabels(
  [
    "# HELP zcsi_pool_size_bytes x",
    "# TYPE zcsi_pool_size_bytes gauge",
    'zcsi_pool_size_bytes{host="alice",pool="tank"} 1000',
    'zcsi_pool_allocated_bytes{host="alice",pool="tank"} 900',
    'zcsi_replication_lag_seconds{job_id="j",source="alice:tank/k8s/a",target="bob"} 5',
    'zcsi_replication_interval_seconds{job_id="j",source="alice:tank/k8s/a",target="bob"} 900',
    'zcsi_command_duration_seconds_bucket{le="0.1",host="alice",command="zfs get",outcome="ok"} 3',
    'zcsi_command_duration_seconds_count{host="alice",command="zfs get",outcome="ok"} 3',
    "zcsi_snapshotter_leader 1",
    'zcsi_label_with_escape{a="x\\"y,b=\\"z"} 1',
  ].join("\n"),
);

describe("metricLabels", () => {
  it("reads each sample's metric and label names, not HELP/TYPE lines or label values", () => {
    expect([...served.get("zcsi_command_duration_seconds_bucket")!].sort()).toEqual(["command", "host", "le", "outcome"]);
    expect(served.get("zcsi_snapshotter_leader")).toEqual(new Set());
    expect(served.get("zcsi_label_with_escape")).toEqual(new Set(["a"]));
    expect(served.has("zcsi_pool_free_bytes")).toBe(false);
  });
});

describe("parsePromQL", () => {
  it("parses aggregations with the grouping before or after the arguments", () => {
    expect(parsePromQL("sum by (host) (rate(x[5m]))")).toMatchObject({ type: "aggregate", op: "sum", grouping: ["host"], args: [{ type: "call", fn: "rate" }] });
    expect(parsePromQL("sum(rate(x[$__rate_interval])) without (le)")).toMatchObject({ type: "aggregate", without: true, grouping: ["le"] });
  });

  it("binds * tighter than >, and > tighter than and/or", () => {
    const node = parsePromQL("a > 2 * b and c or d");
    expect(node).toMatchObject({ type: "binary", op: "or", left: { op: "and", left: { op: ">", right: { op: "*", left: { type: "number", value: 2 } } } } });
    expect(parsePromQL("2 ^ 3 ^ 2")).toMatchObject({ op: "^", left: { value: 2 }, right: { op: "^" } });
  });

  it("reads matchers, on/group_left, bool, offset and subqueries", () => {
    const node = parsePromQL('a{host=~"$host", state!="ONLINE"} == bool on (host, pool) group_left (state) b offset 5m');
    expect(node).toMatchObject({ type: "binary", matching: { on: true, labels: ["host", "pool"] }, group: { side: "left", labels: ["state"] } });
    expect(selectors(node).map((s) => s.name)).toEqual(["a", "b"]);
    expect(selectors(node)[0]!.matchers).toEqual([
      { label: "host", op: "=~", value: "$host" },
      { label: "state", op: "!=", value: "ONLINE" },
    ]);
    expect(parsePromQL("max_over_time(rate(x[5m])[1h:5m])")).toMatchObject({ type: "call", args: [{ type: "range", range: "1h:5m" }] });
  });

  it("refuses what it cannot read instead of passing it", () => {
    expect(() => parsePromQL("sum(x")).toThrow(/expected , in "sum\(x"/);
    expect(() => parsePromQL("x{host=alice}")).toThrow(/quoted value/);
    expect(() => parsePromQL("x y")).toThrow(/unexpected y/);
    expect(() => parsePromQL("x @ 5")).toThrow(/unexpected "@ 5"/);
  });
});

describe("checkExpression", () => {
  it("passes expressions whose metrics and labels are all served", () => {
    expect(checkExpression("max by (host, pool) (zcsi_pool_allocated_bytes / zcsi_pool_size_bytes) > 0.85", served)).toEqual([]);
    expect(checkExpression("zcsi_replication_lag_seconds > on (job_id, source, target) 2 * zcsi_replication_interval_seconds", served)).toEqual([]);
    expect(checkExpression('histogram_quantile(0.9, sum by (le, host) (rate(zcsi_command_duration_seconds_bucket{host=~"$host"}[5m])))', served)).toEqual([]);
    expect(checkExpression("sum by (pod) (zcsi_snapshotter_leader)", served, { extraLabels: ["pod"] })).toEqual([]);
  });

  it("names an unknown metric", () => {
    expect(checkExpression("zcsi_pool_free_bytes > 0", served)).toEqual(["metric zcsi_pool_free_bytes is not served"]);
  });

  it("names a label a matcher, by, on or group_left uses that the expression does not have there", () => {
    expect(checkExpression('zcsi_pool_size_bytes{pool_host="alice"}', served).join()).toMatch(/label pool_host is not there/);
    expect(checkExpression("sum by (target) (zcsi_pool_size_bytes)", served).join()).toMatch(/sum by: label target/);
    // After sum by (host), pool is gone: a later by (pool) cannot find it.
    expect(checkExpression("max by (pool) (sum by (host) (zcsi_pool_size_bytes))", served).join()).toMatch(/label pool is not there/);
    expect(checkExpression("zcsi_pool_size_bytes * on (job_id) zcsi_replication_lag_seconds", served).join()).toMatch(/left of \* on: label job_id/);
    expect(checkExpression("zcsi_pool_size_bytes * on (host) group_left (state) zcsi_pool_allocated_bytes", served).join()).toMatch(/group_left: label state/);
  });

  it("names a label the result must carry (an alert's $labels.x, a legend's {{x}}) and does not", () => {
    expect(checkExpression("max by (host) (zcsi_pool_size_bytes)", served, { resultLabels: ["host"] })).toEqual([]);
    expect(checkExpression("max by (host) (zcsi_pool_size_bytes)", served, { resultLabels: ["pool"] }).join()).toMatch(/result: label pool is not there/);
  });

  it("knows that histogram_quantile needs le and drops it", () => {
    expect(checkExpression("histogram_quantile(0.9, sum by (host) (rate(zcsi_command_duration_seconds_bucket[5m])))", served).join()).toMatch(/histogram_quantile: label le/);
    expect(checkExpression("sum by (le) (histogram_quantile(0.9, rate(zcsi_command_duration_seconds_bucket[5m])))", served).join()).toMatch(/label le is not there/);
  });

  it("refuses a function it does not know rather than guessing its labels", () => {
    expect(checkExpression("mystery(zcsi_pool_size_bytes)", served)).toEqual(["function mystery is not known to this checker"]);
  });
});
