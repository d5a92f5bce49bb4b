// Stage 2: turns the Debian rootfs into Flotilla: the agent bundle, a current Node runtime,
// OS units, the Ignition provisioner, key-only sshd, and /etc defaults kept under /usr so an
// update can ship new ones. Takes the kernel and initrd out of /boot for the ESP.

import { existsSync } from "node:fs";
import {
  appendFile,
  chmod,
  copyFile,
  mkdir,
  readdir,
  readFile,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { build } from "esbuild";
import type { StageCache, StageResult } from "../cache.js";
import type { Definition } from "../definition.js";
import { IMAGE_KEY_DIR, IMAGE_KEY_RECORD, type UpdateKeys } from "../update-keys.js";
import { BuildError, hashFile, hashTree, log, run, sha256, stageCode } from "../util.js";

export interface CustomizeInputs {
  repo: string;
  /** The agent bundle (dist/agent.js; its proto/ beside it comes along); a placeholder that only logs is used when it is missing. */
  agent: string;
  node: string;
  /** Copied over the tree after image/files. */
  extraFiles?: string;
  /** The update signing keys the image trusts (update-keys.ts). */
  updateKeys: UpdateKeys;
}

/** A stand-in for dist/agent.js while the agent does not build yet; it never registers. */
const PLACEHOLDER_AGENT = `process.stderr.write("flotilla-agent: placeholder bundle (dist/agent.js was missing at image build)\\n");
setInterval(() => {}, 1 << 30);
`;

export async function customizeStage(
  cache: StageCache,
  def: Definition,
  rootfs: StageResult,
  src: CustomizeInputs,
): Promise<StageResult & { kernelVersion: string; placeholderAgent: boolean }> {
  const { repo } = src;
  const placeholderAgent = !existsSync(src.agent);
  const unitsDir = join(repo, "units");
  const agentProto = join(dirname(src.agent), "proto");
  const inputs = {
    rootfs: rootfs.key,
    code: await stageCode("customize"),
    version: `${def.name} ${def.version}`,
    agent: placeholderAgent ? sha256(PLACEHOLDER_AGENT) : await hashFile(src.agent),
    // etcd3 loads its gRPC definitions from proto/ beside the bundle at run time.
    agentProto: existsSync(agentProto) ? await hashTree(agentProto) : "none",
    node: await hashFile(src.node),
    units: existsSync(unitsDir) ? await hashTree(unitsDir) : "none",
    files: await hashTree(join(repo, "image", "files")),
    ignition: await hashTree(join(repo, "image", "ignition")),
    ...(src.extraFiles ? { extraFiles: await hashTree(src.extraFiles) } : {}),
    updateKeys: src.updateKeys.hash,
  };
  if (placeholderAgent)
    log("customize", `warning: ${src.agent} is missing; the image gets a placeholder agent`);
  const result = await cache.stage("customize", inputs, async (dir) => {
    const tree = join(dir, "tree");
    await run("cp", ["-a", join(rootfs.dir, "tree"), tree]);
    await run("cp", ["-a", `${join(repo, "image", "files")}/.`, tree]);
    if (src.extraFiles) await run("cp", ["-a", `${src.extraFiles}/.`, tree]);
    await installUpdateKeys(tree, src.updateKeys);
    const lib = join(tree, "usr/lib/flotilla");
    // Paths as units/flotilla-agent.service expects them (the same in nspawn test machines).
    await mkdir(join(lib, "dist"), { recursive: true });
    await mkdir(join(tree, "etc/flotilla"), { recursive: true });
    if (placeholderAgent) await writeFile(join(lib, "dist/agent.js"), PLACEHOLDER_AGENT);
    else await copyFile(src.agent, join(lib, "dist/agent.js"));
    if (!placeholderAgent && existsSync(agentProto)) await run("cp", ["-a", agentProto, join(lib, "dist/")]);
    await writeFile(join(lib, "dist/package.json"), '{ "type": "module" }\n');
    await copyFile(src.node, join(lib, "node"));
    await chmod(join(lib, "node"), 0o755);
    await symlink("../lib/flotilla/node", join(tree, "usr/bin/node"));
    await build({
      entryPoints: [join(repo, "image/ignition/main.ts")],
      outfile: join(lib, "ignition.mjs"),
      bundle: true,
      platform: "node",
      target: "node22",
      format: "esm",
      logLevel: "warning",
    });

    const unitNames: string[] = [];
    if (existsSync(unitsDir)) {
      for (const name of (await readdir(unitsDir)).sort()) {
        await run("cp", ["-a", join(unitsDir, name), join(tree, "usr/lib/systemd/system/")]);
        if (/\.(service|socket|timer|target|path|mount)$/.test(name)) unitNames.push(name);
      }
    }
    await configureEtc(tree, def, unitNames);

    const kernelVersion = (await readdir(join(tree, "usr/lib/modules")))[0];
    if (!kernelVersion) throw new BuildError("the rootfs has no kernel modules");
    await run("mv", [join(tree, `boot/vmlinuz-${kernelVersion}`), join(dir, "vmlinuz")]);
    await run("mv", [join(tree, `boot/initrd.img-${kernelVersion}`), join(dir, "initrd")]);
    await run("sh", ["-c", `rm -rf "$1"/boot/* "$1"/vmlinuz* "$1"/initrd.img*`, "sh", tree]);
    await writeFile(join(dir, "kernel-version"), kernelVersion);

    await shipEtcDefaults(tree);
  });
  const kernelVersion = (await readFile(join(result.dir, "kernel-version"), "utf8")).trim();
  return { ...result, kernelVersion, placeholderAgent };
}

/** The chosen keys, and a record of every key the image trusts (the build also puts it in build.json). */
async function installUpdateKeys(tree: string, keys: UpdateKeys): Promise<void> {
  await mkdir(join(tree, IMAGE_KEY_DIR), { recursive: true });
  for (const k of keys.install) await writeFile(join(tree, IMAGE_KEY_DIR, k.name), k.text);
  await writeFile(
    join(tree, IMAGE_KEY_RECORD),
    `${JSON.stringify({ keyIds: keys.keyIds, testKeys: keys.testKeys }, null, 2)}\n`,
  );
}

async function configureEtc(tree: string, def: Definition, unitNames: string[]): Promise<void> {
  const etc = join(tree, "etc");
  // Each machine gets its own identity on first boot: empty machine-id, fresh SSH host keys.
  await writeFile(join(etc, "machine-id"), "");
  await rm(join(tree, "var/lib/dbus/machine-id"), { force: true });
  for (const f of await readdir(join(etc, "ssh")))
    if (f.startsWith("ssh_host_")) await rm(join(etc, "ssh", f), { force: true });
  // The hostname comes from provisioning (or DHCP), never from the build host.
  await rm(join(etc, "hostname"), { force: true });
  await writeFile(
    join(etc, "fstab"),
    [
      "# Flotilla: / is ROOT (root= on the kernel command line); /usr is the slot's verity device.",
      "# The ESP waits longer than the command line's device timeout (there for the initrd's /usr):",
      "# a slow udev must not leave it unmounted, which would stop blessing and updates.",
      `PARTLABEL=${def.partitions.esp.label} /efi vfat umask=0077,nofail,x-systemd.device-timeout=10min 0 2`,
      "",
    ].join("\n"),
  );
  await appendFile(join(tree, "usr/lib/os-release"), `IMAGE_ID=${def.name}\nIMAGE_VERSION=${def.version}\n`);
  await mkdir(join(tree, "efi"), { recursive: true });
  // Which units start by default is declared in image/files/.../50-flotilla.preset (Debian's
  // etcd.service off, etcd-member.service opt-in through provisioning).
  const preset = ["etcd.service", "systemd-networkd.service", ...unitNames];
  await run("systemctl", [`--root=${tree}`, "preset", ...preset]);
}

/**
 * /etc lives on ROOT and outlives /usr updates. A copy of the image's /etc goes to
 * /usr/share/flotilla/etc, and tmpfiles copies each file that /etc lacks at boot, so a new /usr
 * brings its new defaults without touching files the machine already has.
 */
async function shipEtcDefaults(tree: string): Promise<void> {
  const defaults = join(tree, "usr/share/flotilla/etc");
  await mkdir(join(tree, "usr/share/flotilla"), { recursive: true });
  await run("cp", ["-a", join(tree, "etc"), defaults]);
  const lines = ["# Generated at image build: copy each default that /etc lacks (see docs/image.md)."];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const p = join(dir, entry.name);
      const rel = relative(defaults, p);
      if (entry.isDirectory()) await walk(p);
      else if (!/\s/.test(rel) && rel !== "machine-id")
        lines.push(`C /etc/${rel} - - - - /usr/share/flotilla/etc/${rel}`);
    }
  };
  await walk(defaults);
  await writeFile(join(tree, "usr/lib/tmpfiles.d/flotilla-etc.conf"), `${lines.join("\n")}\n`);
}
