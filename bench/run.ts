import { readFileSync } from "node:fs";
import { appendResults, finishResults, loadLine, resultsFile, startResults } from "./lib.js";
import { TARGETS_HEADING, targetsTable } from "./targets.js";
import { benchProvision } from "./provision.js";
import { benchDeleteSnapshotOpenZfs } from "./delete-snapshot.js";
import { benchScale } from "./scale.js";
import { benchDataPath } from "./datapath.js";
import { benchMemory } from "./memory.js";
import { benchReplication } from "./replication.js";
import { benchMigrate } from "./migrate.js";

/**
 * `npm run bench`: every benchmark, then a table of every target with met or missed and the
 * measured reason for a miss; a complete run's results become bench/results/latest.md (then
 * `npm run bench:readme` puts its targets table into the README).
 * BENCH_ONLY=provision,delete-snapshot-openzfs,scale,datapath,memory,replication,migrate runs a subset (while
 * developing one), written to bench/results/subset-<names>.md. The controller's memory
 * (benchmark 6) is measured inside `scale`, which has made the volumes it needs.
 */
const benchmarks: Record<string, () => Promise<void>> = {
  provision: benchProvision,
  "delete-snapshot-openzfs": benchDeleteSnapshotOpenZfs,
  scale: benchScale,
  datapath: benchDataPath,
  memory: benchMemory,
  replication: benchReplication,
  migrate: benchMigrate,
};
const only = process.env.BENCH_ONLY?.split(",").map((s) => s.trim());
startResults(only ? `subset: ${only.join(", ")}` : "complete: every benchmark, one run");
for (const [name, bench] of Object.entries(benchmarks)) {
  if (only && !only.includes(name)) continue;
  const t0 = Date.now();
  try {
    await bench();
  } catch (err) {
    // One benchmark failing (e.g. a command timing out on a loaded machine) must not cost the
    // others: say so in the results and go on. Each benchmark cleans up in its own finally.
    process.exitCode = 1;
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    console.error(`benchmark ${name} failed: ${message}`);
    appendResults(`## ${name}: FAILED\n\n\`\`\`\n${message.split("\n").slice(0, 6).join("\n")}\n\`\`\`\n`);
  }
  console.log(`(${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}

appendResults(`The run ended with ${loadLine()}.\n`);
const targets = `${TARGETS_HEADING}\n\n${targetsTable(readFileSync(resultsFile(), "utf8"))}`;
appendResults(targets);
console.log(`\n${targets}`);
console.log(`results: ${finishResults()}`);
