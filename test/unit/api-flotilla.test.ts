import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { journalArgs, SystemdCommands, statusArgs } from "../../agent/api/commands.js";
import { ApiError } from "../../agent/api/errors.js";
import { commandTarget, parseCommandQuery } from "../../agent/api/flotilla.js";
import { DISCOVERY_JSON } from "../../agent/api/server.js";
import type { Machine, UnitRecord } from "../../agent/model.js";
import type { PendingReason } from "../../agent/registry/registry.js";

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error("expected an ApiError");
}

describe("parseCommandQuery", () => {
  it("defaults to fleetctl's 10 lines of short output", () => {
    expect(parseCommandQuery(new URLSearchParams())).toEqual({ lines: 10, output: "short", follow: false });
  });

  it("reads lines, output, follow and machineID", () => {
    expect(parseCommandQuery(new URLSearchParams("lines=0&output=json&follow=1&machineID=m2"))).toEqual({
      lines: 0,
      output: "json",
      follow: true,
      machineID: "m2",
    });
    expect(parseCommandQuery(new URLSearchParams("follow=false")).follow).toBe(false);
  });

  it("refuses what journalctl would misread", () => {
    expect(apiError(() => parseCommandQuery(new URLSearchParams("lines=-5"))).message).toMatch(
      /^invalid lines "-5"/,
    );
    expect(apiError(() => parseCommandQuery(new URLSearchParams("lines=1e3"))).status).toBe(400);
    expect(apiError(() => parseCommandQuery(new URLSearchParams("output=--all"))).message).toMatch(
      /^invalid output "--all": expected one of short, /,
    );
    expect(apiError(() => parseCommandQuery(new URLSearchParams("follow=yes"))).status).toBe(400);
  });
});

describe("commandTarget", () => {
  const unit = (name: string, global = false): UnitRecord => ({
    name,
    hash: "h",
    desiredState: "launched",
    options: [
      { section: "Service", name: "ExecStart", value: "/bin/true" },
      ...(global ? [{ section: "X-Fleet", name: "Global", value: "true" }] : []),
    ],
  });
  const machine = (id: string, apiURL?: string): Machine => ({
    id,
    publicIP: "10.0.0.1",
    metadata: {},
    version: "0.1.0",
    ...(apiURL ? { apiURL } : {}),
  });
  const snap = {
    units: [
      unit("here.service"),
      unit("there.service"),
      unit("nowhere.service"),
      unit("g.service", true),
      unit("ssh.service"),
    ],
    schedule: new Map([
      ["here.service", { machineID: "self", at: 0, reason: "" }],
      ["there.service", { machineID: "m2", at: 0, reason: "" }],
      ["ssh.service", { machineID: "m2", at: 0, reason: "" }],
    ]),
    pending: new Map<string, PendingReason>([
      ["nowhere.service", { reason: "no machine has region=eu", at: 0 }],
    ]),
    machines: [machine("self", "http://10.0.0.1:4002"), machine("m2", "http://10.0.0.2:4002"), machine("m3")],
    states: [
      {
        name: "there.service",
        hash: "h",
        machineID: "m2",
        loadState: "loaded",
        activeState: "active",
        subState: "running",
      },
      {
        name: "ssh.service",
        hash: "h",
        machineID: "m2",
        loadState: "refused",
        activeState: "inactive",
        subState: "dead",
        reason: "refused: this machine already has ssh.service (/usr/lib/systemd/system/ssh.service)",
      },
    ],
  };

  it("runs locally for a unit placed here and for a global unit", () => {
    expect(commandTarget("here.service", snap, "self")).toEqual({ machineID: "self" });
    expect(commandTarget("g.service", snap, "self")).toEqual({ machineID: "self" });
  });

  it("forwards to the machine the unit is placed on, or the one asked for", () => {
    expect(commandTarget("there.service", snap, "self")).toMatchObject({
      machineID: "m2",
      machine: { apiURL: "http://10.0.0.2:4002" },
    });
    expect(commandTarget("g.service", snap, "self", "m2").machineID).toBe("m2");
    expect(commandTarget("there.service", snap, "self", "self")).toEqual({ machineID: "self" });
  });

  it("answers 404 for an unknown unit and 409, with the engine's reason, for an unplaced one", () => {
    expect(apiError(() => commandTarget("x.service", snap, "self"))).toMatchObject({
      status: 404,
      message: "unit does not exist",
    });
    expect(apiError(() => commandTarget("nowhere.service", snap, "self"))).toMatchObject({
      status: 409,
      message: "unit nowhere.service is not scheduled to any machine: no machine has region=eu",
    });
  });

  it("answers 409 with the machine's reason for a unit it refused, instead of showing the OS's unit", () => {
    expect(apiError(() => commandTarget("ssh.service", snap, "self"))).toMatchObject({
      status: 409,
      message:
        "unit ssh.service on machine m2: refused: this machine already has ssh.service (/usr/lib/systemd/system/ssh.service)",
    });
  });

  it("answers 502 when the machine is gone or has no API URL, 404 for an unknown machine asked for", () => {
    const gone = { ...snap, schedule: new Map([["there.service", { machineID: "m9", at: 0, reason: "" }]]) };
    expect(apiError(() => commandTarget("there.service", gone, "self")).status).toBe(502);
    expect(apiError(() => commandTarget("g.service", snap, "self", "m3")).message).toMatch(
      /publishes no API URL/,
    );
    expect(apiError(() => commandTarget("g.service", snap, "self", "m9")).status).toBe(404);
  });
});

