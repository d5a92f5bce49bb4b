import { describe, expect, it } from "vitest";
import {
  ContainerUnitError,
  type RenderContext,
  renderContainerUnit,
  splitWords,
  upstreamNameservers,
} from "../../agent/containers/index.js";
import type { UnitOption } from "../../agent/model.js";
import { parseUnitFile, serializeUnit } from "../../agent/unit/index.js";

const IMAGE = "registry.test:5000/flotilla/busybox:latest";

function render(text: string, name = "web.service", ctx: RenderContext = {}): UnitOption[] {
  return renderContainerUnit(name, parseUnitFile(text, name), ctx).options;
}

function values(options: UnitOption[], section: string, key: string): string[] {
  return options.filter((o) => o.section === section && o.name === key).map((o) => o.value);
}

/** What systemd makes of an ExecStart= value: %% and $$ undone around its unquoting. */
function systemdArgv(line: string): string[] {
  return splitWords(line.replace(/%%/g, "%")).words.map((word) => word.replace(/\$\$/g, "$"));
}

/** The argv systemd runs for ExecStart. */
function execStart(text: string, name?: string, ctx?: RenderContext): string[] {
  const lines = values(render(text, name, ctx), "Service", "ExecStart");
  expect(lines).toHaveLength(1);
  return systemdArgv(lines[0] ?? "");
}

/** ExecStart after the flags every container gets (up to --pull): the part each key changes. */
function runArgs(container: string, name?: string, ctx?: RenderContext): string[] {
  const argv = execStart(`[Container]\nImage=${IMAGE}\n${container}`, name, ctx);
  const fixed = argv.findIndex((word) => word.startsWith("--pull="));
  expect(fixed).toBeGreaterThan(0);
  return argv.slice(fixed + 1);
}

