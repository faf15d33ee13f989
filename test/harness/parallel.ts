/**
 * `fn(0) … fn(n - 1)`, at most `limit` at once, results in index order: for fixtures that make
 * many volumes or snapshots. On the OpenZFS VM each zfs command waits for a transaction group
 * to sync (~0.3 s under TCG); concurrent ones share it. `limit` keeps the queue behind the
 * driver's per-host command slots short enough for its command timeout.
 */
export async function times<T>(n: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      results[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return results;
}
