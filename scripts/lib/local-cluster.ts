// The local cluster of scripts/up, as one function so that the README walk-through test starts
// exactly what a new user gets: etcd and N machines booted from the OS image's rootfs, plus an OCI
// registry on the cluster bridge holding the demo web image (busybox httpd, built on the host
// from Debian's busybox-static: no network needed).
//
// The machines reach the registry by name, `registry.flotilla.test:5000` (an /etc/hosts entry
// written into each machine), so the example units in units/examples name an image that does not
// depend on the bridge address this run happened to get. They resolve through their agent's DNS
// first (127.0.0.1), so `dig web.service.flotilla` on a machine answers from service discovery.

import { buildTestImage } from "../../test/fixtures/images/build.js";
import { Cluster } from "../../test/harness/index.js";
import { pushImage, type Registry, startRegistry } from "../../test/harness/registry.js";

/** The registry as the machines name it; units/examples/web@.service pulls from it. */
export const DEMO_REGISTRY = "registry.flotilla.test:5000";
export const DEMO_IMAGE = `${DEMO_REGISTRY}/flotilla/web:latest`;

const REGIONS = ["east", "west"];

export interface LocalCluster {
  cluster: Cluster;
  registry: Registry;
  /** Stops the machines, etcd and the registry. Idempotent. */
  teardown(): Promise<void>;
}

export async function startLocalCluster(machines: number): Promise<LocalCluster> {
  // Built first: a failure here (busybox-static missing and not installable) costs no boot.
  const image = await buildTestImage();
  const cluster = await Cluster.start({
    machines,
    metadata: Array.from({ length: machines }, (_, i) => ({
      name: `m${i + 1}`,
      region: REGIONS[i % REGIONS.length] as string,
    })),
    // The demo registry serves plain HTTP, as a registry on a private bridge usually does.
    agentEnv: { FLOTILLA_INSECURE_REGISTRIES: DEMO_REGISTRY },
  });
  let registry: Registry | undefined;
  try {
    registry = await startRegistry({ listenAddress: `${cluster.bridge.ip}:5000` });
    await pushImage(image.archive, registry.url, "flotilla/web:latest");
    const resolver = [
      "# The agent's service-discovery DNS (docs/discovery.md); this cluster has no other resolver.",
      "nameserver 127.0.0.1",
      "search service.flotilla",
      "",
    ].join("\n");
    await Promise.all(
      cluster.machines.map(async (m) => {
        const r = await m.exec(
          ["sh", "-c", 'cat >> /etc/hosts && printf "%s" "$0" > /etc/resolv.conf', resolver],
          {
            input: `${cluster.bridge.ip} ${DEMO_REGISTRY.split(":")[0]}\n`,
          },
        );
        if (r.code !== 0) throw new Error(`${m.name}: cannot name the demo registry: ${r.stderr}`);
      }),
    );
  } catch (err) {
    await registry?.stop();
    await cluster.teardown();
    throw err;
  }
  const reg = registry;
  let stopping: Promise<void> | undefined;
  return {
    cluster,
    registry: reg,
    teardown: () => {
      stopping ??= (async () => {
        await reg.stop();
        await cluster.teardown();
      })();
      return stopping;
    },
  };
}
