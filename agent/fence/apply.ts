// Installs the container fence (rules.ts) with `nft`, from the agent's own settings, at every
// agent start: a changed API port or etcd endpoint list is fenced as soon as the agent runs with it.

import { spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { Logger } from "../log.js";
import { FENCE_TABLE, type FenceSpec, fenceRuleset, fenceTarget } from "./rules.js";

/** Every address of each etcd host (a name may stand for several machines). */
async function resolve(target: ReturnType<typeof fenceTarget>, log: Logger): Promise<FenceSpec> {
  const etcd: FenceSpec["etcd"] = [];
  for (const { host, port } of target.etcd) {
    if (isIP(host)) {
      etcd.push({ address: host, port });
      continue;
    }
    try {
      for (const { address } of await lookup(host, { all: true })) etcd.push({ address, port });
    } catch (err) {
      log.error({ host, err: String(err) }, "etcd host not resolved: containers are not fenced off it");
    }
  }
  return { apiPorts: target.apiPorts, etcd };
}

function nft(script: string): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn("nft", ["-f", "-"], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    p.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    p.on("error", rej);
    p.on("close", (code) => (code === 0 ? res() : rej(new Error(`nft -f: exit ${code}: ${stderr.trim()}`))));
    p.stdin.end(script);
  });
}

/**
 * Fences containers off this machine's API and etcd. A failure is logged as an error naming what
 * is not fenced, and the agent runs on: a machine without the fence is less safe, not broken.
 */
export async function applyContainerFence(
  cfg: { apiListen: string; etcdEndpoints: string[] },
  log: Logger,
): Promise<void> {
  try {
    const spec = await resolve(fenceTarget(cfg.apiListen, cfg.etcdEndpoints), log);
    await nft(fenceRuleset(spec));
    log.info(
      { table: `inet ${FENCE_TABLE}`, apiPorts: spec.apiPorts, etcd: spec.etcd },
      "containers fenced off the API and etcd",
    );
  } catch (err) {
    log.error(
      { err: String(err) },
      "container fence not installed: containers on this machine's bridges can reach its API and etcd",
    );
  }
}
