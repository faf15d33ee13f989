/**
 * A small PromQL reader for the monitoring tests: it parses the expressions of
 * deploy/monitoring's dashboard and alerts and checks them against what the roles' /metrics
 * really serve, so a renamed metric or label breaks a test, not a dashboard nobody looks at.
 *
 * It covers the language those expressions use: selectors with matchers and ranges (Grafana's
 * `$__rate_interval` too), function calls, aggregations with `by`/`without` (before or after
 * the arguments), binary operators with Prometheus' precedence, `bool`, `on`/`ignoring`,
 * `group_left`/`group_right`, `offset`, subqueries. Anything else is a parse error, never a
 * silent pass. Labels are followed through the expression: a selector has the labels its
 * metric is served with; `rate()` keeps them, `histogram_quantile` drops `le`, `sum by (a)`
 * leaves `a`, a join keeps its side's and the `group_left` ones. A label used where the
 * expression cannot have it is a problem.
 */

export type Matcher = { readonly label: string; readonly op: string; readonly value: string };
export type Node =
  | { readonly type: "number"; readonly value: number }
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "selector"; readonly name: string; readonly matchers: readonly Matcher[] }
  | { readonly type: "range"; readonly expr: Node; readonly range: string }
  | { readonly type: "call"; readonly fn: string; readonly args: readonly Node[] }
  | { readonly type: "aggregate"; readonly op: string; readonly without: boolean; readonly grouping: readonly string[] | undefined; readonly args: readonly Node[] }
  | { readonly type: "unary"; readonly op: string; readonly expr: Node }
  | {
      readonly type: "binary";
      readonly op: string;
      readonly left: Node;
      readonly right: Node;
      readonly matching?: { readonly on: boolean; readonly labels: readonly string[] };
      readonly group?: { readonly side: "left" | "right"; readonly labels: readonly string[] };
    };

const AGGREGATIONS = new Set(["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"]);
/** Lowest first; `^` is right-associative. */
const PRECEDENCE: readonly (readonly string[])[] = [["or"], ["and", "unless"], ["==", "!=", "<=", "<", ">=", ">"], ["+", "-"], ["*", "/", "%", "atan2"], ["^"]];
const COMPARISONS = new Set(["==", "!=", "<=", "<", ">=", ">"]);

type Token = { readonly kind: "ident" | "number" | "string" | "op" | "range"; readonly text: string };

function tokenize(expr: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const rest = expr.slice(i);
    const space = /^(\s+|#[^\n]*)/.exec(rest);
    if (space) {
      i += space[0].length;
      continue;
    }
    // A range or subquery in brackets: kept whole (`5m`, `$__rate_interval`, `1h:5m`).
    const range = /^\[([^\]]*)\]/.exec(rest);
    const str = /^"((?:[^"\\]|\\.)*)"|^'((?:[^'\\]|\\.)*)'/.exec(rest);
    const duration = /^(?:[0-9]+(?:ms|[smhdwy]))+/.exec(rest);
    const num = /^(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?![A-Za-z_])/.exec(rest);
    const ident = /^[A-Za-z_:][A-Za-z0-9_:]*/.exec(rest);
    const op = /^(==|!=|<=|>=|=~|!~|[-+*/%^<>=(){},])/.exec(rest);
    if (range) tokens.push({ kind: "range", text: range[1]!.trim() });
    else if (str) tokens.push({ kind: "string", text: JSON.parse(`"${(str[1] ?? str[2])!.replace(/\\'/g, "'")}"`) as string });
    else if (duration) tokens.push({ kind: "number", text: duration[0] });
    else if (num) tokens.push({ kind: "number", text: num[0] });
    else if (ident) tokens.push({ kind: "ident", text: ident[0] });
    else if (op) tokens.push({ kind: "op", text: op[0] });
    else throw new Error(`PromQL: unexpected ${JSON.stringify(rest.slice(0, 20))} in ${JSON.stringify(expr)}`);
    i += (range ?? str ?? duration ?? num ?? ident ?? op)![0].length;
  }
  return tokens;
}

