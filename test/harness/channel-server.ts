import { createReadStream, readFileSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/** One request as the server saw it, for tests that assert on resumption (Range) and polling. */
export interface ServedRequest {
  path: string;
  range?: string;
  status: number;
}

/**
 * A static HTTP server for an update channel directory (`channels/<name>/...`), as any plain web
 * server would serve it: GET and HEAD, single byte ranges (206 / 416), nothing else. Listens on all
 * addresses so QEMU guests reach it at 10.0.2.2 and nspawn machines at the bridge address.
 */
export class ChannelServer {
  readonly requests: ServedRequest[] = [];
  /** Path → bytes: the next response for that path stops after them and the connection drops. */
  readonly cutOnce = new Map<string, number>();
  /**
   * Path → a hostile answer: `endless` sends a 200 that never ends, as fast as the client reads;
   * `drip` sends the file one byte every 200 ms. `sent` counts the bytes written to the socket.
   */
  readonly hostile = new Map<string, "endless" | "drip">();
  sent = 0;

  private constructor(
    readonly root: string,
    private readonly server: Server,
  ) {}

  static async start(root: string, host = "0.0.0.0"): Promise<ChannelServer> {
    const server = createServer();
    const cs = new ChannelServer(root, server);
    server.on("request", (req, res) => {
      const urlPath = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      const file = path.join(root, path.normalize(urlPath));
      const record = (status: number) =>
        cs.requests.push({
          path: urlPath,
          status,
          ...(req.headers.range ? { range: req.headers.range } : {}),
        });
      const hostile = cs.hostile.get(urlPath);
      if (hostile === "endless") {
        record(200);
        res.writeHead(200, { "content-type": "application/json" });
        const chunk = Buffer.from(`{"manifest":"${"x".repeat(64 * 1024)}`);
        const more = () => {
          while (!res.destroyed) {
            cs.sent += chunk.length;
            if (!res.write(chunk)) break;
          }
        };
        res.on("drain", more);
        more();
        return;
      }
      let size: number;
      try {
        const st = statSync(file);
        if (!file.startsWith(root) || !st.isFile()) throw new Error("not a file");
        size = st.size;
      } catch {
        record(404);
        res.writeHead(404).end();
        return;
      }
      let start = 0;
      let end = size - 1;
      let status = 200;
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
      if (range) {
        start = Number(range[1]);
        end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
        if (start >= size) {
          record(416);
          res.writeHead(416, { "content-range": `bytes */${size}` }).end();
          return;
        }
        status = 206;
      }
      record(status);
      res.writeHead(status, {
        "content-length": String(end - start + 1),
        "accept-ranges": "bytes",
        ...(status === 206 ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
      });
      if (req.method === "HEAD") {
        res.end();
        return;
      }
      if (hostile === "drip") {
        const bytes = readFileSync(file).subarray(start, end + 1);
        let at = 0;
        const timer = setInterval(() => {
          if (res.destroyed || at >= bytes.length) {
            clearInterval(timer);
            res.end();
            return;
          }
          res.write(bytes.subarray(at, ++at));
          cs.sent++;
        }, 200);
        res.on("close", () => clearInterval(timer));
        return;
      }
      const cut = cs.cutOnce.get(urlPath);
      if (cut === undefined) {
        createReadStream(file, { start, end }).pipe(res);
        return;
      }
      // Part of a response, then the connection drops: what a flaky network does.
      cs.cutOnce.delete(urlPath);
      const partial = createReadStream(file, { start, end: Math.min(end, start + cut - 1) });
      partial.pipe(res, { end: false });
      partial.on("end", () => res.socket?.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, host, () => resolve());
    });
    return cs;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** A channel's URL as the host reaches it. */
  url(channel: string): string {
    return `http://127.0.0.1:${this.port}/${channel}/`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
