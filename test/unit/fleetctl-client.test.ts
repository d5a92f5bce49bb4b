import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ApiError, HttpFleetApi, TransportError } from "../../fleetctl/client.js";

interface Seen {
  method: string;
  url: string;
  host: string | undefined;
  contentType: string | undefined;
  body: string;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void;

let dir: string;
let server: http.Server | undefined;
let seen: Seen[];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "fleetctl-client-"));
  seen = [];
});

afterEach(async () => {
  if (server) {
    server.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    server = undefined;
  }
  rmSync(dir, { recursive: true, force: true });
});

function json(res: http.ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(value));
}

async function serve(handler: Handler, where: "unix" | "tcp" = "unix"): Promise<HttpFleetApi> {
  server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => {
      body += c.toString();
    });
    req.on("end", () => {
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        host: req.headers.host,
        contentType: req.headers["content-type"],
        body,
      });
      handler(req, res, body);
    });
  });
  if (where === "unix") {
    const socketPath = path.join(dir, "fleet.sock");
    await new Promise<void>((resolve) => server?.listen(socketPath, resolve));
    return new HttpFleetApi({
      endpoint: { kind: "unix", socketPath, display: `unix://${socketPath}` },
      timeoutMs: 1000,
    });
  }
  await new Promise<void>((resolve) => server?.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return new HttpFleetApi({
    endpoint: {
      kind: "tcp",
      host: "127.0.0.1",
      port,
      basePath: "/base",
      display: `http://127.0.0.1:${port}/base`,
    },
    timeoutMs: 1000,
  });
}

describe("HttpFleetApi wire behaviour", () => {
  it("uses /fleet/v1 paths with ?alt=json, escapes @ and sends Host domain-sock over a socket", async () => {
    const api = await serve((_req, res) => json(res, 200, { name: "a@1.service", currentState: "inactive" }));
    try {
      expect(await api.unit("a@1.service")).toEqual({ name: "a@1.service", currentState: "inactive" });
      await api.unitState("a@1.service");
    } finally {
      api.close();
    }
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      "GET /fleet/v1/units/a%401.service?alt=json",
      "GET /fleet/v1/state/a%401.service?alt=json",
    ]);
    expect(seen[0]?.host).toBe("domain-sock");
  });

  it("prefixes the endpoint's path and sends host:port over TCP", async () => {
    const api = await serve((_req, res) => json(res, 200, { machines: [{ id: "m1" }] }), "tcp");
    try {
      expect(await api.machines()).toEqual([{ id: "m1" }]);
    } finally {
      api.close();
    }
    expect(seen[0]?.url).toBe("/base/fleet/v1/machines?alt=json");
    expect(seen[0]?.host).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it("follows nextPageToken until there is none", async () => {
    const api = await serve((req, res) => {
      const token = new URL(req.url ?? "", "http://x").searchParams.get("nextPageToken");
      if (token === null) json(res, 200, { units: [{ name: "a.service" }], nextPageToken: "EwBMLg==" });
      else if (token === "EwBMLg==") json(res, 200, { units: [{ name: "b.service" }], nextPageToken: "p3" });
      else json(res, 200, {});
    });
    try {
      expect((await api.units()).map((u) => u.name)).toEqual(["a.service", "b.service"]);
    } finally {
      api.close();
    }
    expect(seen.map((s) => s.url)).toEqual([
      "/fleet/v1/units?alt=json",
      "/fleet/v1/units?alt=json&nextPageToken=EwBMLg%3D%3D",
      "/fleet/v1/units?alt=json&nextPageToken=p3",
    ]);
  });

  it("stops when a server repeats a page token", async () => {
    const api = await serve((_req, res) =>
      json(res, 200, { states: [{ name: "a.service" }], nextPageToken: "same" }),
    );
    try {
      expect(await api.unitStates()).toHaveLength(2);
    } finally {
      api.close();
    }
  });

  it("creates with options only and sets the desired state alone, as JSON", async () => {
    const api = await serve((_req, res) => {
      res.writeHead(204);
      res.end();
    });
    const options = [{ section: "Service", name: "ExecStart", value: "/bin/true" }];
    try {
      await api.createUnit("hello.service", options);
      await api.setUnitTargetState("hello.service", "launched");
    } finally {
      api.close();
    }
    expect(seen.map((s) => [s.method, s.url, s.contentType, JSON.parse(s.body)])).toEqual([
      [
        "PUT",
        "/fleet/v1/units/hello.service?alt=json",
        "application/json",
        { name: "hello.service", options },
      ],
      [
        "PUT",
        "/fleet/v1/units/hello.service?alt=json",
        "application/json",
        { desiredState: "launched", name: "hello.service" },
      ],
    ]);
  });

  it("maps 404 to undefined (GET) or false (DELETE) and other errors to googleapi's wording", async () => {
    const api = await serve((req, res) => {
      if (req.method === "DELETE" || req.url?.includes("missing")) {
        json(res, 404, { error: { code: 404, message: "unit does not exist" } });
      } else
        json(res, 503, { error: { code: 503, message: "fleet server unable to communicate with etcd" } });
    });
    try {
      expect(await api.unit("missing.service")).toBeUndefined();
      expect(await api.destroyUnit("x.service")).toBe(false);
      const err = await api.units().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApiError);
      expect((err as Error).message).toBe(
        "googleapi: Error 503: fleet server unable to communicate with etcd",
      );
    } finally {
      api.close();
    }
  });

  it("reports a non-JSON error answer by status", async () => {
    const api = await serve((_req, res) => {
      res.writeHead(502);
      res.end("bad gateway");
    });
    try {
      await expect(api.machines()).rejects.toThrow("googleapi: got HTTP response code 502");
    } finally {
      api.close();
    }
  });

  it("calls Flotilla's status and journal extensions", async () => {
    const api = await serve((_req, res) => json(res, 200, { exitCode: 3, output: "out\n" }));
    try {
      expect(await api.unitStatus("a@1.service")).toEqual({ exitCode: 3, output: "out\n" });
      await api.unitJournal("a.service", { lines: 5, output: "json" });
    } finally {
      api.close();
    }
    expect(seen.map((s) => s.url)).toEqual([
      "/flotilla/v1/units/a%401.service/status",
      "/flotilla/v1/units/a.service/journal?lines=5&output=json",
    ]);
  });

  it("lists services, all or one, through Flotilla's extension", async () => {
    const record = { service: "web", machineID: "m1", unit: "web.service", ip: "10.0.0.1", ports: [] };
    const api = await serve((req, res) =>
      json(res, 200, req.url?.includes("service=") ? { services: [record] } : {}),
    );
    try {
      expect(await api.services()).toEqual([]);
      expect(await api.services("web")).toEqual([record]);
    } finally {
      api.close();
    }
    expect(seen.map((s) => s.url)).toEqual(["/flotilla/v1/services", "/flotilla/v1/services?service=web"]);
  });

  it("streams a followed journal without the request timeout cutting it off", async () => {
    const api = await serve((_req, res) => {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.write("line 1\n");
      setTimeout(() => res.end("line 2\n"), 150);
    });
    const api2 = new HttpFleetApi({
      endpoint: { kind: "unix", socketPath: path.join(dir, "fleet.sock"), display: "x" },
      timeoutMs: 50,
    });
    const chunks: string[] = [];
    try {
      expect(
        await api2.followJournal("a.service", { lines: 10, output: "short" }, (c) => chunks.push(c)),
      ).toBe(true);
    } finally {
      api.close();
      api2.close();
    }
    expect(chunks.join("")).toBe("line 1\nline 2\n");
    expect(seen[0]?.url).toBe("/flotilla/v1/units/a.service/journal?lines=10&output=short&follow=1");
  });

  it("logs fleet's debug lines", async () => {
    const lines: string[] = [];
    const inner = await serve((_req, res) => json(res, 200, {}));
    inner.close();
    const api = new HttpFleetApi({
      endpoint: { kind: "unix", socketPath: path.join(dir, "fleet.sock"), display: "x" },
      timeoutMs: 1000,
      debug: (l) => lines.push(l),
    });
    try {
      await api.machines();
    } finally {
      api.close();
    }
    expect(lines).toEqual([
      "HTTP GET http://domain-sock/fleet/v1/machines?alt=json",
      "HTTP GET http://domain-sock/fleet/v1/machines?alt=json 200 OK",
    ]);
  });
});

