// Progress goes to stderr: scripts/up and benchmarks print their own results on stdout.
export function log(message: string): void {
  process.stderr.write(`[harness] ${message}\n`);
}

/** Seconds since `start` (a `performance.now()` value), for progress lines. */
export function since(start: number): string {
  return `${((performance.now() - start) / 1000).toFixed(1)} s`;
}
