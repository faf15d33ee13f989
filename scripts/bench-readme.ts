/**
 * `npm run bench:readme`: writes the README's benchmark headline (between the bench-targets
 * markers) from bench/results/latest.md, so the README says what the last complete `npm run
 * bench` measured and nothing else; test/unit/bench-targets.test.ts fails when they differ.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { withHeadline } from "../bench/targets.js";
import { packageRoot } from "../src/util/package.js";

const readme = join(packageRoot, "README.md");
const latest = join(packageRoot, "bench", "results", "latest.md");
writeFileSync(readme, withHeadline(readFileSync(readme, "utf8"), readFileSync(latest, "utf8")));
console.log(`README.md: benchmark headline written from ${latest}`);
