import type { SerializedError } from "vitest";
import type { Reporter, TestModule } from "vitest/node";

/**
 * Prints one plain closing line, `N passed, N failed, N skipped`, after vitest's own summary,
 * so whatever reads the end of a CI log sees the counts without parsing colours. A skipped
 * test is counted and named: nothing is skipped silently.
 *
 * A failure outside a test counts as failed too, once per place it happened: a file that did
 * not load, a suite whose beforeAll/afterAll threw (vitest then marks its tests skipped, so
 * counting tests alone would print "0 failed" for a broken run), an unhandled error.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<SerializedError>): void {
    let passed = 0;
    const failures: string[] = [];
    const skipped: string[] = [];
    for (const mod of modules) {
      const file = mod.moduleId.replace(`${process.cwd()}/`, "");
      for (const test of mod.children.allTests()) {
        const state = test.result().state;
        if (state === "passed") passed++;
        else if (state === "failed") failures.push(`${file} > ${test.fullName}`);
        else if (state === "skipped") skipped.push(`${file} > ${test.fullName}`);
      }
      if (mod.errors().length > 0) failures.push(`${file} (outside any test: ${firstLine(mod.errors())})`);
      for (const suite of mod.children.allSuites()) {
        if (suite.errors().length > 0) failures.push(`${file} > ${suite.fullName} (in a hook: ${firstLine(suite.errors())})`);
      }
    }
    for (const err of unhandledErrors) failures.push(`unhandled error: ${firstLine([err])}`);
    // After vitest's own summary, which it prints once every reporter's onTestRunEnd returned.
    setImmediate(() => {
      for (const name of skipped) console.log(`skipped: ${name}`);
      for (const name of failures) console.log(`failed: ${name}`);
      console.log(`\n${passed} passed, ${failures.length} failed, ${skipped.length} skipped`);
    });
  }
}

function firstLine(errors: ReadonlyArray<SerializedError>): string {
  const e = errors[0];
  return (e?.message ?? String(e)).split("\n")[0] ?? "";
}
