// A bound on concurrent async work: enough calls in flight to overlap their round trips, few
// enough not to flood the other side (systemd's job queue, etcd).

/**
 * Calls `fn` for every item, at most `limit` at a time. One item's failure does not stop the
 * others: once all have settled, the first error (if any) is thrown.
 */
export async function forEachBounded<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item).catch((err: unknown) => errors.push(err));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (errors.length > 0) throw errors[0];
}
