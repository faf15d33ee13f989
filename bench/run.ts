import { startResults } from "./lib.js";
import { benchProvision } from "./provision.js";
import { benchScale } from "./scale.js";
import { benchDataPath } from "./datapath.js";
import { benchMemory } from "./memory.js";

/**
 * `npm run bench`: every benchmark, results in bench/results/latest.md.
 * BENCH_ONLY=provision,scale,datapath,memory runs a subset (while developing one). The controller's
 * memory (benchmark 6) is measured inside `scale`, which has made the 1000 volumes it needs.
 */
const benchmarks: Record<string, () => Promise<void>> = {
  provision: benchProvision,
  scale: benchScale,
  datapath: benchDataPath,
  memory: benchMemory,
};
const only = process.env.BENCH_ONLY?.split(",").map((s) => s.trim());
startResults();
for (const [name, bench] of Object.entries(benchmarks)) {
  if (only && !only.includes(name)) continue;
  const t0 = Date.now();
  await bench();
  console.log(`(${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}
