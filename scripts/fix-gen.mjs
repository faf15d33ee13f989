// proto-loader-gen-types writes extensionless relative imports; Node's ESM resolution
// (and TypeScript's "nodenext") needs the ".js" suffix. Rewrite them in place.
import { readdirSync, readFileSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";

function walk(dir) {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) walk(path);
    else if (path.endsWith(".ts")) {
      const text = readFileSync(path, "utf8");
      const fixed = text.replace(/from '(\.{1,2}\/[^']+?)(?<!\.js)'/g, "from '$1.js'");
      if (fixed !== text) writeFileSync(path, fixed);
    }
  }
}
walk(new URL("../src/gen", import.meta.url).pathname);
