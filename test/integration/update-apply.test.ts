// The updater's real parts on the host, no VM: a sparse GPT disk image made with sgdisk (the
// image's USR/USR-VERITY labels and type GUIDs), a temporary ESP directory, releases made by
// scripts/release from a small random payload and signed with the test key, served by a local
// HTTP server that honours Range and can cut a response short. The Updater loop itself runs each
// pass, with fakes only for etcd (records, lock), the drain and the reboot.

import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../agent/log.js";
import { Disk } from "../../agent/update/disk.js";
import { downloadRelease } from "../../agent/update/download.js";
import {
  type Manifest,
  RELEASE_FILES,
  type SignedManifest,
  signManifest,
} from "../../agent/update/manifest.js";
import type { BadVersion, GroupConfig, UpdateStatus } from "../../agent/update/records.js";
import { newEntry } from "../../agent/update/slots.js";
import { readState, writeGateFailure } from "../../agent/update/state.js";
import {
  type RebootSemaphore,
  type UpdateRecords,
  Updater,
  type UpdaterDeps,
} from "../../agent/update/updater.js";
import { makeRelease } from "../../scripts/lib/release.js";
import { ChannelServer } from "../harness/channel-server.js";
import { makeSlotDisk } from "../harness/slot-disk.js";

const REPO = join(import.meta.dirname, "../..");
const KEY_DIR = join(REPO, "test/fixtures/update-keys");
const KEY = join(KEY_DIR, "00dd9a95a776d12b.pem");
const MiB = 1024 * 1024;
const CMDLINE_A =
  "root=PARTLABEL=ROOT rw mount.usr=/dev/mapper/usr systemd.verity_usr_data=PARTLABEL=USR-A systemd.verity_usr_hash=PARTLABEL=USR-A-VERITY usrhash=x";
const CMDLINE_B = CMDLINE_A.replaceAll("USR-A", "USR-B");

const root = mkdtempSync(join(tmpdir(), "flotilla-update-apply-"));
const channels = join(root, "channels");
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const quiet = () => {};

/** A random payload as scripts/build-image's payload/ (manifest.json + the four files). */
function payload(
  name: string,
  version: string,
  usrBytes: number,
): { dir: string; files: Record<string, Buffer> } {
  const dir = join(root, "payloads", name);
  mkdirSync(dir, { recursive: true });
  const sizes: Record<string, number> = {
    "usr.squashfs": usrBytes,
    "usr.verity": 64 * 1024,
    vmlinuz: MiB,
    initrd: MiB + 12345,
  };
  const files: Record<string, Buffer> = {};
  const meta: Record<string, { size: number; sha256: string }> = {};
  for (const f of RELEASE_FILES) {
    files[f] = randomBytes(sizes[f] as number);
    writeFileSync(join(dir, f), files[f]);
    meta[f] = { size: sizes[f] as number, sha256: sha256(files[f]) };
  }
  writeFileSync(
    join(dir, "manifest.json"),
    JSON.stringify({
      name: "flotilla",
      version,
      kernelVersion: "6.1.0-test",
      verity: { rootHash: "c".repeat(64), dataBlockSize: 4096, hashBlockSize: 4096 },
      cmdline: { A: CMDLINE_A, B: CMDLINE_B },
      files: meta,
    }),
  );
  return { dir, files };
}

/**
 * A copy of the good release under another channel (its manifest signed again for that channel),
 * changed by `alter` (files or manifest).
 */
function variant(
  channel: string,
  alter: (dir: string, signed: SignedManifest) => SignedManifest | undefined,
): void {
  const dir = join(channels, channel, "1.1.0");
  cpSync(join(channels, "good", "1.1.0"), dir, { recursive: true });
  const good = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as SignedManifest;
  const signed = signManifest({ ...good.manifest, channel }, readFileSync(KEY, "utf8"));
  const doc = alter(dir, signed) ?? signed;
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(doc));
  writeFileSync(join(channels, channel, "latest.json"), JSON.stringify(doc));
}

