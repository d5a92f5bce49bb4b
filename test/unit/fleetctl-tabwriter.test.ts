import { describe, expect, it } from "vitest";
import { tabwrite } from "../../fleetctl/tabwriter.js";

describe("tabwrite (Go text/tabwriter, minwidth 0, tabwidth 8, padding 1, '\\t')", () => {
  it("reproduces fleet's observed list-machines layout", () => {
    const input =
      "MACHINE\tIP\tMETADATA\n113f16a7...\t172.17.8.103\taz=us-west-1b\ne793afb9...\t172.17.8.101\t-\n";
    expect(tabwrite(input)).toBe(
      "MACHINE\t\tIP\t\tMETADATA\n113f16a7...\t172.17.8.103\taz=us-west-1b\ne793afb9...\t172.17.8.101\t-\n",
    );
  });

  it("pads to the next 8-column stop with as many tabs as the gap needs", () => {
    // Column width 11 (10 + padding) rounds to 16: "a" needs 15 columns → 2 tabs.
    expect(tabwrite("a\tb\nxxxxxxxxxx\tc\n")).toBe("a\t\tb\nxxxxxxxxxx\tc\n");
    // A cell exactly at a stop still gets padding 1, so the column grows to the next stop.
    expect(tabwrite("xxxxxxxx\ty\na\tb\n")).toBe("xxxxxxxx\ty\na\t\tb\n");
  });

  it("leaves already aligned text unchanged", () => {
    const input = "a\tb\tc\naa\tbbb\tcccc\naaa\tbbbb\n";
    expect(tabwrite(input)).toBe(input);
  });

  it("does not count a line's last cell as part of a column", () => {
    // "zzzzzzzzzzzzzzzz" ends its line, so it does not widen column 0.
    expect(tabwrite("a\tb\nzzzzzzzzzzzzzzzz\n")).toBe("a\tb\nzzzzzzzzzzzzzzzz\n");
    expect(tabwrite("a\tb\tc\nd\tzzzzzzzzzzzzzzzz\n")).toBe("a\tb\tc\nd\tzzzzzzzzzzzzzzzz\n");
  });

  it("ends a column block at a line with fewer cells", () => {
    // Column 1 is sized by lines 1-2 only; line 4 starts a new block for column 1.
    const input = "a\tbbbbbbbbbbbb\tc\nd\te\tf\ng\th\ni\tj\tk\n";
    expect(tabwrite(input)).toBe("a\tbbbbbbbbbbbb\tc\nd\te\t\tf\ng\th\ni\tj\tk\n");
  });

  it("formats lines after a one-cell line independently", () => {
    const input = "aaaaaaaaaa\tb\nd\te\nc\nf\tg\n";
    expect(tabwrite(input)).toBe("aaaaaaaaaa\tb\nd\t\te\nc\nf\tg\n");
  });

  it("pads empty cells", () => {
    expect(tabwrite("\tb\naaaaaaaaaa\tc\n")).toBe("\t\tb\naaaaaaaaaa\tc\n");
    expect(tabwrite("a\t\tb\n")).toBe("a\t\tb\n");
  });

  it("counts characters, not bytes", () => {
    expect(tabwrite("ééééééé\tb\na\tc\n")).toBe("ééééééé\tb\na\tc\n");
  });

  it("writes a trailing line without a newline as is", () => {
    expect(tabwrite("abc\tdefgh\tx")).toBe("abc\tdefgh\tx");
    expect(tabwrite("")).toBe("");
    expect(tabwrite("\n\n")).toBe("\n\n");
  });

  it("ends all columns at a form feed, written as a newline", () => {
    expect(tabwrite("aaaaaaaaaa\tb\fc\td\n")).toBe("aaaaaaaaaa\tb\nc\td\n");
  });

  it("supports other configurations: space padding and large tab stops", () => {
    expect(tabwrite("a\tbbb\nccc\td\n", { minwidth: 0, tabwidth: 8, padding: 1, padchar: " " })).toBe(
      "a   bbb\nccc d\n",
    );
    const input = "a\tb\t\td\na\tb\t\td\te\na\na\tb\tc\td\na\tb\tc\td\te\n";
    expect(tabwrite(input, { minwidth: 100, tabwidth: 100, padding: 0, padchar: "\t" })).toBe(input);
  });
});
