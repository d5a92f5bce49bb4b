import { describe, expect, it } from "vitest";
import { parseEndpoint } from "../../fleetctl/endpoint.js";
import {
  convertFlag,
  type FlagSpec,
  findCommand,
  findCommandIndex,
  globalsFromEnv,
  parseGoBool,
} from "../../fleetctl/spec.js";

describe("parseEndpoint", () => {
  it("dials unix:// and file:// socket paths", () => {
    expect(parseEndpoint("unix:///var/run/fleet.sock").endpoint).toEqual({
      kind: "unix",
      socketPath: "/var/run/fleet.sock",
      display: "unix:///var/run/fleet.sock",
    });
    expect(parseEndpoint("file:///tmp/f.sock").endpoint).toMatchObject({
      kind: "unix",
      socketPath: "/tmp/f.sock",
    });
  });

  it("rejects a unix URL whose path became a host, like fleet", () => {
    expect(() => parseEndpoint("unix://var/run/x")).toThrow(
      'unable to connect to host "var" with scheme "unix"',
    );
    expect(() => parseEndpoint("file://tmp/x")).toThrow('unable to connect to host "tmp" with scheme "file"');
  });

  it("parses http://host:port with an optional base path", () => {
    expect(parseEndpoint("http://10.0.0.1:49153").endpoint).toEqual({
      kind: "tcp",
      host: "10.0.0.1",
      port: 49153,
      basePath: "",
      display: "http://10.0.0.1:49153",
    });
    expect(parseEndpoint("http://h/prefix/").endpoint).toMatchObject({
      host: "h",
      port: 80,
      basePath: "/prefix",
    });
    expect(parseEndpoint("http://[::1]:8080").endpoint).toMatchObject({ host: "::1", port: 8080 });
  });

  it("uses only the first of several endpoints, with a warning", () => {
    const parsed = parseEndpoint("http://a:1,http://b:2");
    expect(parsed.endpoint).toMatchObject({ host: "a", port: 1 });
    expect(parsed.warning).toBe("multiple endpoints provided but only the first (http://a:1) is used");
    expect(parseEndpoint("http://a:1").warning).toBeUndefined();
  });

  it("fails without a scheme, as Go's url.Parse does", () => {
    expect(() => parseEndpoint("127.0.0.1:4001")).toThrow(
      "parse 127.0.0.1:4001: first path segment in URL cannot contain colon",
    );
    expect(() => parseEndpoint("localhost")).toThrow("URL scheme undefined");
  });

  it("parses https:// (TLS, port 443 by default)", () => {
    expect(parseEndpoint("https://10.0.0.1:7480").endpoint).toEqual({
      kind: "tcp",
      host: "10.0.0.1",
      port: 7480,
      basePath: "",
      display: "https://10.0.0.1:7480",
      tls: true,
    });
    expect(parseEndpoint("https://h").endpoint).toMatchObject({ port: 443, tls: true });
    expect(parseEndpoint("http://h").endpoint).not.toHaveProperty("tls");
  });

  it("refuses schemes it cannot speak", () => {
    expect(() => parseEndpoint("ftp://h:1")).toThrow('unsupported endpoint scheme "ftp"');
  });
});

describe("command lookup", () => {
  it("matches exact names and unique prefixes, like cobra", () => {
    expect(findCommand("list-machines")?.name).toBe("list-machines");
    expect(findCommand("list-m")?.name).toBe("list-machines");
    expect(findCommand("st")).toBeUndefined(); // start, status, stop
    expect(findCommand("sta")).toBeUndefined(); // start, status
    expect(findCommand("star")?.name).toBe("start");
    expect(findCommand("list")).toBeUndefined();
    expect(findCommand("list-unit")).toBeUndefined(); // list-unit-files, list-units
    expect(findCommand("list-units")?.name).toBe("list-units");
    expect(findCommand("nope")).toBeUndefined();
  });

  it("finds the command word after global flags and their values", () => {
    expect(findCommandIndex(["--endpoint", "http://h:1", "list-units"])).toBe(2);
    expect(findCommandIndex(["--endpoint=http://h:1", "--debug", "start", "a"])).toBe(2);
    expect(findCommandIndex(["--request-timeout", "1", "--no-legend", "list-units"])).toBe(3);
    expect(findCommandIndex(["--debug"])).toBe(-1);
    expect(findCommandIndex([])).toBe(-1);
  });
});

describe("flag values", () => {
  const int: FlagSpec = { name: "block-attempts", type: "int", default: 10, usage: "" };
  const float: FlagSpec = { name: "request-timeout", type: "float", default: 3, usage: "" };
  const bool: FlagSpec = { name: "debug", type: "bool", default: false, usage: "" };

  it("converts like pflag and reports pflag's errors", () => {
    expect(convertFlag(int, "3")).toBe(3);
    expect(convertFlag(int, "abc")).toEqual({
      error:
        'invalid argument "abc" for "--block-attempts" flag: strconv.ParseInt: parsing "abc": invalid syntax',
    });
    expect(convertFlag(float, "0.5")).toBe(0.5);
    expect(convertFlag(float, "x")).toHaveProperty("error");
    expect(convertFlag(bool, true)).toBe(true);
    expect(convertFlag(bool, "F")).toBe(false);
  });

  it("parses booleans like Go's strconv.ParseBool", () => {
    expect(["1", "t", "T", "TRUE", "true", "True"].map(parseGoBool)).toEqual(Array(6).fill(true));
    expect(["0", "f", "F", "FALSE", "false", "False"].map(parseGoBool)).toEqual(Array(6).fill(false));
    expect(parseGoBool("yes")).toBeUndefined();
  });

  it("fills global flags from FLEETCTL_* unless given on the command line", () => {
    const env = {
      FLEETCTL_ENDPOINT: "http://env:1",
      FLEETCTL_REQUEST_TIMEOUT: "0.5",
      FLEETCTL_DEBUG: "true",
      FLEETCTL_DRIVER: "",
      FLEETCTL_SSH_TIMEOUT: "bogus",
      FLEETCTL_NO_LEGEND: "true",
    };
    expect(globalsFromEnv({ endpoint: "http://cli:2" }, env)).toEqual({
      endpoint: "http://cli:2",
      "request-timeout": 0.5,
      debug: true,
    });
  });
});