/** A machine booted from slot A at 1.0.0: its disk image, ESP, state dir and boot facts. */
class TestMachine {
  readonly dir = mkdtempSync(join(root, "machine-"));
  readonly disk = join(this.dir, "disk.raw");
  readonly esp = join(this.dir, "esp");
  readonly state = join(this.dir, "state");
  readonly cmdline = join(this.dir, "cmdline");
  readonly osRelease = join(this.dir, "os-release");
  readonly statuses: UpdateStatus[] = [];
  readonly bad: BadVersion[] = [];
  readonly calls: string[] = [];
  group: GroupConfig = { strategy: "off", maxHolders: 1, paused: false };

  constructor() {
    makeSlotDisk(this.disk, { usrMiB: 8, verityMiB: 2 });
    mkdirSync(join(this.esp, "loader/entries"), { recursive: true });
    writeFileSync(join(this.esp, "loader/entries/flotilla-a.conf"), "title slot A\n");
    this.boot("A", "1.0.0");
  }

  boot(slot: "A" | "B", version: string): void {
    writeFileSync(this.cmdline, `${slot === "A" ? CMDLINE_A : CMDLINE_B}\n`);
    writeFileSync(this.osRelease, `VERSION_ID="12"\nIMAGE_ID=flotilla\nIMAGE_VERSION=${version}\n`);
  }

  entries(): string[] {
    return readdirSync(join(this.esp, "loader/entries")).sort();
  }

  async hash(label: string, length: number): Promise<string> {
    return (await Disk.open(this.disk)).hashPartition(label, length);
  }

  updater(channel: string, extra: Partial<UpdaterDeps> = {}): Updater {
    const records: UpdateRecords = {
      groupConfig: async () => this.group,
      badVersions: async () => new Set(this.bad.map((b) => b.version)),
      markBad: async (b) => void this.bad.push(b),
      putStatus: async (s) => void this.statuses.push(s),
    };
    const lock: RebootSemaphore = {
      acquire: async (group, holder) => {
        this.calls.push(`acquire ${group} ${holder}`);
        return { acquired: true, leaseId: "7587", holders: [holder], maxHolders: 1 };
      },
      keepAlive: async (leaseId) => {
        this.calls.push(`keepAlive ${leaseId}`);
        return true;
      },
      release: async (group, holder) => {
        this.calls.push(`release ${group} ${holder}`);
        return true;
      },
    };
    return new Updater({
      cfg: {
        updateChannelURL: server.url(channel),
        updateGroup: "default",
        updateIntervalSeconds: 3600,
        updateDisk: this.disk,
        espDir: this.esp,
        stateDir: this.state,
        pinnedVersion: "",
      },
      machineID: "e".repeat(32),
      log: createLogger("silent"),
      records,
      lock,
      drain: async () => void this.calls.push("drain"),
      reboot: async () => void this.calls.push("reboot"),
      paths: { procCmdline: this.cmdline, osRelease: this.osRelease, keyDirs: [KEY_DIR] },
      ...extra,
    });
  }

  get last(): UpdateStatus {
    return this.statuses[this.statuses.length - 1] as UpdateStatus;
  }
}

let server: ChannelServer;
let good: { dir: string; files: Record<string, Buffer> };
let manifest: Manifest;