describe("SystemdCommands", () => {
  let dir: string;
  const savedPath = process.env.PATH;

  beforeAll(() => {
    // Stand-ins for systemctl and journalctl that echo their arguments.
    dir = mkdtempSync(path.join(tmpdir(), "flotilla-api-cmd-"));
    writeFileSync(path.join(dir, "systemctl"), '#!/bin/sh\necho "systemctl $*"\necho oops >&2\nexit 3\n');
    writeFileSync(
      path.join(dir, "journalctl"),
      '#!/bin/sh\necho "journalctl $*"\ncase "$*" in *--follow*) while :; do echo tick; sleep 0.05; done;; esac\n',
    );
    chmodSync(path.join(dir, "systemctl"), 0o755);
    chmodSync(path.join(dir, "journalctl"), 0o755);
    process.env.PATH = `${dir}:${savedPath}`;
  });

  afterAll(() => {
    process.env.PATH = savedPath;
    rmSync(dir, { recursive: true, force: true });
  });

  it("builds fleetctl's command lines, never letting a name become an option", () => {
    expect(statusArgs("a.service")).toEqual(["status", "-l", "--no-pager", "--", "a.service"]);
    expect(journalArgs("a.service", { lines: 5, output: "short" }, true)).toEqual([
      "--unit=a.service",
      "--no-pager",
      "--lines=5",
      "--output=short",
      "--follow",
    ]);
  });

  it("returns the combined output and the exit code", async () => {
    const out = await new SystemdCommands().status("a.service");
    expect(out).toEqual({ exitCode: 3, output: "systemctl status -l --no-pager -- a.service\noops\n" });
    const journal = await new SystemdCommands().journal("a.service", { lines: 2, output: "cat" });
    expect(journal).toEqual({
      exitCode: 0,
      output: "journalctl --unit=a.service --no-pager --lines=2 --output=cat\n",
    });
  });

  it("truncates output past the limit, saying so", async () => {
    const out = await new SystemdCommands({ maxOutputBytes: 10 }).status("a.service");
    expect(out.output).toBe("systemctl \n[output truncated at 10 bytes]\n");
  });

  it("streams a followed journal until aborted", async () => {
    const stop = new AbortController();
    const stream = new SystemdCommands().followJournal(
      "a.service",
      { lines: 1, output: "short" },
      stop.signal,
    );
    let text = "";
    for await (const chunk of stream) {
      text += String(chunk);
      if (text.split("tick").length > 3) stop.abort();
    }
    expect(
      text.startsWith("journalctl --unit=a.service --no-pager --lines=1 --output=short --follow\ntick\n"),
    ).toBe(true);
  });
});

describe("discovery document", () => {
  it("is fleet's schema/v1.json byte for byte, $ENDPOINT left for the client", () => {
    expect(createHash("sha1").update(DISCOVERY_JSON).digest("hex")).toBe(
      "1c11f4f9696be193b36027650ef3e86d7bf49f49",
    );
    expect(DISCOVERY_JSON).toContain('"rootUrl": "$ENDPOINT/"');
  });
});
