// The cluster PKI: one CA, machine certificates (server and client: agents serve the API, call each
// other and etcd) and client certificates carrying a role. Issued with the `openssl` CLI: Node's
// crypto makes keys and verifies certificates but cannot issue them (docs/security.md says why
// openssl rather than an npm X.509 library). Keys are ECDSA P-256, written 0600.

import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";

/** The roles a client certificate can carry, in its subject OU; `machine` is for agents. */
export const CLIENT_ROLES = ["admin", "reader"] as const;
export type ClientRole = (typeof CLIENT_ROLES)[number];
export const MACHINE_ROLE = "machine";
/** Subject O of every certificate this PKI issues. */
export const PKI_ORGANIZATION = "flotilla";

export interface CertPair {
  cert: string;
  key: string;
}

export interface CA extends CertPair {
  dir: string;
}

export const DEFAULT_CA_DAYS = 3650;
export const DEFAULT_MACHINE_DAYS = 825;
export const DEFAULT_CLIENT_DAYS = 365;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function checkName(what: string, name: string): void {
  if (!NAME_RE.test(name)) {
    throw new Error(
      `${what} ${JSON.stringify(name)}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
}

/** Whole days; negative is allowed (an already expired certificate, for tests of refusal). */
function checkDays(days: number): void {
  if (!Number.isInteger(days) || days === 0 || Math.abs(days) > 36500) {
    throw new Error(`validity ${days}: expected a non-zero whole number of days up to 36500`);
  }
}

function openssl(args: string[]): void {
  try {
    execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`openssl ${args[0]} failed: ${stderr || (err as Error).message}`);
  }
}

function newKey(file: string): void {
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file]);
  chmodSync(file, 0o600);
}

/** Creates `dir`/ca.pem and ca-key.pem; refuses to overwrite an existing CA. */
export function createCA(dir: string, opts: { name?: string; days?: number } = {}): CA {
  const days = opts.days ?? DEFAULT_CA_DAYS;
  checkDays(days);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = loadCA(dir, false);
  if (existsSync(ca.cert) || existsSync(ca.key)) throw new Error(`${dir} already holds a CA (ca.pem)`);
  newKey(ca.key);
  openssl([
    "req",
    "-x509",
    "-new",
    "-key",
    ca.key,
    "-subj",
    `/O=${PKI_ORGANIZATION}/CN=${opts.name ?? "Flotilla cluster CA"}`,
    "-days",
    String(days),
    "-addext",
    "basicConstraints=critical,CA:TRUE,pathlen:0",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    ca.cert,
  ]);
  return ca;
}

/** The CA in `dir` (ca.pem, ca-key.pem); throws when it is missing unless `mustExist` is false. */
export function loadCA(dir: string, mustExist = true): CA {
  const ca = { dir, cert: join(dir, "ca.pem"), key: join(dir, "ca-key.pem") };
  if (mustExist && !(existsSync(ca.cert) && existsSync(ca.key))) {
    throw new Error(`no CA in ${dir} (ca.pem and ca-key.pem): create one with \`scripts/pki init\``);
  }
  return ca;
}

/**
 * A machine's certificate, `<out>/<name>.pem` + `<name>-key.pem`: subject OU=machine, CN=name,
 * SANs its addresses and host names, usable as TLS server and client.
 */
export function issueMachine(
  ca: CA,
  opts: { name: string; ips?: string[]; dnsNames?: string[]; days?: number; out?: string },
): CertPair {
  checkName("machine name", opts.name);
  const ips = opts.ips ?? [];
  const bad = ips.find((ip) => isIP(ip) === 0);
  if (bad !== undefined) throw new Error(`machine ${opts.name}: ${JSON.stringify(bad)} is not an IP address`);
  const dnsNames = opts.dnsNames ?? [opts.name];
  for (const d of dnsNames) checkName("host name", d);
  const san = [...ips.map((ip) => `IP:${ip}`), ...dnsNames.map((d) => `DNS:${d}`)].join(",");
  return issue(ca, opts.out ?? ca.dir, opts.name, MACHINE_ROLE, opts.days ?? DEFAULT_MACHINE_DAYS, [
    "extendedKeyUsage=serverAuth,clientAuth",
    `subjectAltName=${san}`,
  ]);
}

/** A client's certificate with `role` in its subject OU, `<out>/<name>.pem` + `<name>-key.pem`. */
export function issueClient(
  ca: CA,
  opts: { name: string; role: ClientRole; days?: number; out?: string },
): CertPair {
  checkName("client name", opts.name);
  if (!(CLIENT_ROLES as readonly string[]).includes(opts.role)) {
    throw new Error(`role ${JSON.stringify(opts.role)}: expected one of ${CLIENT_ROLES.join(", ")}`);
  }
  return issue(ca, opts.out ?? ca.dir, opts.name, opts.role, opts.days ?? DEFAULT_CLIENT_DAYS, [
    "extendedKeyUsage=clientAuth",
  ]);
}

function issue(ca: CA, out: string, name: string, role: string, days: number, ext: string[]): CertPair {
  checkDays(days);
  mkdirSync(out, { recursive: true, mode: 0o700 });
  const pair = { cert: join(out, `${name}.pem`), key: join(out, `${name}-key.pem`) };
  const tmp = mkdtempSync(join(out, ".issue-"));
  try {
    const csr = join(tmp, "req.csr");
    const extFile = join(tmp, "ext.cnf");
    writeFileSync(
      extFile,
      ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", ...ext, ""].join("\n"),
    );
    newKey(pair.key);
    openssl([
      "req",
      "-new",
      "-key",
      pair.key,
      "-subj",
      `/O=${PKI_ORGANIZATION}/OU=${role}/CN=${name}`,
      "-out",
      csr,
    ]);
    openssl([
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca.cert,
      "-CAkey",
      ca.key,
      // A random serial per certificate, so no serial file has to be kept beside the CA.
      "-set_serial",
      `0x${randomSerial()}`,
      "-days",
      String(days),
      "-extfile",
      extFile,
      "-out",
      pair.cert,
    ]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return pair;
}

function randomSerial(): string {
  // 127 bits: positive, and as unguessable as CA/Browser rules ask (≥ 64 bits).
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] as number) & 0x7f;
  return Buffer.from(bytes).toString("hex");
}
