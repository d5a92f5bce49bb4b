// Wires the registry as the agent uses it: the watch-fed view, its feed over etcd, and the
// EtcdRegistry that serves reads from the view and writes to etcd.

import type { Etcd3 } from "etcd3";
import type { Logger } from "../log.js";
import { observeWatchLag } from "../metrics.js";
import { EtcdRegistry } from "./etcd.js";
import { EtcdSource } from "./etcd-source.js";
import { type FeedOptions, ViewFeed } from "./feed.js";
import type { Keys } from "./keys.js";
import type { Quarantine } from "./quarantine.js";
import { ClusterView } from "./view.js";

export interface OpenRegistry {
  registry: EtcdRegistry;
  view: ClusterView;
  feed: ViewFeed;
}

/**
 * Starts the view's list and watch; `feed.ready()` resolves once the view is live. Values that fail
 * their checks go to `quarantine` (a private one when not given).
 */
export function openRegistry(
  client: Etcd3,
  keys: Keys,
  log: Logger,
  {
    quarantine,
    ...hooks
  }: Pick<FeedOptions, "onEvents" | "onResync" | "pageSize"> & { quarantine?: Quarantine } = {},
): OpenRegistry {
  const view = new ClusterView(keys, quarantine);
  const feed = new ViewFeed(new EtcdSource(client), view, keys.prefix, {
    log,
    onWriteApplied: observeWatchLag,
    ...hooks,
  });
  feed.start();
  return { registry: new EtcdRegistry(client, view, feed, keys), view, feed };
}
