// Rolling-update bench on 3 nspawn machines with A/B slots (the boot loader is the harness's
// stand-in, so a reboot takes seconds, not a VM's minutes): the time from a release being
// published to the whole cluster running it, blessed, and the longest time any machine was out of
// service (from draining its units to blessing the new slot). Prints figures only.
//   npx tsx bench/update-cluster.ts

import { readManifest } from "../scripts/lib/image-build.js";
import { waitFor } from "../test/integration/support.js";
import { bump, UpdateCluster } from "../test/integration/update-cluster.js";

const version = bump(readManifest().version, 1);
const uc = await UpdateCluster.start({ machines: 3, versions: [version], leaseSeconds: 60 });
try {
  const recorder = await uc.recordChanges();
  const published = Date.now();
  await uc.release(version);
  await waitFor("all three blessed", () => uc.allOn(version), 15 * 60_000, 500);
  const done = Date.now();
  const changes = await recorder.stop();
  const spans = [...uc.downSpans(changes, version)].map(([id, s]) => ({
    id: id.slice(0, 8),
    seconds: ((s.to?.at ?? done) - s.from.at) / 1000,
  }));
  const longest = Math.max(...spans.map((s) => s.seconds));
  console.log("update cluster (3 nspawn machines, etcd-lock max 1, check every 5 s, soak 3 s)");
  console.log(
    `  release published → all 3 blessed on ${version}: ${((done - published) / 1000).toFixed(1)} s`,
  );
  for (const s of spans)
    console.log(`  ${s.id} out of service (draining → blessed): ${s.seconds.toFixed(1)} s`);
  console.log(`  longest time any machine was out of service: ${longest.toFixed(1)} s`);
  console.log(`  most reboot-lock holders at once: ${uc.maxHolders(changes, "default")}`);
} finally {
  await uc.close();
}