beforeAll(async () => {
  good = payload("good", "1.1.0", 6 * MiB);
  const made = await makeRelease({ payload: good.dir, key: KEY, channel: "good", out: channels, log: quiet });
  manifest = made.signed.manifest;
  await makeRelease({
    payload: payload("big", "1.1.0", 9 * MiB).dir,
    key: KEY,
    channel: "big",
    out: channels,
    log: quiet,
  });
  await makeRelease({ payload: good.dir, key: KEY, channel: "resume", out: channels, log: quiet });
  variant("flipped", (dir) => {
    const gz = readFileSync(join(dir, "usr.squashfs.gz"));
    const at = Math.floor(gz.length / 2);
    gz[at] = (gz[at] as number) ^ 0x01;
    writeFileSync(join(dir, "usr.squashfs.gz"), gz);
    return undefined;
  });
  variant("truncated", (dir) => {
    const gz = readFileSync(join(dir, "usr.squashfs.gz"));
    writeFileSync(join(dir, "usr.squashfs.gz"), gz.subarray(0, gz.length - 1000));
    return undefined;
  });
  variant("unknown-key", (_dir, signed) => {
    const { privateKey } = generateKeyPairSync("ed25519");
    return signManifest(signed.manifest, privateKey.export({ format: "pem", type: "pkcs8" }).toString());
  });
  variant("wrong-hash", (_dir, signed) => {
    const m = structuredClone(signed.manifest);
    m.files["usr.squashfs"].sha256 = sha256(Buffer.from("another build's /usr"));
    return signManifest(m, readFileSync(KEY, "utf8"));
  });
  variant("wrong-channel", (_dir, signed) =>
    signManifest({ ...signed.manifest, channel: "beta" }, readFileSync(KEY, "utf8")),
  );
  variant("expired", (_dir, signed) => {
    const day = 86400_000;
    const published = Date.now() - 30 * day;
    return signManifest(
      {
        ...signed.manifest,
        publishedAt: new Date(published).toISOString(),
        expires: new Date(published + 14 * day).toISOString(),
      },
      readFileSync(KEY, "utf8"),
    );
  });
  // Served as hostile answers by the server (below); the files only need to exist.
  for (const channel of ["endless", "drip"]) variant(channel, () => undefined);
  server = await ChannelServer.start(channels, "127.0.0.1");
  server.hostile.set("/endless/latest.json", "endless");
  server.hostile.set("/drip/latest.json", "drip");
  server.hostile.set("/drip/1.1.0/usr.squashfs.gz", "drip");
}, 60_000);

afterAll(async () => {
  await server.close();
  rmSync(root, { recursive: true, force: true });
});