class Parser {
  private pos = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly source: string,
  ) {}

  parse(): Node {
    const node = this.expression(0);
    if (this.pos < this.tokens.length) this.fail(`unexpected ${this.tokens[this.pos]!.text}`);
    return node;
  }

  private fail(message: string): never {
    throw new Error(`PromQL: ${message} in ${JSON.stringify(this.source)}`);
  }

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private next(): Token {
    const t = this.tokens[this.pos++];
    if (t === undefined) this.fail("unexpected end");
    return t;
  }

  private accept(text: string): boolean {
    const t = this.peek();
    if (t !== undefined && (t.kind === "op" || t.kind === "ident") && t.text === text) {
      this.pos++;
      return true;
    }
    return false;
  }

  private expect(text: string): void {
    if (!this.accept(text)) this.fail(`expected ${text}`);
  }

  private labelList(): string[] {
    this.expect("(");
    const labels: string[] = [];
    while (!this.accept(")")) {
      const t = this.next();
      if (t.kind !== "ident") this.fail(`expected a label name, got ${t.text}`);
      labels.push(t.text);
      if (!this.accept(",")) {
        this.expect(")");
        break;
      }
    }
    return labels;
  }

  private expression(level: number): Node {
    if (level >= PRECEDENCE.length) return this.unary();
    let left = this.expression(level + 1);
    for (;;) {
      const t = this.peek();
      const ops = PRECEDENCE[level]!;
      if (t === undefined || !(t.kind === "op" || t.kind === "ident") || !ops.includes(t.text)) return left;
      this.pos++;
      const op = t.text;
      if (COMPARISONS.has(op)) this.accept("bool");
      let matching: { on: boolean; labels: string[] } | undefined;
      let group: { side: "left" | "right"; labels: string[] } | undefined;
      for (const keyword of ["on", "ignoring"]) if (this.accept(keyword)) matching = { on: keyword === "on", labels: this.labelList() };
      for (const side of ["left", "right"] as const) {
        if (this.accept(`group_${side}`)) group = { side, labels: this.peek()?.text === "(" ? this.labelList() : [] };
      }
      // `^` is right-associative: its right side may hold another `^`.
      const right = op === "^" ? this.expression(level) : this.expression(level + 1);
      left = { type: "binary", op, left, right, ...(matching && { matching }), ...(group && { group }) };
    }
  }

  private unary(): Node {
    if (this.accept("-")) return { type: "unary", op: "-", expr: this.unary() };
    if (this.accept("+")) return this.unary();
    return this.postfix(this.primary());
  }

  private postfix(node: Node): Node {
    for (;;) {
      const t = this.peek();
      if (t?.kind === "range") {
        this.pos++;
        node = { type: "range", expr: node, range: t.text };
      } else if (t?.kind === "ident" && t.text === "offset") {
        this.pos++;
        this.accept("-");
        const d = this.next();
        if (d.kind !== "number") this.fail("expected a duration after offset");
      } else return node;
    }
  }

  private args(): Node[] {
    this.expect("(");
    const args: Node[] = [];
    if (this.accept(")")) return args;
    for (;;) {
      args.push(this.expression(0));
      if (this.accept(")")) return args;
      this.expect(",");
    }
  }

  private primary(): Node {
    const t = this.next();
    if (t.kind === "number") return { type: "number", value: Number(t.text) };
    if (t.kind === "string") return { type: "string", value: t.text };
    if (t.kind === "op" && t.text === "(") {
      const inner = this.expression(0);
      this.expect(")");
      return inner;
    }
    if (t.kind === "op" && t.text === "{") return { type: "selector", name: "", matchers: this.matchers() };
    if (t.kind !== "ident") this.fail(`unexpected ${t.text}`);
    if (AGGREGATIONS.has(t.text) && (this.peek()?.text === "(" || this.peek()?.text === "by" || this.peek()?.text === "without")) {
      let grouping: string[] | undefined;
      let without = false;
      const groupingClause = (): void => {
        for (const keyword of ["by", "without"]) {
          if (this.accept(keyword)) {
            without = keyword === "without";
            grouping = this.labelList();
          }
        }
      };
      groupingClause();
      const args = this.args();
      if (grouping === undefined) groupingClause();
      return { type: "aggregate", op: t.text, without, grouping, args };
    }
    if (this.peek()?.text === "(") return { type: "call", fn: t.text, args: this.args() };
    if (["inf", "nan"].includes(t.text.toLowerCase())) return { type: "number", value: t.text.toLowerCase() === "inf" ? Infinity : NaN };
    return { type: "selector", name: t.text, matchers: this.accept("{") ? this.matchers() : [] };
  }

  private matchers(): Matcher[] {
    const matchers: Matcher[] = [];
    while (!this.accept("}")) {
      const label = this.next();
      if (label.kind !== "ident") this.fail(`expected a label name, got ${label.text}`);
      const op = this.next();
      if (!["=", "!=", "=~", "!~"].includes(op.text)) this.fail(`expected a matcher operator, got ${op.text}`);
      const value = this.next();
      if (value.kind !== "string") this.fail(`expected a quoted value, got ${value.text}`);
      matchers.push({ label: label.text, op: op.text, value: value.text });
      if (!this.accept(",")) {
        this.expect("}");
        break;
      }
    }
    return matchers;
  }
}

export function parsePromQL(expr: string): Node {
  return new Parser(tokenize(expr), expr).parse();
}

/** Every selector in an expression. */
export function selectors(node: Node): Array<Extract<Node, { type: "selector" }>> {
  switch (node.type) {
    case "selector":
      return [node];
    case "range":
    case "unary":
      return selectors(node.expr);
    case "call":
    case "aggregate":
      return node.args.flatMap(selectors);
    case "binary":
      return [...selectors(node.left), ...selectors(node.right)];
    default:
      return [];
  }
}

/** Metric name → the label names its samples are served with. */
export type MetricLabels = ReadonlyMap<string, ReadonlySet<string>>;

type Labels = ReadonlySet<string> | "scalar";

