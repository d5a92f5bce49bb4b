import http from "node:http";
import https from "node:https";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { clientOf, concurrencyLimit, DEFAULT_API_LIMITS, limitListener } from "../../agent/api/limits.js";
import { ConfigError, DEFAULT_CONFIG, resolveConfig } from "../../agent/config.js";
import { refusalLog } from "../../agent/refusals.js";

/** A pino logger that keeps its lines. */
function capturingLog() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { log, lines };
}

describe("concurrencyLimit", () => {
  it("hands out at most max slots, and a released slot can be taken again once", () => {
    const limit = concurrencyLimit(2);
    const a = limit.acquire();
    const b = limit.acquire();
    expect(a).toBeDefined();
    expect(b).toBeDefined();
    expect(limit.acquire()).toBeUndefined();
    expect(limit.active).toBe(2);
    a?.();
    a?.(); // releasing twice frees one slot, not two
    expect(limit.active).toBe(1);
    expect(limit.acquire()).toBeDefined();
    expect(limit.acquire()).toBeUndefined();
  });
});

describe("refusalLog", () => {
  it("logs the first refusal of a kind at warn with the client, then one per interval with the count left out", () => {
    const { log, lines } = capturingLog();
    let now = 0;
    const refused = refusalLog(log, 10_000, () => now);
    refused("TCP connections", { client: "10.0.0.9:5000" }, "connection refused");
    for (let i = 0; i < 99; i++)
      refused("TCP connections", { client: "10.0.0.9:5001" }, "connection refused");
    refused("journal follows", { client: "local" }, "follow refused");
    now = 10_000;
    refused("TCP connections", { client: "10.0.0.8:1" }, "connection refused");
    expect(
      lines.map(({ level, refusal, client, suppressed, msg }) => ({
        level,
        refusal,
        client,
        suppressed,
        msg,
      })),
    ).toEqual([
      {
        level: 40,
        refusal: "TCP connections",
        client: "10.0.0.9:5000",
        suppressed: undefined,
        msg: "connection refused",
      },
      {
        level: 40,
        refusal: "journal follows",
        client: "local",
        suppressed: undefined,
        msg: "follow refused",
      },
      {
        level: 40,
        refusal: "TCP connections",
        client: "10.0.0.8:1",
        suppressed: 99,
        msg: "connection refused",
      },
    ]);
  });
});

describe("limitListener", () => {
  it.each([
    ["http", () => http.createServer()],
    ["https", () => https.createServer()],
  ])("sets the cap and the timeouts on an %s server", (_, create) => {
    const server = create();
    const limits = { maxConnections: 7, headersTimeoutMs: 1000, requestTimeoutMs: 2000, idleTimeoutMs: 3000 };
    limitListener(server, "TCP", limits, () => undefined);
    expect(server.maxConnections).toBe(7);
    expect(server.headersTimeout).toBe(1000);
    expect(server.requestTimeout).toBe(2000);
    expect(server.timeout).toBe(3000);
    expect(server.keepAliveTimeout).toBe(3000);
    expect(server.listenerCount("drop")).toBe(1);
  });

  it("reports a dropped connection with its client", () => {
    const server = http.createServer();
    const seen: unknown[] = [];
    limitListener(server, "TCP", DEFAULT_API_LIMITS.tcp, (kind, fields, message) =>
      seen.push({ kind, fields, message }),
    );
    server.emit("drop", { remoteAddress: "10.1.2.3", remotePort: 4567 });
    server.emit("drop", undefined);
    expect(seen).toEqual([
      {
        kind: "TCP connections",
        fields: { listener: "TCP", client: "10.1.2.3:4567" },
        message: "connection refused: the TCP listener already has 1024 open connections",
      },
      {
        kind: "TCP connections",
        fields: { listener: "TCP", client: "local" },
        message: "connection refused: the TCP listener already has 1024 open connections",
      },
    ]);
  });

  it("names a unix socket peer local", () => {
    expect(clientOf({})).toBe("local");
    expect(clientOf({ remoteAddress: "::1", remotePort: 80 })).toBe("::1:80");
  });
});

describe("resource limit settings", () => {
  it("defaults to the documented caps", () => {
    expect(DEFAULT_CONFIG.limits).toEqual({
      api: {
        tcp: {
          maxConnections: 1024,
          headersTimeoutMs: 10_000,
          requestTimeoutMs: 60_000,
          idleTimeoutMs: 10_000,
        },
        socket: {
          maxConnections: 128,
          headersTimeoutMs: 10_000,
          requestTimeoutMs: 60_000,
          idleTimeoutMs: 10_000,
        },
        journalFollows: 16,
      },
      dnsTcpMaxConnections: 256,
      dnsTcpIdleTimeoutMs: 5_000,
    });
  });

  it("takes each from a file, the environment or a flag, without touching the defaults", () => {
    const cfg = resolveConfig(
      { "api-max-connections": 50, "dns-tcp-max-connections": "9" },
      { FLOTILLA_API_SOCKET_MAX_CONNECTIONS: "5", FLOTILLA_JOURNAL_FOLLOW_MAX: "2" },
      [
        "--api-idle-timeout-ms=1500",
        "--api-headers-timeout-ms=700",
        "--api-request-timeout-ms=900",
        "--dns-tcp-idle-timeout-ms=300",
      ],
    );
    expect(cfg.limits).toEqual({
      api: {
        tcp: { maxConnections: 50, headersTimeoutMs: 700, requestTimeoutMs: 900, idleTimeoutMs: 1500 },
        socket: { maxConnections: 5, headersTimeoutMs: 700, requestTimeoutMs: 900, idleTimeoutMs: 1500 },
        journalFollows: 2,
      },
      dnsTcpMaxConnections: 9,
      dnsTcpIdleTimeoutMs: 300,
    });
    expect(DEFAULT_CONFIG.limits.api.tcp.maxConnections).toBe(1024);
  });

  it("refuses anything but a positive integer, naming the setting", () => {
    for (const raw of ["0", "-1", "1.5", "lots", "", "2000000000"]) {
      expect(() => resolveConfig(undefined, {}, [`--journal-follow-max=${raw}`])).toThrow(ConfigError);
    }
    expect(() => resolveConfig(undefined, { FLOTILLA_API_MAX_CONNECTIONS: "many" }, [])).toThrow(
      'environment FLOTILLA_API_MAX_CONNECTIONS: must be a positive integer up to 1000000000, got "many"',
    );
  });
});
