import { describe, expect, it } from "vitest";
import { ConfigError, resolveConfig } from "../../agent/config.js";

describe("updater settings", () => {
  it("are off by default and take their documented defaults", () => {
    const cfg = resolveConfig(undefined, {}, []);
    expect(cfg).toMatchObject({
      updateChannelURL: "",
      updateGroup: "default",
      updateIntervalSeconds: 3600,
      updateDisk: "",
      espDir: "/efi",
      stateDir: "/var/lib/flotilla/update",
      rebootLeaseSeconds: 900,
      healthSoakSeconds: 60,
      pinnedVersion: "",
    });
  });

  it("come from the file, the environment and flags; the channel URL names a directory", () => {
    const cfg = resolveConfig(
      { "update-channel-url": "http://updates.example/channels/stable", "health-soak-seconds": 0 },
      { FLOTILLA_UPDATE_GROUP: "canary" },
      ["--pinned-version=1.2.3", "--update-disk=/dev/vda"],
    );
    expect(cfg).toMatchObject({
      updateChannelURL: "http://updates.example/channels/stable/",
      updateGroup: "canary",
      pinnedVersion: "1.2.3",
      updateDisk: "/dev/vda",
      healthSoakSeconds: 0,
    });
  });

  it("refuses bad values, naming each", () => {
    const flags = [
      "--update-channel-url=ftp://x",
      "--update-group=a/b",
      "--pinned-version=1.2",
      "--esp-dir=efi",
      "--reboot-lease-seconds=0",
    ];
    expect(() => resolveConfig(undefined, {}, flags)).toThrow(ConfigError);
    for (const flag of flags)
      expect(() => resolveConfig(undefined, {}, flags)).toThrow(`flag ${flag.slice(0, flag.indexOf("="))}: `);
  });

  it("the channel URL must end in the channel's name: manifests are checked against it", () => {
    expect(() => resolveConfig(undefined, {}, ["--update-channel-url=http://updates.example/"])).toThrow(
      'flag --update-channel-url: must end in a channel name (a-z 0-9 . -), e.g. http://updates.example/channels/stable/, got "http://updates.example/"',
    );
  });
});