describe("HttpFleetApi failures", () => {
  it("fails fast and names the endpoint when nothing listens", async () => {
    const socketPath = path.join(dir, "absent.sock");
    const api = new HttpFleetApi({
      endpoint: { kind: "unix", socketPath, display: `unix://${socketPath}` },
      timeoutMs: 3000,
    });
    const started = Date.now();
    try {
      const err = await api.machines().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportError);
      expect((err as Error).message).toBe(
        `cannot reach fleet API at unix://${socketPath} (GET /fleet/v1/machines?alt=json): no such socket file (ENOENT)`,
      );
    } finally {
      api.close();
    }
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("reports refused TCP connections", async () => {
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    const api = new HttpFleetApi({
      endpoint: { kind: "tcp", host: "127.0.0.1", port, basePath: "", display: `http://127.0.0.1:${port}` },
      timeoutMs: 3000,
    });
    try {
      await expect(api.units()).rejects.toThrow(
        `cannot reach fleet API at http://127.0.0.1:${port} (GET /fleet/v1/units?alt=json): connection refused (ECONNREFUSED)`,
      );
    } finally {
      api.close();
    }
  });

  it("times out a server that accepts but never answers (fleet hung here)", async () => {
    await serve(() => {
      // never answer
    });
    const api = new HttpFleetApi({
      endpoint: { kind: "unix", socketPath: path.join(dir, "fleet.sock"), display: "unix:///x.sock" },
      timeoutMs: 100,
    });
    const started = Date.now();
    try {
      await expect(api.unit("a.service")).rejects.toThrow(
        "fleet API at unix:///x.sock did not answer GET /fleet/v1/units/a.service?alt=json within 0.1s (--request-timeout)",
      );
    } finally {
      api.close();
    }
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("times out a server that stalls halfway through its answer", async () => {
    await serve((_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.write('{"units":[');
    });
    const api = new HttpFleetApi({
      endpoint: { kind: "unix", socketPath: path.join(dir, "fleet.sock"), display: "s" },
      timeoutMs: 100,
    });
    try {
      await expect(api.units()).rejects.toThrow("did not answer GET /fleet/v1/units?alt=json within 0.1s");
    } finally {
      api.close();
    }
  });
});
