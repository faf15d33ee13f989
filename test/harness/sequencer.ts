/**
 * vitest's default order (failed first, then longest first, or largest first without a
 * cache), except that the files which wait for something the run builds in the background go
 * last in their project: image.test.ts waits for the container image (test/hosts/image/
 * background.ts), so the rest of its project runs while that image builds.
 */
import type { TestSpecification } from "vitest/node";
import { BaseSequencer } from "vitest/node";

const LAST = ["/test/integration/image.test.ts"];

export function waitsForBackgroundWork(moduleId: string): boolean {
  return LAST.some((suffix) => moduleId.endsWith(suffix));
}

export default class LastWaitersSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    return [...sorted.filter((f) => !waitsForBackgroundWork(f.moduleId)), ...sorted.filter((f) => waitsForBackgroundWork(f.moduleId))];
  }
}