describe("updater on a disk image", () => {
  it("installs a good release into slot B: partitions read back equal, ESP files and the B entry with one try", async () => {
    const m = new TestMachine();
    const usrA = await m.hash("USR-A", 6 * MiB);
    const t0 = performance.now();
    await m.updater("good").pass("test");
    const seconds = (performance.now() - t0) / 1000;

    expect(m.last).toMatchObject({ state: "waiting", version: "1.0.0", slot: "A" });
    expect(m.last.detail).toMatch(/1\.1\.0 is written to slot B; strategy off/);
    expect(await m.hash("USR-B", good.files["usr.squashfs"]?.length as number)).toBe(
      manifest.files["usr.squashfs"].sha256,
    );
    expect(await m.hash("USR-B-VERITY", manifest.files["usr.verity"].size)).toBe(
      manifest.files["usr.verity"].sha256,
    );
    expect(await m.hash("USR-A", 6 * MiB)).toBe(usrA);
    expect(m.entries()).toEqual(["flotilla-a.conf", "flotilla-b+1.conf"]);
    const entry = readFileSync(join(m.esp, "loader/entries/flotilla-b+1.conf"), "utf8");
    expect(entry).toBe(newEntry("B", manifest, 1).text);
    expect(entry).toContain(`options ${CMDLINE_B}\n`);
    expect(entry).toContain("linux /flotilla/b/vmlinuz\n");
    expect(readFileSync(join(m.esp, "flotilla/b/vmlinuz")).equals(good.files.vmlinuz as Buffer)).toBe(true);
    expect(readFileSync(join(m.esp, "flotilla/b/initrd")).equals(good.files.initrd as Buffer)).toBe(true);
    expect((await readState(m.state)).pending).toMatchObject({
      version: "1.1.0",
      slot: "B",
      group: "default",
    });
    // Downloads are gone once the slot is complete; nothing half-written is left on the ESP.
    expect(readdirSync(m.state)).toEqual(["state.json"]);
    expect(readdirSync(join(m.esp, "flotilla/b")).sort()).toEqual(["initrd", "vmlinuz"]);

    const mib = RELEASE_FILES.reduce((n, f) => n + manifest.files[f].size, 0) / MiB;
    process.stderr.write(
      `update-apply: ${mib.toFixed(1)} MiB payload downloaded + verified + written + read back in ${seconds.toFixed(2)} s (${(mib / seconds).toFixed(0)} MiB/s)\n`,
    );
  });

  it("an ESP without the booted slot's entry (not mounted) is an error that says so, and nothing is written", async () => {
    const m = new TestMachine();
    const usrB = await m.hash("USR-B", 6 * MiB);
    rmSync(join(m.esp, "loader"), { recursive: true });
    const before = server.requests.length;
    await m.updater("good").pass("test");
    expect(m.last).toMatchObject({ state: "error", version: "1.0.0", slot: "A" });
    expect(m.last.detail).toBe(
      `no loader entry for the booted slot A in ${m.esp}/loader/entries: is the ESP mounted at ${m.esp}?`,
    );
    expect(await m.hash("USR-B", 6 * MiB)).toBe(usrB);
    expect(server.requests.slice(before)).toEqual([]);
  });

  it("resumes an interrupted download with a Range request", async () => {
    const m = new TestMachine();
    server.cutOnce.set("/resume/1.1.0/usr.squashfs.gz", 2 * MiB);
    await m.updater("resume").pass("test");
    const seen = server.requests.filter((r) => r.path === "/resume/1.1.0/usr.squashfs.gz");
    expect(seen[0]).toEqual({ path: "/resume/1.1.0/usr.squashfs.gz", status: 200 });
    expect(seen[1]?.status).toBe(206);
    expect(Number(/^bytes=(\d+)-$/.exec(seen[1]?.range ?? "")?.[1])).toBeGreaterThan(0);
    expect(seen).toHaveLength(2);
    expect(await m.hash("USR-B", manifest.files["usr.squashfs"].size)).toBe(
      manifest.files["usr.squashfs"].sha256,
    );
    expect(m.entries()).toEqual(["flotilla-a.conf", "flotilla-b+1.conf"]);
  });

  const refusals: [string, RegExp][] = [
    ["flipped", /file usr\.squashfs\.gz: sha256 mismatch/],
    ["truncated", /file usr\.squashfs\.gz: \d+ bytes, the manifest says \d+ \(truncated\)/],
    ["unknown-key", /manifest signature: no trusted key \(signed by [0-9a-f]{8}…; trusted: 00dd9a95…\)/],
    ["wrong-hash", /file usr\.squashfs: sha256 mismatch/],
    ["big", /usr\.squashfs is 9437184 bytes, larger than partition USR-B \(8388608 bytes\)/],
  ];
  it.each(refusals)(
    "refuses the %s release: slot B unchanged, no entry, nothing pending",
    async (channel, error) => {
      const m = new TestMachine();
      const before = await m.hash("USR-B", 8 * MiB);
      await m.updater(channel).pass("test");
      const states = m.statuses.map((s) => s.state);
      expect(states).not.toContain("rebooting");
      const problem = m.statuses.find((s) => error.test(s.detail ?? ""));
      expect(problem, JSON.stringify(m.statuses.map((s) => s.detail))).toBeDefined();
      expect(await m.hash("USR-B", 8 * MiB)).toBe(before);
      expect(m.entries()).toEqual(["flotilla-a.conf"]);
      expect(existsSync(join(m.esp, "flotilla/b/vmlinuz"))).toBe(false);
      expect((await readState(m.state)).pending).toBeUndefined();
    },
  );

  it.each([
    [
      "wrong-channel",
      /manifest channel: signed for channel "beta", but fetched from channel "wrong-channel"/,
    ],
    [
      "expired",
      /manifest expires: 1\.1\.0 on channel "expired" expired at .* \(now .*, 300 s of clock skew allowed\)/,
    ],
  ])(
    "refuses the %s manifest before any download: an error status, only latest.json fetched",
    async (channel, error) => {
      const m = new TestMachine();
      const before = server.requests.length;
      await m.updater(channel).pass("test");
      expect(m.last.state).toBe("error");
      expect(m.last.detail).toMatch(error);
      expect(server.requests.slice(before).map((r) => r.path)).toEqual([`/${channel}/latest.json`]);
      expect(existsSync(join(m.state, "1.1.0"))).toBe(false);
      expect(m.entries()).toEqual(["flotilla-a.conf"]);
    },
  );

  /** An updater whose error logs are kept, to show what the operator sees in the journal. */
  function logged(m: TestMachine, channel: string, extra: Partial<UpdaterDeps> = {}) {
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    return {
      updater: m.updater(channel, { log, ...extra }),
      errors: () => lines.filter((l) => l.level >= 50),
    };
  }

  it("an endless latest.json: stopped at the 1 MiB cap, reported as an error, and no more read", async () => {
    const m = new TestMachine();
    const { updater, errors } = logged(m, "endless");
    server.sent = 0;
    const t0 = performance.now();
    await updater.pass("test");
    const seconds = (performance.now() - t0) / 1000;
    expect(m.last.state).toBe("error");
    expect(m.last.detail).toMatch(
      /latest\.json: the answer is larger than 1048576 bytes \(size cap\); not a manifest/,
    );
    expect(errors().map((l) => l.msg)).toEqual([m.last.detail]);
    // The client hung up: the server could only fill the socket buffers past the cap.
    await new Promise((r) => setTimeout(r, 500));
    const sent = server.sent;
    await new Promise((r) => setTimeout(r, 500));
    expect(server.sent).toBe(sent);
    expect(sent).toBeLessThan(16 * MiB);
    process.stderr.write(
      `update-apply: endless latest.json refused after ${seconds.toFixed(2)} s, ${(sent / MiB).toFixed(1)} MiB sent\n`,
    );
  });

  it("a slow-drip latest.json: the check ends at its deadline with an error, nothing downloaded", async () => {
    const m = new TestMachine();
    const { updater, errors } = logged(m, "drip", { manifestDeadlineMs: 2000 });
    const before = server.requests.length;
    const t0 = performance.now();
    await updater.pass("test");
    const seconds = (performance.now() - t0) / 1000;
    expect(m.last.state).toBe("error");
    expect(m.last.detail).toMatch(/latest\.json: no complete answer within 2 s \(deadline\)/);
    expect(errors().map((l) => l.msg)).toEqual([m.last.detail]);
    expect(seconds).toBeGreaterThanOrEqual(2);
    expect(seconds).toBeLessThan(4);
    expect(server.requests.slice(before).map((r) => r.path)).toEqual(["/drip/latest.json"]);
  });

  it("a slow-drip payload file ends at its deadline; what arrived is kept for the next check", async () => {
    const m = new TestMachine();
    const signed = JSON.parse(readFileSync(join(channels, "drip/latest.json"), "utf8")) as SignedManifest;
    const dir = join(m.state, "1.1.0");
    await expect(
      downloadRelease(`${server.url("drip")}1.1.0/`, signed.manifest, dir, {
        log: createLogger("silent"),
        deadlineMs: 1500,
      }),
    ).rejects.toThrow(
      /^usr\.squashfs: GET .*usr\.squashfs\.gz: not complete within 2 s \(deadline for \d+ bytes\); what arrived is kept/,
    );
    expect(readdirSync(dir)).toEqual(["usr.squashfs.gz.part"]);
  });

  it("etcd-lock: takes the lock, drains, reboots; the new boot holds the lease until blessed, then releases it", async () => {
    const m = new TestMachine();
    m.group = { strategy: "etcd-lock", maxHolders: 1, paused: false };
    await m.updater("good").pass("test");
    expect(m.calls).toEqual([`acquire default ${"e".repeat(32)}`, "drain", "reboot"]);
    expect((await readState(m.state)).pending).toMatchObject({
      version: "1.1.0",
      slot: "B",
      leaseId: "7587",
    });
    const states = m.statuses.map((s) => s.state).filter((s, i, all) => s !== all[i - 1]);
    expect(states).toEqual(["downloading", "writing", "locking", "draining", "rebooting"]);

    // sd-boot tries the new entry; the health gate has not blessed it yet.
    m.boot("B", "1.1.0");
    rmSync(join(m.esp, "loader/entries/flotilla-b+1.conf"));
    writeFileSync(join(m.esp, "loader/entries/flotilla-b+0-1.conf"), "");
    m.calls.length = 0;
    await m.updater("good").pass("test");
    expect(m.calls).toEqual(["keepAlive 7587"]);
    expect(m.last).toMatchObject({ state: "gating", version: "1.1.0", slot: "B" });

    // systemd-bless-boot renamed the entry: the update is complete.
    rmSync(join(m.esp, "loader/entries/flotilla-b+0-1.conf"));
    writeFileSync(join(m.esp, "loader/entries/flotilla-b.conf"), "");
    m.calls.length = 0;
    await m.updater("good").pass("test");
    expect(m.calls).toEqual([`release default ${"e".repeat(32)}`]);
    expect(m.last).toMatchObject({ state: "blessed", version: "1.1.0", slot: "B" });
    expect((await readState(m.state)).pending).toBeUndefined();
    // And stays so: the channel's newest is what runs.
    await m.updater("good").pass("test");
    expect(m.last).toMatchObject({ state: "blessed", version: "1.1.0" });
  });

  it("reboot strategy with a window: waits for its random moment inside the window, then reboots without the lock", async () => {
    const m = new TestMachine();
    // A window two hours from now (after the release was published), every day, in UTC.
    const t0 = Math.ceil(Date.now() / 60_000) * 60_000;
    const opens = new Date(t0 + 2 * 3600_000);
    m.group = {
      strategy: "reboot",
      maxHolders: 1,
      paused: false,
      window: {
        days: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        start: opens.toISOString().slice(11, 16),
        lengthMinutes: 60,
        timeZone: "UTC",
      },
    };
    let now = new Date(t0);
    const updater = m.updater("good", { now: () => now, random: () => 0.5 });
    await updater.pass("test");
    // Half-way into [opens, opens + 60 min − the 5 min margin).
    const planned = new Date(opens.getTime() + 27.5 * 60_000);
    expect(m.last).toMatchObject({
      state: "waiting",
      detail: expect.stringContaining(planned.toISOString()),
    });
    expect(m.calls).toEqual([]);
    now = new Date(planned.getTime() + 1000);
    await updater.pass("test");
    expect(m.calls).toEqual(["drain", "reboot"]);
    expect((await readState(m.state)).pending?.leaseId).toBeUndefined();
  });

  it("a slot that failed its gate: the fallback boot marks the version bad with the gate's reason, and never retries it", async () => {
    const m = new TestMachine();
    m.group = { strategy: "etcd-lock", maxHolders: 1, paused: false };
    await m.updater("good").pass("test");
    // It booted B once (tries spent), the gate failed and said why, sd-boot went back to A.
    await writeGateFailure(m.state, {
      version: "1.1.0",
      reason: "health.d/50-app: exited 1: app probe refused",
      at: new Date().toISOString(),
    });
    rmSync(join(m.esp, "loader/entries/flotilla-b+1.conf"));
    writeFileSync(join(m.esp, "loader/entries/flotilla-b+0-1.conf"), "");
    m.calls.length = 0;
    const before = server.requests.length;
    await m.updater("good").pass("test");
    expect(m.bad).toEqual([
      expect.objectContaining({
        version: "1.1.0",
        machineId: "e".repeat(32),
        reason: "health gate failed: health.d/50-app: exited 1: app probe refused",
      }),
    ]);
    expect(m.calls).toEqual([`release default ${"e".repeat(32)}`]);
    expect(m.last).toMatchObject({
      state: "rolled-back",
      version: "1.0.0",
      slot: "A",
      lastRollback: { version: "1.1.0", reason: expect.stringMatching(/app probe refused/) },
    });
    expect(m.last.detail).toMatch(/1\.1\.0 is marked bad/);
    // Only latest.json was fetched: no payload download.
    expect(server.requests.slice(before).map((r) => r.path)).toEqual(["/good/latest.json"]);
    expect(existsSync(join(m.state, "gate-failure.json"))).toBe(false);
  });
});