describe("renderContainerUnit", () => {
  it("passes a unit without [Container] through unchanged, e.g. a plain podman run unit", () => {
    const text = [
      "[Unit]",
      "Description=plain",
      "[Service]",
      "ExecStartPre=-/usr/bin/podman rm -f web",
      "ExecStart=/usr/bin/podman run --rm --name web -p 80:80 busybox httpd -f",
      "ExecStop=/usr/bin/podman stop web",
      "[X-Fleet]",
      "Global=true",
      "",
    ].join("\n");
    const options = parseUnitFile(text, "web.service");
    const rendered = renderContainerUnit("web.service", options, { dnsServer: "10.0.0.1" }).options;
    expect(rendered).toEqual(options);
    expect(rendered).not.toBe(options);
  });

  it("renders a minimal unit into a notify service running podman", () => {
    const rendered = render(
      `[Unit]\nDescription=web\n\n[Container]\nImage=${IMAGE}\n\n[Install]\nWantedBy=multi-user.target\n`,
    );
    expect(serializeUnit(rendered)).toBe(
      [
        "[Unit]",
        "Description=web",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=all",
        "KillMode=mixed",
        "Delegate=yes",
        "SyslogIdentifier=%N",
        "SuccessExitStatus=143",
        "Environment=PODMAN_SYSTEMD_UNIT=%n",
        `ExecStart=/usr/bin/podman run --rm --cgroups=split --sdnotify=conmon --replace --name systemd-web --detach --log-driver=passthrough --pull=missing --network=bridge ${IMAGE}`,
        "ExecStop=/usr/bin/podman stop --ignore --time=10 systemd-web",
        "ExecStopPost=-/usr/bin/podman rm --force --ignore --volumes systemd-web",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
      ].join("\n"),
    );
  });

  it("removes [Container] and keeps [Unit], [Install] and [X-Fleet] as written", () => {
    const rendered = render(
      `[Unit]\nDescription=web %i\nAfter=db.service\n[Container]\nImage=${IMAGE}\n[X-Fleet]\nConflicts=web@*.service\nMachineMetadata=disk=ssd\n[Install]\nWantedBy=multi-user.target\n`,
      "web@1.service",
    );
    expect(rendered.some((o) => o.section === "Container")).toBe(false);
    expect(rendered.filter((o) => o.section !== "Service")).toEqual([
      { section: "Unit", name: "Description", value: "web %i" },
      { section: "Unit", name: "After", value: "db.service" },
      { section: "X-Fleet", name: "Conflicts", value: "web@*.service" },
      { section: "X-Fleet", name: "MachineMetadata", value: "disk=ssd" },
      { section: "Install", name: "WantedBy", value: "multi-user.target" },
    ]);
    // The generated [Service] takes the place of [Container].
    expect(rendered.map((o) => o.section).indexOf("Service")).toBe(2);
  });

  it("keeps the user's [Service] settings, before the generated ones, without overriding them", () => {
    const rendered = render(
      `[Container]\nImage=${IMAGE}\n[Service]\nRestart=always\nRestartSec=3\nMemoryMax=64M\nCPUQuota=50%\nEnvironment=UNIT_ONLY=1\nTimeoutStartSec=300\n`,
    );
    const service = rendered.filter((o) => o.section === "Service");
    expect(service.slice(0, 6).map((o) => `${o.name}=${o.value}`)).toEqual([
      "Restart=always",
      "RestartSec=3",
      "MemoryMax=64M",
      "CPUQuota=50%",
      "Environment=UNIT_ONLY=1",
      "TimeoutStartSec=300",
    ]);
    for (const key of ["Restart", "RestartSec", "MemoryMax", "CPUQuota", "TimeoutStartSec"]) {
      expect(values(rendered, "Service", key)).toHaveLength(1);
    }
    expect(values(rendered, "Service", "Environment")).toEqual(["UNIT_ONLY=1", "PODMAN_SYSTEMD_UNIT=%n"]);
    // The unit's own Environment does not reach the container.
    expect(execStart(serializeUnit(rendered))).not.toContain("UNIT_ONLY=1");
  });

  it("does not add the defaults the user set to compatible values", () => {
    const rendered = render(
      `[Container]\nImage=${IMAGE}\n[Service]\nType=notify\nNotifyAccess=all\nKillMode=control-group\nDelegate=no\nSyslogIdentifier=site\n`,
    );
    expect(values(rendered, "Service", "Type")).toEqual(["notify"]);
    expect(values(rendered, "Service", "NotifyAccess")).toEqual(["all"]);
    expect(values(rendered, "Service", "KillMode")).toEqual(["control-group"]);
    expect(values(rendered, "Service", "Delegate")).toEqual(["no"]);
    expect(values(rendered, "Service", "SyslogIdentifier")).toEqual(["site"]);
  });

  it("puts the generated commands after a user's ExecStartPre and ExecStopPost", () => {
    const rendered = render(
      `[Service]\nExecStartPre=/bin/mkdir -p /srv/web\nExecStopPost=\n[Container]\nImage=${IMAGE}\n`,
    );
    const service = rendered.filter((o) => o.section === "Service").map((o) => o.name);
    expect(service.indexOf("ExecStartPre")).toBeLessThan(service.indexOf("ExecStart"));
    // The user's empty ExecStopPost= comes first, so it cannot reset the forced removal.
    expect(values(rendered, "Service", "ExecStopPost")).toEqual([
      "",
      "-/usr/bin/podman rm --force --ignore --volumes systemd-web",
    ]);
  });

  it("runs the container in the unit's cgroup, removed on exit, replacing a leftover, notifying via conmon", () => {
    const argv = execStart(`[Container]\nImage=${IMAGE}\n`);
    expect(argv.slice(0, 13)).toEqual([
      "/usr/bin/podman",
      "run",
      "--rm",
      "--cgroups=split",
      "--sdnotify=conmon",
      "--replace",
      "--name",
      "systemd-web",
      "--detach",
      "--log-driver=passthrough",
      "--pull=missing",
      "--network=bridge",
      IMAGE,
    ]);
  });

  it("stops and then force-removes the container by name", () => {
    const rendered = render(`[Container]\nImage=${IMAGE}\nContainerName=site\n`);
    expect(values(rendered, "Service", "ExecStop").map(systemdArgv)).toEqual([
      ["/usr/bin/podman", "stop", "--ignore", "--time=10", "site"],
    ]);
    expect(values(rendered, "Service", "ExecStopPost")).toEqual([
      "-/usr/bin/podman rm --force --ignore --volumes site",
    ]);
  });

  describe("container name", () => {
    it("defaults to systemd-NAME, and systemd-PREFIX_INSTANCE for a template instance", () => {
      expect(execStart(`[Container]\nImage=${IMAGE}\n`, "web.service")[7]).toBe("systemd-web");
      expect(execStart(`[Container]\nImage=${IMAGE}\n`, "web@3.service")[7]).toBe("systemd-web_3");
      expect(execStart(`[Container]\nImage=${IMAGE}\n`, "my:web\\x2d1.service")[7]).toBe(
        "systemd-my_web_x2d1",
      );
    });

    it("takes ContainerName, with %p %i %n %N and %% expanded", () => {
      expect(execStart(`[Container]\nImage=${IMAGE}\nContainerName=%p-%i\n`, "web@3.service")[7]).toBe(
        "web-3",
      );
      const env = runArgs("Environment=A=%n B=%N C=100%% D=%x E=%\n", "web@3.service");
      expect(env).toEqual([
        "--network=bridge",
        "-e",
        "A=web@3.service",
        "-e",
        "B=web@3",
        "-e",
        "C=100%",
        "-e",
        "D=%x",
        "-e",
        "E=%",
        IMAGE,
      ]);
    });
  });

  describe("keys", () => {
    it("Exec: the command after the image, the last assignment wins, an empty one keeps the image's", () => {
      expect(runArgs("Exec=httpd -f -p 8080 -h /var/www\n")).toEqual([
        "--network=bridge",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/var/www",
      ]);
      expect(runArgs("Exec=sleep 1\nExec=sleep 2\n").slice(-2)).toEqual(["sleep", "2"]);
      expect(runArgs("Exec=sleep 1\nExec=\n").at(-1)).toBe(IMAGE);
    });

    it("PublishPort: one --publish each, as written", () => {
      expect(
        runArgs(
          "PublishPort=8080:80\nPublishPort=127.0.0.1::53/udp\nPublishPort=[::1]:9000-9001:9000-9001\n",
        ),
      ).toEqual([
        "--network=bridge",
        "--publish",
        "8080:80",
        "--publish",
        "127.0.0.1::53/udp",
        "--publish",
        "[::1]:9000-9001:9000-9001",
        IMAGE,
      ]);
    });

    it("Volume: one --volume each; named, bind and anonymous", () => {
      expect(runArgs("Volume=data:/data\nVolume=/srv/web:/var/www:ro,Z\nVolume=/cache\n")).toEqual([
        "--network=bridge",
        "--volume",
        "data:/data",
        "--volume",
        "/srv/web:/var/www:ro,Z",
        "--volume",
        "/cache",
        IMAGE,
      ]);
    });

    it("Environment and EnvironmentFile: --env-file first, then -e per pair, quoted values kept whole", () => {
      expect(
        runArgs(
          `Environment=A=1 "B=two words"\nEnvironment=C='it''s'\nEnvironmentFile=/etc/web.env /etc/more.env\n`,
        ),
      ).toEqual([
        "--network=bridge",
        "--env-file",
        "/etc/web.env",
        "--env-file",
        "/etc/more.env",
        "-e",
        "A=1",
        "-e",
        "B=two words",
        "-e",
        "C=its",
        IMAGE,
      ]);
    });

    it("list keys reset on an empty assignment", () => {
      expect(
        runArgs("Environment=A=1\nEnvironment=\nEnvironment=B=2\nPublishPort=80\nPublishPort=\n"),
      ).toEqual(["--network=bridge", "-e", "B=2", IMAGE]);
    });

    it("User and WorkingDir", () => {
      expect(runArgs("User=www-data:www-data\nWorkingDir=/var/www\n")).toEqual([
        "--network=bridge",
        "--user",
        "www-data:www-data",
        "--workdir",
        "/var/www",
        IMAGE,
      ]);
    });

    it("PodmanArgs: before the image, in order, split like a command line", () => {
      expect(runArgs(`PodmanArgs=--init --label "a=b c"\nPodmanArgs=--hostname web\nExec=true\n`)).toEqual([
        "--network=bridge",
        "--init",
        "--label",
        "a=b c",
        "--hostname",
        "web",
        IMAGE,
        "true",
      ]);
    });
  });

  describe("Network", () => {
    it.each([
      ["", "--network=bridge"],
      ["Network=bridge\n", "--network=bridge"],
      ["Network=host\n", "--network=host"],
      ["Network=none\n", "--network=none"],
      ["Network=container:db\n", "--network=container:db"],
    ])("%j renders %s", (key, flag) => {
      expect(runArgs(key)).toEqual([flag, IMAGE]);
    });

    it("gives bridge containers the agent's DNS server, and no other mode", () => {
      const ctx = { dnsServer: "10.231.0.2" };
      expect(runArgs("", undefined, ctx)).toEqual([
        "--network=bridge",
        "--dns=10.231.0.2",
        "--dns-search=service.flotilla",
        IMAGE,
      ]);
      const upstream = { ...ctx, upstreamDnsServers: ["192.0.2.53", "2001:db8::53"] };
      expect(runArgs("", undefined, upstream)).toEqual([
        "--network=bridge",
        "--dns=10.231.0.2",
        "--dns=192.0.2.53",
        "--dns=2001:db8::53",
        "--dns-search=service.flotilla",
        IMAGE,
      ]);
      for (const mode of ["host", "none", "container:db"]) {
        expect(runArgs(`Network=${mode}\n`, undefined, ctx)).toEqual([`--network=${mode}`, IMAGE]);
      }
    });
  });

  it("takes the machine's reachable resolvers from resolv.conf", () => {
    const conf = [
      "# generated",
      "nameserver 127.0.0.53",
      "nameserver 192.0.2.53",
      "search example.com",
      "  nameserver fe80::1%eth0",
      "nameserver ::1",
      "nameserver 10.231.0.2",
      "nameserver 192.0.2.53",
      "nameserver bogus",
      "",
    ].join("\n");
    expect(upstreamNameservers(conf, ["10.231.0.2"])).toEqual(["192.0.2.53"]);
    expect(upstreamNameservers("")).toEqual([]);
  });

  describe("Pull", () => {
    it.each(["always", "missing", "never"])("Pull=%s becomes --pull=%s on the run", (policy) => {
      const argv = execStart(`[Container]\nImage=${IMAGE}\nPull=${policy}\n`);
      expect(argv).toContain(`--pull=${policy}`);
    });

    it("passes the registry auth file when the policy may pull", () => {
      const ctx = { registryAuthFile: "/etc/flotilla/registry-auth.json" };
      for (const policy of ["always", "missing"]) {
        const argv = execStart(`[Container]\nImage=${IMAGE}\nPull=${policy}\n`, undefined, ctx);
        expect(argv.slice(10, 12)).toEqual([
          `--pull=${policy}`,
          "--authfile=/etc/flotilla/registry-auth.json",
        ]);
      }
      expect(execStart(`[Container]\nImage=${IMAGE}\nPull=never\n`, undefined, ctx).join(" ")).not.toContain(
        "--authfile",
      );
    });
  });

  describe("quoting for systemd", () => {
    it("escapes %, $, quotes, spaces and backslashes so the container gets the words as written", () => {
      const rendered = render(
        `[Container]\nImage=${IMAGE}\nEnvironment="GREETING=hello world" 'PRICE=$5' RATE=100%%\nExec=sh -c 'echo "$GREETING" costs \\\\$PRICE at $RATE; echo a\\\\b' "" ";"\n`,
      );
      const line = values(rendered, "Service", "ExecStart")[0] ?? "";
      expect(line).toContain(`-e "GREETING=hello world" -e PRICE=$$5 -e RATE=100%%`);
      expect(line).toContain(String.raw`"echo \"$$GREETING\" costs \\$$PRICE at $$RATE; echo a\\b" "" ";"`);
      expect(systemdArgv(line).slice(-12)).toEqual([
        "-e",
        "GREETING=hello world",
        "-e",
        "PRICE=$5",
        "-e",
        "RATE=100%",
        IMAGE,
        "sh",
        "-c",
        'echo "$GREETING" costs \\$PRICE at $RATE; echo a\\b',
        "",
        ";",
      ]);
    });

    it("never leaves a lone % or $ in a generated command", () => {
      const rendered = render(
        `[Container]\nImage=${IMAGE}\nContainerName=%p\nExec=printf %s%%d $x\nVolume=/srv/$a%%:/data\n`,
        "web@1.service",
      );
      for (const key of ["ExecStart", "ExecStop", "ExecStopPost"]) {
        for (const line of values(rendered, "Service", key)) {
          expect(line.replace(/%%|\$\$/g, "")).not.toMatch(/[%$]/);
        }
      }
    });
  });

  it("throws a ContainerUnitError with every problem for an invalid section", () => {
    const options = parseUnitFile("[Container]\nNetwork=bridged\n", "web.service");
    let caught: unknown;
    try {
      renderContainerUnit("web.service", options, {});
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ContainerUnitError);
    expect((caught as ContainerUnitError).errors).toHaveLength(2);
    expect((caught as ContainerUnitError).message).toContain("web.service: [Container] has no Image=");
  });
});
