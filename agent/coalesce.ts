// Serial runs of an async job. A call made while a run is in flight must not be lost (the change
// it reports may come after the run read its inputs) nor start a second run beside it (two runs
// can finish out of order and leave the older result in place): it folds into one more run.

/** Wraps `job` so runs never overlap; calls during a run add exactly one run after it. */
export function coalesced(job: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await job();
        } while (again);
      } finally {
        running = undefined;
      }
    })();
    return running;
  };
}
