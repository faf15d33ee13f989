import type { Reporter, TestModule } from "vitest/node";

/**
 * Prints one plain closing line, `N passed, N failed, N skipped`, after vitest's own summary,
 * so whatever reads the end of a CI log sees the counts without parsing colours. A skipped
 * test is counted and named: nothing is skipped silently.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    const skipped: string[] = [];
    for (const mod of modules) {
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === "passed") passed++;
        else if (state === "failed") failed++;
        else if (state === "skipped") skipped.push(test.fullName);
      }
      if (mod.state() === "failed" && [...mod.children.allTests()].length === 0) failed++; // a file that failed to load
    }
    // After vitest's own summary, which it prints once every reporter's onTestRunEnd returned.
    setImmediate(() => {
      for (const name of skipped) console.log(`skipped: ${name}`);
      console.log(`\n${passed} passed, ${failed} failed, ${skipped.length} skipped`);
    });
  }
}
