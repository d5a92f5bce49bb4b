// scripts/vm: boot a Flotilla image in QEMU (TCG) with a provisioning config.
//   scripts/vm [--disk dist/image/disk.raw|disk.qcow2] [--state .cache/vm] [--fresh]
//              [--ignition CONFIG.ign | --ignition-oem CONFIG.ign] [--ssh-port N] [--api-port N]
// The machine's disk is a copy in the state dir, kept across runs (--fresh starts over). The
// serial console is shown here; Ctrl-C powers the machine off cleanly through QMP.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, watchFile } from "node:fs";
import { open } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Vm, writeOemIgnition } from "./image-vm.js";

const { values } = parseArgs({
  options: {
    disk: { type: "string", default: "dist/image/disk.raw" },
    state: { type: "string", default: ".cache/vm" },
    fresh: { type: "boolean", default: false },
    ignition: { type: "string" },
    "ignition-oem": { type: "string" },
    "ssh-port": { type: "string", default: "2222" },
    "api-port": { type: "string", default: "7480" },
    memory: { type: "string", default: "1536" },
  },
});

async function main(): Promise<void> {
  const state = resolve(values.state);
  if (values.fresh) rmSync(state, { recursive: true, force: true });
  mkdirSync(state, { recursive: true });
  const ext = values.disk.endsWith(".qcow2") ? "qcow2" : "raw";
  const disk = join(state, `disk.${ext}`);
  if (!existsSync(disk)) {
    if (!existsSync(values.disk))
      throw new Error(`${values.disk} does not exist; run scripts/build-image first`);
    execFileSync("cp", ["--sparse=always", values.disk, disk]);
  }
  if (values["ignition-oem"]) {
    if (ext !== "raw") throw new Error("--ignition-oem needs a raw disk (--disk ...disk.raw)");
    writeOemIgnition(disk, values["ignition-oem"]);
  }
  const vm = new Vm({
    disk,
    stateDir: state,
    ignition: values.ignition,
    sshPort: Number(values["ssh-port"]),
    apiPort: Number(values["api-port"]),
    memoryMiB: Number(values.memory),
  });
  rmSync(vm.serialLog, { force: true });
  await vm.start();
  process.stderr.write(
    `vm: pid ${vm.pid}, disk ${disk}, serial ${vm.serialLog}\n` +
      `vm: ssh -p ${vm.sshPort} core@127.0.0.1 · agent API http://127.0.0.1:${vm.apiPort} · Ctrl-C powers off\n`,
  );
  // Follow the serial log on stdout.
  let pos = 0;
  const follow = async () => {
    if (!existsSync(vm.serialLog)) return;
    const fh = await open(vm.serialLog, "r");
    const { bytesRead, buffer } = await fh.read({ buffer: Buffer.alloc(1 << 20), position: pos });
    await fh.close();
    pos += bytesRead;
    process.stdout.write(buffer.subarray(0, bytesRead));
  };
  watchFile(vm.serialLog, { interval: 300 }, () => void follow());
  let stopping = false;
  process.on("SIGINT", () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write("\nvm: powering off (QMP system_powerdown)\n");
    void vm.powerOff().then(({ clean, seconds }) => {
      process.stderr.write(
        `vm: ${clean ? "powered off cleanly" : "forced off"} in ${seconds.toFixed(1)} s\n`,
      );
      process.exit(0);
    });
  });
}

main().catch((err) => {
  process.stderr.write(`vm: error: ${(err as Error).message}\n`);
  process.exit(1);
});
