// The real-machine test harness: the OS image's rootfs, etcd, and systemd-nspawn machines on a
// private bridge. Used by integration tests, scripts/up and benchmarks. Progress is logged to stderr.
export { AGENT_API_PORT, type Bridge, Cluster, type ClusterOptions } from "./cluster.js";
export { type Etcd, type EtcdOptions, startEtcd } from "./etcd.js";
export { ensureHostPackages } from "./host.js";
export { MACHINE_TLS_FILES, Machine, machineIdFor } from "./machine.js";
export { HarnessPki, harnessPki, type TlsFiles, type TlsMaterial } from "./pki.js";
export type { ExecResult } from "./proc.js";
export { imageRootfs, type RootfsProvider } from "./rootfs.js";
