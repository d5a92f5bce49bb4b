// scripts/pki: creates the cluster CA and issues machine and client certificates (scripts/lib/pki.ts).
// docs/security.md shows the whole procedure, rotation included.

import { parseArgs } from "node:util";
import { CLIENT_ROLES, type ClientRole, createCA, issueClient, issueMachine, loadCA } from "./pki.js";

const USAGE = `usage:
  scripts/pki init    --dir DIR [--name "CA name"] [--days N]
  scripts/pki machine --dir DIR --name HOST --ip IP[,IP…] [--dns NAME[,NAME…]] [--days N] [--out DIR]
  scripts/pki client  --dir DIR --name NAME --role ${CLIENT_ROLES.join("|")} [--days N] [--out DIR]

DIR holds the CA (ca.pem, ca-key.pem). Certificates go to --out (default DIR) as NAME.pem and
NAME-key.pem. --days defaults: CA 3650, machine 825, client 365 (negative: already expired).`;

function main(argv: string[]): void {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      dir: { type: "string" },
      name: { type: "string" },
      days: { type: "string" },
      ip: { type: "string" },
      dns: { type: "string" },
      role: { type: "string" },
      out: { type: "string" },
    },
    allowNegative: false,
    strict: true,
  });
  if (!values.dir) throw new Error("--dir is required");
  const days = values.days === undefined ? undefined : Number(values.days);
  const list = (s: string | undefined) => (s ?? "").split(",").filter(Boolean);
  const need = (flag: "name" | "ip" | "role") => {
    const v = values[flag];
    if (!v) throw new Error(`--${flag} is required for ${command}`);
    return v;
  };
  switch (command) {
    case "init": {
      const ca = createCA(values.dir, { ...(values.name ? { name: values.name } : {}), days });
      process.stdout.write(`CA: ${ca.cert}\nCA key (keep it offline): ${ca.key}\n`);
      return;
    }
    case "machine": {
      const pair = issueMachine(loadCA(values.dir), {
        name: need("name"),
        ips: list(need("ip")),
        ...(values.dns ? { dnsNames: list(values.dns) } : {}),
        days,
        ...(values.out ? { out: values.out } : {}),
      });
      process.stdout.write(`certificate: ${pair.cert}\nkey: ${pair.key}\n`);
      return;
    }
    case "client": {
      const pair = issueClient(loadCA(values.dir), {
        name: need("name"),
        role: need("role") as ClientRole,
        days,
        ...(values.out ? { out: values.out } : {}),
      });
      process.stdout.write(`certificate: ${pair.cert}\nkey: ${pair.key}\n`);
      return;
    }
    default:
      throw new Error(command ? `unknown command ${JSON.stringify(command)}` : "no command given");
  }
}

try {
  main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`pki: ${(err as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
