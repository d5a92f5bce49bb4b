// Update bench: the real payload (dist/image/payload) released with scripts/release, served over
// HTTP on loopback, downloaded + verified by the agent's download.ts, and written + read back into
// the USR-B / USR-B-VERITY partitions of a sparse GPT disk file by disk.ts. Prints figures only.
// Usage: npx tsx bench/update.ts   (builds the image first if needed)

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../agent/log.js";
import { Disk } from "../agent/update/disk.js";
import { downloadRelease, unpacked } from "../agent/update/download.js";
import { ensureImage, IMAGE_DIR, REPO } from "../scripts/lib/image-build.js";
import { makeRelease } from "../scripts/lib/release.js";
import { ChannelServer } from "../test/harness/channel-server.js";
import { makeSlotDisk } from "../test/harness/slot-disk.js";

const MiB = 1024 * 1024;
const log = createLogger("silent");
const seconds = (t0: number) => (performance.now() - t0) / 1000;

ensureImage();
const work = mkdtempSync(join(tmpdir(), "flotilla-bench-update-"));
try {
  let t0 = performance.now();
  const { signed } = await makeRelease({
    payload: join(IMAGE_DIR, "payload"),
    key: join(REPO, "test/fixtures/update-keys/00dd9a95a776d12b.pem"),
    channel: "bench",
    out: join(work, "channels"),
    log: () => {},
  });
  const releaseSeconds = seconds(t0);
  const m = signed.manifest;
  const { version } = m;
  const compressed = Object.values(m.files).reduce((n, f) => n + f.compressedSize, 0);
  const content = Object.values(m.files).reduce((n, f) => n + f.size, 0);

  // The image's own layout for the slot partitions, on a sparse file: nothing is allocated up front.
  const disk = join(work, "disk.raw");
  makeSlotDisk(disk, { usrMiB: 1024, verityMiB: 32 });

  const server = await ChannelServer.start(join(work, "channels"), "127.0.0.1");
  t0 = performance.now();
  const files = await downloadRelease(`${server.url("bench")}${version}/`, m, join(work, "download"), {
    log,
  });
  const downloadSeconds = seconds(t0);
  await server.close();

  t0 = performance.now();
  const d = await Disk.open(disk);
  await d.writePartition("USR-B", unpacked(files["usr.squashfs"]), {
    name: "usr.squashfs",
    ...m.files["usr.squashfs"],
  });
  await d.writePartition("USR-B-VERITY", unpacked(files["usr.verity"]), {
    name: "usr.verity",
    ...m.files["usr.verity"],
  });
  const writeSeconds = seconds(t0);

  const rate = (bytes: number, s: number) => `${(bytes / MiB / s).toFixed(0)} MiB/s`;
  console.log(
    `payload ${version}: ${(content / MiB).toFixed(1)} MiB, ${(compressed / MiB).toFixed(1)} MiB gzip`,
  );
  console.log(`release make (gzip + sign):          ${releaseSeconds.toFixed(1)} s`);
  console.log(
    `download + verify (HTTP, loopback):  ${downloadSeconds.toFixed(1)} s (${rate(compressed, downloadSeconds)})`,
  );
  const slotBytes = m.files["usr.squashfs"].size + m.files["usr.verity"].size;
  console.log(
    `write + read back USR-B + verity:    ${writeSeconds.toFixed(1)} s (${rate(slotBytes, writeSeconds)})`,
  );
  console.log(`download + verify + write:           ${(downloadSeconds + writeSeconds).toFixed(1)} s`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
