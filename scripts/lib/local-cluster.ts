// The local cluster of scripts/up, as one function so that integration tests start exactly what a
// new user gets: etcd and N machines booted from the OS image's rootfs, mutual TLS end to end (one
// cluster PKI in <stateDir>/tls, and <stateDir>/fleetctl.env with fleetctl's settings: endpoint,
// CA and the admin client certificate), plus an OCI registry on the cluster bridge holding the demo
// web image (busybox httpd, built on the host from Debian's busybox-static: no network needed).
//
// The machines reach the registry by name, `registry.flotilla.test:5000` (an /etc/hosts entry
// written into each machine), so the example units in units/examples name an image that does not
// depend on the bridge address this run happened to get. They resolve through their agent's DNS
// first (127.0.0.1), so `dig web.service.flotilla` on a machine answers from service discovery.

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildTestImage } from "../../test/fixtures/images/build.js";
import { Cluster } from "../../test/harness/cluster.js";
import { harnessPki } from "../../test/harness/pki.js";
import { pushImage, type Registry, startRegistry } from "../../test/harness/registry.js";

/** The registry as the machines name it; units/examples/web@.service pulls from it. */
export const DEMO_REGISTRY = "registry.flotilla.test:5000";
export const DEMO_IMAGE = `${DEMO_REGISTRY}/flotilla/web:latest`;

const REGIONS = ["east", "west"];

export interface LocalCluster {
  cluster: Cluster;
  registry: Registry;
  /** FLEETCTL_* settings for the cluster, also written to `envFile` (`source` it). */
  env: Record<string, string>;
  envFile: string;
  /** Stops the machines, etcd and the registry. Idempotent. */
  teardown(): Promise<void>;
}

export async function startLocalCluster(opts: { machines: number; stateDir: string }): Promise<LocalCluster> {
  // Built first: a failure here (busybox-static missing and not installable) costs no boot.
  const image = await buildTestImage();
  const tlsDir = join(opts.stateDir, "tls");
  // A new CA per cluster: certificates of a cluster that is gone must not open this one.
  rmSync(tlsDir, { recursive: true, force: true });
  mkdirSync(opts.stateDir, { recursive: true });
  const pki = harnessPki(tlsDir);
  const cluster = await Cluster.start({
    machines: opts.machines,
    metadata: Array.from({ length: opts.machines }, (_, i) => ({
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
          { input: `${cluster.bridge.ip} ${DEMO_REGISTRY.split(":")[0]}\n` },
        );
        if (r.code !== 0) throw new Error(`${m.name}: cannot name the demo registry: ${r.stderr}`);
      }),
    );
  } catch (err) {
    await registry?.stop();
    await cluster.teardown();
    throw err;
  }
  const env = {
    FLEETCTL_ENDPOINT: cluster.machines[0]?.apiURL ?? "",
    FLEETCTL_CA_FILE: pki.admin.ca,
    FLEETCTL_CERT_FILE: pki.admin.cert,
    FLEETCTL_KEY_FILE: pki.admin.key,
  };
  const envFile = join(opts.stateDir, "fleetctl.env");
  writeFileSync(
    envFile,
    `# fleetctl settings for the local cluster (scripts/up); the reader certificate is beside admin's.\n${Object.entries(
      env,
    )
      .map(([k, v]) => `export ${k}=${shellQuote(v)}\n`)
      .join("")}`,
  );
  const reg = registry;
  let stopping: Promise<void> | undefined;
  return {
    cluster,
    registry: reg,
    env,
    envFile,
    teardown: () => {
      stopping ??= (async () => {
        await reg.stop();
        await cluster.teardown();
      })();
      return stopping;
    },
  };
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}
