import { startResults } from "./lib.js";
import { benchProvision } from "./provision.js";

/** `npm run bench`: every benchmark, results in bench/results/latest.md. */
startResults();
await benchProvision();
