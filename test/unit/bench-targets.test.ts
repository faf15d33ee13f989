import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LATEST_RESULTS, resultsFile } from "../../bench/lib.js";
import { targetsTable, targetVerdicts, withHeadline } from "../../bench/targets.js";
import { packageRoot } from "../../src/util/package.js";

const RESULTS = `# zcsi benchmark results

Run 2026-12-03T20:00:00.000Z by \`npm run bench\` (complete: every benchmark, one run).

## Provisioning

Machine: 2 cores

| what | median |
|---|---:|
| zcsi | 159 |

- ratios are medians of per-iteration ratios; 50 iterations
- driver / floor = 1.38× (target ≤ 1.1×): MISSED. Measured reason: two more round trips
- driver / fresh ssh = 0.20× (target ≤ 0.3×): met

## Replication

- bandwidth limit: 0.96× the limit (must not exceed 1×): held
- raw: \`ssh a zfs send | ssh b zfs recv\` = 1.1× (target ≥ 0.9×): met

## Targets

- an old summary line: met
`;

describe("the benchmark targets table", () => {
  it("collects every verdict line with its benchmark and state, and nothing else", () => {
    expect(targetVerdicts(RESULTS)).toEqual([
      { benchmark: "Provisioning", state: "MISSED", text: "driver / floor = 1.38× (target ≤ 1.1×): MISSED. Measured reason: two more round trips" },
      { benchmark: "Provisioning", state: "met", text: "driver / fresh ssh = 0.20× (target ≤ 0.3×): met" },
      { benchmark: "Replication", state: "held", text: "bandwidth limit: 0.96× the limit (must not exceed 1×): held" },
      { benchmark: "Replication", state: "met", text: "raw: `ssh a zfs send | ssh b zfs recv` = 1.1× (target ≥ 0.9×): met" },
    ]);
  });

  it("counts what was met and keeps a pipe inside a verdict from splitting its row", () => {
    const table = targetsTable(RESULTS);
    expect(table.split("\n")[0]).toBe("3 of 4 targets met or held.");
    const row = table.split("\n").find((l) => l.includes("ssh a zfs send"));
    expect(row).toContain("ssh a zfs send \\| ssh b zfs recv");
    expect(row?.split(/(?<!\\)\|/).length).toBe(5); // | benchmark | state | text |
  });

  it("keeps the README's headline exactly what bench/results/latest.md says (npm run bench:readme)", () => {
    const readme = readFileSync(join(packageRoot, "README.md"), "utf8");
    const latest = readFileSync(join(packageRoot, "bench", "results", "latest.md"), "utf8");
    expect(readme).toBe(withHeadline(readme, latest));
    expect(withHeadline(readme, RESULTS)).not.toBe(readme);
  });
});

describe("where a benchmark run writes", () => {
  const saved = { only: process.env.BENCH_ONLY, file: process.env.BENCH_RESULTS_FILE };
  afterEach(() => {
    for (const [key, value] of [["BENCH_ONLY", saved.only], ["BENCH_RESULTS_FILE", saved.file]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });

  it("writes a complete run beside latest.md, to become latest.md only when it is complete", () => {
    delete process.env.BENCH_ONLY;
    delete process.env.BENCH_RESULTS_FILE;
    expect(resultsFile()).toBe(`${LATEST_RESULTS}.tmp`);
  });

  it("never lets a subset run touch latest.md", () => {
    delete process.env.BENCH_RESULTS_FILE;
    process.env.BENCH_ONLY = "scale, memory";
    expect(resultsFile()).toBe(join(packageRoot, "bench", "results", "subset-scale-memory.md"));
  });
});
