// The local cluster of scripts/up, TLS end to end: etcd and N nspawn machines from the harness,
// one cluster PKI in <stateDir>/tls, and <stateDir>/fleetctl.env with the fleetctl settings for it
// (endpoint, CA and the admin client certificate). Integration tests start the same cluster.

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Cluster } from "../../test/harness/cluster.js";
import { harnessPki } from "../../test/harness/pki.js";

export interface LocalCluster {
  cluster: Cluster;
  /** FLEETCTL_* settings for the cluster, also written to `envFile` (`source` it). */
  env: Record<string, string>;
  envFile: string;
}

const REGIONS = ["east", "west"];

export async function startLocalCluster(opts: { machines: number; stateDir: string }): Promise<LocalCluster> {
  const tlsDir = join(opts.stateDir, "tls");
  // A new CA per cluster: certificates of a cluster that is gone must not open this one.
  rmSync(tlsDir, { recursive: true, force: true });
  mkdirSync(opts.stateDir, { recursive: true });
  const pki = harnessPki(tlsDir);
  const cluster = await Cluster.start({
    machines: opts.machines,
    metadata: Array.from({ length: opts.machines }, (_, i) => ({
      name: `m${i + 1}`,
      region: REGIONS[i % 2] as string,
    })),
  });
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
  return { cluster, env, envFile };
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}
