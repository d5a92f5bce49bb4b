// The one error type of the update modules. `code` is a short stable tag (manifest, signature,
// file, waves, window, slots, release, …) for logs and status records; the message names exactly
// what was wrong and where, because it ends up in `fleetctl update-status` and in etcd.

export class UpdateError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "UpdateError";
  }
}
