import { describe, expect, it } from "vitest";
import { parseControlRequest } from "../../scripts/lib/machine-control.js";

describe("scripts/machine's control requests", () => {
  it("accepts the power actions and exec with its argv", () => {
    expect(parseControlRequest('{"machine":"m2","action":"kill"}')).toEqual({
      machine: "m2",
      action: "kill",
    });
    expect(parseControlRequest('{"machine":"m1","action":"exec","argv":["dig","+short","web"]}')).toEqual({
      machine: "m1",
      action: "exec",
      argv: ["dig", "+short", "web"],
    });
  });

  it.each([
    ["not JSON", "{", /not JSON/],
    ["not an object", "[1]", /machine: want/],
    ["a machine name with a slash", '{"machine":"../m1","action":"kill"}', /machine: want/],
    ["an unknown action", '{"machine":"m1","action":"reboot"}', /action: want one of/],
    ["exec without argv", '{"machine":"m1","action":"exec"}', /argv: want/],
    ["exec with a number", '{"machine":"m1","action":"exec","argv":["ls",1]}', /argv: want/],
    [
      "an oversized argument",
      `{"machine":"m1","action":"exec","argv":["${"x".repeat(9000)}"]}`,
      /argv: want/,
    ],
  ])("refuses %s", (_what, line, message) => {
    expect(() => parseControlRequest(line)).toThrow(message);
  });
});
