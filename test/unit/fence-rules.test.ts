// The container fence's ruleset from the agent's settings (agent/fence/rules.ts). That nft accepts
// it and that it fences a real container: test/integration/container-fence.test.ts.

import { describe, expect, it } from "vitest";
import { fenceRuleset, fenceTarget } from "../../agent/fence/rules.js";

describe("container fence", () => {
  it("takes the API port and every etcd endpoint (host, port; IPv6 unbracketed; scheme default ports)", () => {
    expect(
      fenceTarget("0.0.0.0:7480", [
        "http://10.0.0.5:2379",
        "https://[fd00::7]:2379/",
        "https://etcd.example",
        "http://etcd.example",
      ]),
    ).toEqual({
      apiPorts: [7480],
      etcd: [
        { host: "10.0.0.5", port: 2379 },
        { host: "fd00::7", port: 2379 },
        { host: "etcd.example", port: 443 },
        { host: "etcd.example", port: 80 },
      ],
    });
    expect(fenceTarget("", ["http://127.0.0.1:2379"]).apiPorts).toEqual([]);
  });

  it("one table replaced whole: the machine's API and etcd ports, etcd endpoints by address and port, from podman and CNI bridges", () => {
    const rules = fenceRuleset({
      apiPorts: [7480],
      etcd: [
        { address: "10.231.5.1", port: 34567 },
        { address: "10.0.0.6", port: 2379 },
        { address: "fd00::1", port: 2379 },
      ],
    });
    expect(rules.startsWith("table inet flotilla\ndelete table inet flotilla\ntable inet flotilla {\n")).toBe(
      true,
    );
    const set = (name: string) =>
      new RegExp(`set ${name} \\{\\n[^}]*elements = \\{ ([^}]*) \\}`).exec(rules)?.[1];
    expect(set("local_ports")).toBe("7480, 2379, 2380, 34567");
    expect(set("api_ports")).toBe("7480");
    expect(set("etcd4")).toBe("10.231.5.1 . 34567, 10.0.0.6 . 2379");
    expect(set("etcd6")).toBe("fd00::1 . 2379");
    for (const hook of ["input", "forward"])
      expect(rules).toContain(`type filter hook ${hook} priority filter - 10; policy accept;`);
    expect(rules).toContain('iifname "podman*" jump to_machine\n    iifname "cni-*" jump to_machine');
    expect(rules).toContain(
      'iifname "podman*" jump through_machine\n    iifname "cni-*" jump through_machine',
    );
    // DNS (53) is never fenced.
    expect(rules).not.toMatch(/\b53\b/);
  });

  it("empty sets are declared without elements; bad addresses and ports are refused", () => {
    const rules = fenceRuleset({ apiPorts: [], etcd: [] });
    expect(rules).toContain("set api_ports {\n    type inet_service\n  }");
    expect(rules).toContain("set etcd6 {\n    type ipv6_addr . inet_service\n  }");
    expect(() => fenceRuleset({ apiPorts: [], etcd: [{ address: "etcd.example", port: 2379 }] })).toThrow(
      'fence: etcd endpoint address "etcd.example" is not an IP address',
    );
    expect(() => fenceRuleset({ apiPorts: [0], etcd: [] })).toThrow("fence: port 0 is not a TCP port");
  });
});
