// One cluster PKI per harness process (scripts/lib/pki.ts): a CA, and `admin` and `reader` client
// certificates, made on first use in a temporary directory that goes when the process exits.
// etcd and every machine get certificates from it, so tests and scripts/up talk mTLS throughout.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type CA, type CertPair, createCA, issueClient, issueMachine } from "../../scripts/lib/pki.js";

/** PEM contents, as node:tls/https and the etcd client take them. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export class HarnessPki {
  readonly admin: TlsFiles;
  readonly reader: TlsFiles;

  constructor(
    readonly dir: string,
    readonly ca: CA,
  ) {
    this.admin = this.files(issueClient(ca, { name: "admin", role: "admin", out: dir }));
    this.reader = this.files(issueClient(ca, { name: "reader", role: "reader", out: dir }));
  }

  /** A machine (or etcd) certificate for `name`, server and client, naming `ips`, written to `out`. */
  machine(name: string, ips: string[], out: string): TlsFiles {
    return this.files(issueMachine(this.ca, { name, ips, dnsNames: [name], out }));
  }

  /** PEM contents of `files` (default: admin), for https.request or createEtcdClient. */
  material(files: TlsFiles = this.admin): TlsMaterial {
    return { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key) };
  }

  /** fleetctl's flags for `files` (default: admin). */
  fleetctlFlags(files: TlsFiles = this.admin): string[] {
    return [`--ca-file=${files.ca}`, `--cert-file=${files.cert}`, `--key-file=${files.key}`];
  }

  private files(pair: CertPair): TlsFiles {
    return { ca: this.ca.cert, cert: pair.cert, key: pair.key };
  }
}

let pki: HarnessPki | undefined;

/**
 * This process's PKI, created on first call: in a temporary directory removed at exit, or in
 * `keepIn` (scripts/up, whose operator uses the certificates) when the first call names one.
 */
export function harnessPki(keepIn?: string): HarnessPki {
  if (pki === undefined) {
    let dir = keepIn;
    if (dir === undefined) {
      const tmp = mkdtempSync(path.join(tmpdir(), "flotilla-pki-"));
      process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
      dir = tmp;
    }
    pki = new HarnessPki(dir, createCA(path.join(dir, "ca"), { name: "Flotilla harness CA" }));
  } else if (keepIn !== undefined && keepIn !== pki.dir) {
    throw new Error(`this process's PKI is already in ${pki.dir}`);
  }
  return pki;
}