const KEEPS_LABELS = /^(rate|irate|increase|delta|idelta|deriv|changes|resets|abs|ceil|floor|round|clamp|clamp_min|clamp_max|exp|ln|log2|log10|sqrt|sgn|timestamp|predict_linear|holt_winters|sort|sort_desc|[a-z]+_over_time)$/;

export interface CheckOptions {
  /** Labels Prometheus adds when it scrapes (job, pod, ...), which /metrics does not show. */
  readonly extraLabels?: readonly string[];
  /** Labels the result must carry: an alert's `$labels.x`, a panel legend's `{{x}}`. */
  readonly resultLabels?: readonly string[];
}

/**
 * What is wrong with `expr` against the metrics as served: unknown metrics, and labels used
 * (in a matcher, `by`, `on`, `group_left`, a function argument, the result) that the
 * expression cannot have there.
 */
export function checkExpression(expr: string, metrics: MetricLabels, options: CheckOptions = {}): string[] {
  const extraLabels = options.extraLabels ?? [];
  const problems: string[] = [];
  const need = (labels: Labels, wanted: readonly string[], where: string): void => {
    if (labels === "scalar") return;
    for (const l of wanted) if (!labels.has(l)) problems.push(`${where}: label ${l} is not there (have ${[...labels].sort().join(", ") || "none"})`);
  };
  const walk = (node: Node): Labels => {
    switch (node.type) {
      case "number":
      case "string":
        return "scalar";
      case "selector": {
        const served = metrics.get(node.name);
        if (served === undefined) {
          problems.push(`metric ${node.name || "{...}"} is not served`);
          return new Set(node.matchers.map((m) => m.label));
        }
        const labels = new Set([...served, ...extraLabels]);
        need(labels, node.matchers.map((m) => m.label).filter((l) => l !== "__name__"), `${node.name}{...}`);
        return labels;
      }
      case "range":
      case "unary":
        return walk(node.expr);
      case "call": {
        const args = node.args.map(walk);
        const vector = args.find((a): a is ReadonlySet<string> => a !== "scalar");
        if (node.fn === "histogram_quantile") {
          const input = args[1] ?? "scalar";
          need(input, ["le"], "histogram_quantile");
          return input === "scalar" ? input : new Set([...input].filter((l) => l !== "le"));
        }
        if (node.fn === "label_replace" || node.fn === "label_join") {
          const strings = node.args.slice(1).map((a) => (a.type === "string" ? a.value : ""));
          const sources = node.fn === "label_replace" ? strings.slice(2, 3).filter((s) => s !== "") : strings.slice(2);
          need(args[0] ?? "scalar", sources, node.fn);
          return vector === undefined ? "scalar" : new Set([...vector, strings[0] ?? ""]);
        }
        if (["vector", "time", "scalar", "pi"].includes(node.fn)) return node.fn === "vector" ? new Set() : "scalar";
        if (node.fn === "absent" || node.fn === "absent_over_time") return new Set();
        if (!KEEPS_LABELS.test(node.fn)) problems.push(`function ${node.fn} is not known to this checker`);
        return vector ?? "scalar";
      }
      case "aggregate": {
        const input = walk(node.args[node.args.length - 1]!);
        const grouping = node.grouping ?? [];
        if (!node.without) need(input, grouping, `${node.op} by`);
        if (["topk", "bottomk", "limitk", "limit_ratio"].includes(node.op)) return input;
        if (input === "scalar") return input;
        const out = node.without ? new Set([...input].filter((l) => !grouping.includes(l))) : new Set(grouping);
        if (node.op === "count_values" && node.args[0]?.type === "string") out.add(node.args[0].value);
        return out;
      }
      case "binary": {
        const left = walk(node.left);
        const right = walk(node.right);
        if (left === "scalar") return right;
        if (right === "scalar") return left;
        if (node.matching?.on) {
          need(left, node.matching.labels, `left of ${node.op} on`);
          need(right, node.matching.labels, `right of ${node.op} on`);
        }
        if (node.group?.side === "left") {
          need(right, node.group.labels, "group_left");
          return new Set([...left, ...node.group.labels]);
        }
        if (node.group?.side === "right") {
          need(left, node.group.labels, "group_right");
          return new Set([...right, ...node.group.labels]);
        }
        if (node.op === "or") return new Set([...left].filter((l) => right.has(l)));
        return left;
      }
    }
  };
  need(walk(parsePromQL(expr)), options.resultLabels ?? [], "result");
  return problems;
}

/**
 * Metric name → label names, from a Prometheus text exposition (what /metrics serves). Only
 * samples count: a family with no sample yet tells nothing about its labels.
 */
export function metricLabels(exposition: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const line of exposition.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+\S+/.exec(line);
    if (!m) throw new Error(`not an exposition sample line: ${line}`);
    const labels = out.get(m[1]!) ?? new Set<string>();
    for (const pair of (m[2] ?? "").matchAll(/([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"/g)) labels.add(pair[1]!);
    out.set(m[1]!, labels);
  }
  return out;
}
