import { describe, expect, it } from "vitest";
import { parseContainerSection, validateContainerSection } from "../../agent/containers/index.js";
import { parseUnitFile } from "../../agent/unit/index.js";

const IMAGE = "registry.test:5000/flotilla/busybox:latest";

function validate(text: string, name = "web.service"): string[] {
  return validateContainerSection(name, parseUnitFile(text, name));
}

/** Errors of a unit with a valid Image plus `lines` in [Container]. */
function errorsWith(lines: string, name?: string): string[] {
  return validate(`[Container]\nImage=${IMAGE}\n${lines}`, name);
}

describe("validateContainerSection", () => {
  it("accepts a unit that uses every key", () => {
    const text = [
      "[Unit]",
      "Description=web",
      "[Container]",
      `Image=${IMAGE}`,
      "ContainerName=web-%i",
      "Exec=httpd -f -p 8080 -h /var/www",
      "PublishPort=8080:8080",
      "PublishPort=127.0.0.1:5353:53/udp",
      "PublishPort=[::1]:9000-9002:9000-9002/tcp",
      "PublishPort=10.0.0.1::80",
      "PublishPort=8443",
      "Volume=web-data:/var/www",
      "Volume=/srv/web:/srv:ro,Z",
      "Volume=/cache",
      "Volume=/srv/a b:/data:idmap=uids=0-1000-10",
      'Environment=A=1 "B=two words" C=',
      "EnvironmentFile=/etc/web.env",
      "Network=bridge",
      "User=www-data",
      "WorkingDir=/var/www",
      "Pull=always",
      "PodmanArgs=--init --label a=b",
      "[Service]",
      "Restart=always",
      "MemoryMax=64M",
      "CPUQuota=50%",
      "Type=notify",
      "NotifyAccess=all",
      "KillMode=mixed",
      "[X-Fleet]",
      "Conflicts=web@*.service",
    ].join("\n");
    expect(validate(text, "web@1.service")).toEqual([]);
  });

  it("accepts each network mode", () => {
    for (const mode of ["bridge", "host", "none", "container:db", "container:3f9e1b2c"]) {
      expect(errorsWith(`Network=${mode}\n`)).toEqual([]);
    }
  });

  it("accepts each pull policy", () => {
    for (const policy of ["always", "missing", "never"]) expect(errorsWith(`Pull=${policy}\n`)).toEqual([]);
  });

  it("has nothing to say about a unit without [Container], even a plain podman unit", () => {
    expect(validate("[Service]\nExecStart=/usr/bin/podman run --rm busybox\nType=simple\n")).toEqual([]);
  });

  it("reports every problem at once", () => {
    expect(validate("[Container]\nNetwork=bridged\nPull=sometimes\n")).toHaveLength(3);
  });

  describe("errors, each naming the unit and the key", () => {
    it("no Image, or an Image reset by an empty assignment", () => {
      const missing =
        "web.service: [Container] has no Image= (the image to run, e.g. Image=docker.io/library/busybox)";
      expect(validate("[Container]\nExec=true\n")).toEqual([missing]);
      expect(validate(`[Container]\nImage=${IMAGE}\nImage=\n`)).toEqual([missing]);
    });

    it("an Image with spaces", () => {
      expect(validate("[Container]\nImage=busybox latest\n")).toEqual([
        "web.service: [Container] Image=busybox latest: an image reference cannot contain spaces",
      ]);
    });

    it("an unknown network mode", () => {
      expect(errorsWith("Network=bridged\n")).toEqual([
        'web.service: [Container] Network=bridged: unknown network mode "bridged" (use bridge, host, none or container:NAME)',
      ]);
      expect(errorsWith("Network=slirp4netns\n")).toHaveLength(1);
    });

    it("container: without a name, or with an invalid one", () => {
      expect(errorsWith("Network=container:\n")).toEqual([
        "web.service: [Container] Network=container:: container: needs the name of the container whose network to join (container:NAME)",
      ]);
      expect(errorsWith("Network=container:db@1\n")).toEqual([
        'web.service: [Container] Network=container:db@1: "db@1" is not a valid container name (letters, digits, _ . -, starting with a letter or digit)',
      ]);
    });

    it("malformed port mappings", () => {
      const cases: [string, string][] = [
        ["http", 'container port "http" is not a port number or START-END range'],
        ["8080:", 'container port "" is not a port number or START-END range'],
        ["0", "container port 0 is outside 1-65535"],
        ["70000:80", "host port 70000 is outside 1-65535"],
        ["80:65536", "container port 65536 is outside 1-65535"],
        ["90-80", "container port range 90-80 ends before it starts"],
        ["8000-8010:80", "host ports 8000-8010 and container ports 80 are ranges of different lengths"],
        ["8000-8001:80-82", "host ports 8000-8001 and container ports 80-82 are ranges of different lengths"],
        ["80/sctp", 'protocol "sctp" is not tcp or udp'],
        ["80/", 'protocol "" is not tcp or udp'],
        [":80", "expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]"],
        ["1.2.3.4:5:6:7", "expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]"],
        ["1.2.3:80:80", '"1.2.3" is not an IPv4 address'],
        ["localhost:80:80", '"localhost" is not an IPv4 address'],
        ["[1.2.3.4]:80:80", '"1.2.3.4" is not an IPv6 address'],
        ["[::1:80:80", "expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]"],
        ["[::1]:80", "expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]"],
        ["127.0.0.1:80", 'host port "127.0.0.1" is not a port number or START-END range'],
      ];
      for (const [spec, message] of cases) {
        expect(errorsWith(`PublishPort=${spec}\n`), spec).toEqual([
          `web.service: [Container] PublishPort=${spec}: ${message}`,
        ]);
      }
    });

    it("a published port with a network mode other than bridge", () => {
      for (const mode of ["host", "none", "container:db"]) {
        expect(errorsWith(`Network=${mode}\nPublishPort=8080:80\n`)).toEqual([
          `web.service: [Container] PublishPort=8080:80: ports are published only with Network=bridge, not ${mode}`,
        ]);
      }
    });

    it("malformed volumes", () => {
      const cases: [string, string][] = [
        ["data", 'container path "data" must be absolute'],
        ["/srv:data", 'container path "data" must be absolute'],
        ["/data:ro", 'container path "ro" must be absolute'],
        [
          "./data:/data",
          'source "./data" is neither an absolute host path nor a volume name (letters, digits, _ . -)',
        ],
        [
          "~/data:/data",
          'source "~/data" is neither an absolute host path nor a volume name (letters, digits, _ . -)',
        ],
        [":/data", 'source "" is neither an absolute host path nor a volume name (letters, digits, _ . -)'],
        ["/a:/b:ro:z", "expected SOURCE:/PATH[:OPTIONS] or /PATH"],
        ["/a:/b:readonly", 'unknown volume option "readonly"'],
        ["/a:/b:ro,", 'unknown volume option ""'],
      ];
      for (const [volume, message] of cases) {
        expect(errorsWith(`Volume=${volume}\n`), volume).toEqual([
          `web.service: [Container] Volume=${volume}: ${message}`,
        ]);
      }
    });

    it("an unknown key, with a hint for a wrong case", () => {
      expect(errorsWith("Ports=80\n")).toEqual([
        "web.service: [Container] Ports=80: unknown key ([Container] keys are Image, ContainerName, Exec, PublishPort, Volume, Environment, EnvironmentFile, Network, User, WorkingDir, Pull, PodmanArgs)",
      ]);
      expect(errorsWith("publishport=80\n")).toEqual([
        "web.service: [Container] publishport=80: unknown key (did you mean PublishPort=?)",
      ]);
    });

    it("a bad Pull value", () => {
      expect(errorsWith("Pull=sometimes\n")).toEqual([
        "web.service: [Container] Pull=sometimes: the pull policy must be always, missing, never",
      ]);
      expect(errorsWith("Pull=Always\n")).toHaveLength(1);
    });

    it("ExecStart in a [Container] unit, even an empty one", () => {
      const message =
        "web.service: [Service] ExecStart= cannot be used with [Container]: the agent generates the command that runs the container (put the container's command in Exec=)";
      expect(
        validate(`[Service]\nExecStart=/usr/bin/podman run busybox\n[Container]\nImage=${IMAGE}\n`),
      ).toEqual([message]);
      expect(validate(`[Container]\nImage=${IMAGE}\n[Service]\nExecStart=\n`)).toEqual([message]);
    });

    it("[Service] settings that would break the container unit", () => {
      expect(errorsWith("[Service]\nType=simple\nNotifyAccess=main\nKillMode=process\n")).toEqual([
        "web.service: [Service] Type=simple cannot be used with [Container]: the unit is Type=notify so that it is active only once the container runs (allowed: notify)",
        "web.service: [Service] NotifyAccess=main cannot be used with [Container]: conmon, not the main process at first, reports the container as started (allowed: all)",
        "web.service: [Service] KillMode=process cannot be used with [Container]: other modes can leave container processes behind (allowed: mixed, control-group)",
      ]);
    });

    it("an invalid ContainerName, also after expansion", () => {
      expect(errorsWith("ContainerName=-web\n")).toEqual([
        'web.service: [Container] ContainerName=-web: "-web" is not a valid container name (letters, digits, _ . -, starting with a letter or digit)',
      ]);
      expect(errorsWith("ContainerName=%N\n", "web@1.service")).toEqual([
        'web@1.service: [Container] ContainerName=web@1: "web@1" is not a valid container name (letters, digits, _ . -, starting with a letter or digit)',
      ]);
    });

    it("Environment words that are not NAME=VALUE", () => {
      expect(errorsWith("Environment=A=1 DEBUG =x\n")).toEqual([
        'web.service: [Container] Environment=A=1 DEBUG =x: "DEBUG" is not NAME=VALUE',
        'web.service: [Container] Environment=A=1 DEBUG =x: "=x" is not NAME=VALUE',
      ]);
    });

    it("relative EnvironmentFile and WorkingDir", () => {
      expect(errorsWith("EnvironmentFile=web.env\nWorkingDir=www\n")).toEqual([
        'web.service: [Container] EnvironmentFile=web.env: "web.env" is not an absolute path',
        "web.service: [Container] WorkingDir=www: the working directory must be an absolute path",
      ]);
    });

    it("an unterminated quote in a key that takes words", () => {
      for (const key of ["Exec", "Environment", "EnvironmentFile", "PodmanArgs"]) {
        const errors = errorsWith(`${key}="/a=b\n`);
        expect(errors[0], key).toBe(`web.service: [Container] ${key}="/a=b: unterminated quote`);
      }
      // Paths are not split into words: a quote in one is just a character.
      expect(errorsWith("Volume=/srv/bob's:/data\n")).toEqual([]);
    });

    it("[Container] outside a .service unit", () => {
      expect(validate(`[Container]\nImage=${IMAGE}\n`, "web.socket")).toEqual([
        "web.socket: [Container] is only allowed in a .service unit",
      ]);
    });

    it("a section that is [Container] in another case", () => {
      expect(validate(`[container]\nImage=${IMAGE}\n`)).toEqual([
        "web.service: section [container] is not [Container] (section names are case-sensitive)",
      ]);
    });
  });
});

describe("parseContainerSection", () => {
  it("gives the spec that discovery needs: container name and published ports", () => {
    const { spec, errors } = parseContainerSection(
      "web@2.service",
      parseUnitFile(
        `[Container]\nImage=${IMAGE}\nPublishPort=10.0.0.1:8080-8081:80-81/udp\nPublishPort=53\n`,
        "x",
      ),
    );
    expect(errors).toEqual([]);
    expect(spec?.containerName).toBe("systemd-web_2");
    expect(spec?.publishPorts).toEqual([
      {
        hostIP: "10.0.0.1",
        hostPort: { start: 8080, end: 8081 },
        containerPort: { start: 80, end: 81 },
        protocol: "udp",
        spec: "10.0.0.1:8080-8081:80-81/udp",
      },
      { containerPort: { start: 53, end: 53 }, protocol: "tcp", spec: "53" },
    ]);
    expect(spec?.network).toEqual({ mode: "bridge" });
    expect(spec?.pull).toBe("missing");
  });
});
