// The view's port to etcd (feed.ts `KvSource`): paged ranges at a revision and one watch, with
// etcd3's errors sorted into what they mean. Only a failed connection counts as "etcd
// unreachable"; a reply over gRPC's size limit or a compacted revision are told apart.

import {
  type Etcd3,
  EtcdWatchStreamEnded,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCOutOfRangeError,
  GRPCResourceExhastedError,
  GRPCUnavailableError,
  type IWatchResponse,
} from "etcd3";
import { CompactedError, type KvPage, type KvSource, TooLargeError, type WatchSink } from "./feed.js";
import { RegistryUnavailableError } from "./registry.js";
import type { ViewEvent } from "./view.js";

/** Errors that mean etcd could not be reached (or answered too late), as opposed to a refusal. */
export function isConnectionFailure(err: unknown): boolean {
  return (
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCCancelledError ||
    err instanceof EtcdWatchStreamEnded ||
    (err instanceof Error && /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ETIMEDOUT/.test(err.message)) ||
    // Over TLS, etcd going away mid-call ends the HTTP/2 stream without a gRPC status; grpc-js
    // reports that as INTERNAL, though the server said nothing: the connection is what failed.
    (err instanceof Error && /RST_STREAM with code 0|Call ended without gRPC status/.test(err.message))
  );
}

/** Wraps a connection failure as RegistryUnavailableError; anything else is returned as it is. */
export function asRegistryError(err: unknown): unknown {
  if (err instanceof RegistryUnavailableError) return err;
  return isConnectionFailure(err) ? new RegistryUnavailableError(err) : err;
}

export class EtcdSource implements KvSource {
  constructor(private readonly client: Etcd3) {}

  async range(req: { start: string; end: string; limit: number; revision: number }): Promise<KvPage> {
    try {
      const res = await this.client.kv.range({
        key: Buffer.from(req.start),
        range_end: Buffer.from(req.end),
        limit: req.limit,
        revision: req.revision,
      });
      return {
        revision: Number(res.header.revision),
        entries: res.kvs.map((kv) => ({
          key: kv.key.toString(),
          value: kv.value.toString(),
          revision: Number(kv.mod_revision),
        })),
        more: res.more,
      };
    } catch (err) {
      if (err instanceof GRPCOutOfRangeError || (err instanceof Error && /compacted/.test(err.message)))
        throw new CompactedError(err.message);
      if (err instanceof GRPCResourceExhastedError) throw new TooLargeError(err.message);
      throw asRegistryError(err);
    }
  }

  watch(prefix: string, fromRevision: number, sink: WatchSink): { cancel(): Promise<void> } {
    // watcher(), not create(): the handlers are attached before anything can be emitted. etcd3
    // would resume a broken watch by itself, but from the revision in the last reply's header,
    // which during a catch-up is ahead of the events delivered so far; the feed resumes instead,
    // from the last change it applied.
    const w = this.client.watch().prefix(prefix).startRevision(String(fromRevision)).watcher();
    let done = false;
    const finish = (report: () => void) => {
      if (done) return;
      done = true;
      report();
    };
    w.on("connected", () => {
      if (!done) sink.connected();
    });
    w.on("data", (res: IWatchResponse) => {
      if (done) return;
      if (res.events.length === 0) {
        sink.progress(Number(res.header.revision));
        return;
      }
      sink.events(
        res.events.map((ev): ViewEvent => {
          const key = ev.kv.key.toString();
          const revision = Number(ev.kv.mod_revision);
          return String(ev.type).toLowerCase() === "delete"
            ? { type: "delete", key, revision }
            : { type: "put", key, value: ev.kv.value.toString(), revision };
        }),
      );
    });
    // Detached at once, so etcd3 does not resume it on its own; etcd already dropped a canceled one.
    w.on("disconnected", (err: unknown) => {
      void w.cancel().catch(() => undefined);
      finish(() => sink.broken(asRegistryError(err)));
    });
    w.on("error", (err: unknown) => finish(() => sink.canceled(err)));
    return {
      cancel: async () => {
        if (done) return;
        done = true;
        await w.cancel();
      },
    };
  }
}
