// A port of Go's text/tabwriter for the flag-less configurations fleetctl uses
// (`tabwriter.NewWriter(w, 0, 8, 1, '\t', 0)`), so tables match fleet byte for byte.
//
// Semantics kept from Go:
// - A cell is text terminated by '\t' or '\v'; the text after the last tab of a line
//   is the line's last cell and never belongs to a column.
// - A column block is a run of consecutive lines that all have a cell in that column;
//   a line with fewer cells ends the block, and each block gets its own width.
// - Column width = max(cell width + padding), at least minwidth; widths are counted
//   in code points (Go counts runes).
// - With '\t' as padchar, padding is written as tabs: the cell width is rounded up
//   to a multiple of tabwidth and ceil(gap / tabwidth) tabs fill it. Empty cells in a
//   column still get padding.
// - '\f' (and a line with a single cell) flushes: later lines are formatted independently.

export interface TabWriterOptions {
  minwidth: number;
  tabwidth: number;
  padding: number;
  padchar: string;
}

/** fleetctl's configuration (fleetctl/help.go getTabOutWithWriter). */
const FLEET_TABWRITER: TabWriterOptions = { minwidth: 0, tabwidth: 8, padding: 1, padchar: "\t" };

interface Cell {
  text: string;
  width: number;
}

/** Formats `text` as Go's tabwriter would once it has been written and flushed. */
export function tabwrite(text: string, opts: TabWriterOptions = FLEET_TABWRITER): string {
  let out = "";
  let lines: Cell[][] = [[]];
  let cellText = "";

  const terminateCell = (): number => {
    const line = lines[lines.length - 1] as Cell[];
    line.push({ text: cellText, width: [...cellText].length });
    cellText = "";
    return line.length;
  };
  const flush = (): void => {
    out += format(lines, opts);
    lines = [[]];
  };

  for (const ch of text) {
    if (ch === "\t" || ch === "\v") {
      terminateCell();
    } else if (ch === "\n" || ch === "\f") {
      const ncells = terminateCell();
      lines.push([]);
      // Go flushes here because a one-cell line cannot influence the lines after it.
      if (ch === "\f" || ncells === 1) flush();
    } else {
      cellText += ch;
    }
  }
  if (cellText.length > 0) terminateCell();
  flush();
  return out;
}

/**
 * Renders buffered lines. The buffer always ends with the line still being filled
 * (empty after a newline), exactly like Go's `b.lines`; it gets no trailing newline.
 */
function format(lines: Cell[][], opts: TabWriterOptions): string {
  let out = "";
  const widths: number[] = [];

  const writeLines = (line0: number, line1: number): void => {
    for (let i = line0; i < line1; i++) {
      const line = lines[i] as Cell[];
      line.forEach((c, j) => {
        out += c.text;
        const w = widths[j];
        if (w !== undefined) out += padding(c.width, w, opts);
      });
      if (i + 1 < lines.length) out += "\n";
    }
  };

  const formatBlock = (line0In: number, line1: number): void => {
    let line0 = line0In;
    const column = widths.length;
    for (let t = line0; t < line1; t++) {
      if (column >= (lines[t] as Cell[]).length - 1) continue;
      // This line has a cell in `column`: print the lines before it, then size the block.
      writeLines(line0, t);
      line0 = t;
      let width = opts.minwidth;
      for (; t < line1; t++) {
        const line = lines[t] as Cell[];
        if (column >= line.length - 1) break;
        width = Math.max(width, (line[column] as Cell).width + opts.padding);
      }
      widths.push(width);
      formatBlock(line0, t);
      widths.pop();
      line0 = t;
    }
    writeLines(line0, line1);
  };

  formatBlock(0, lines.length);
  return out;
}

function padding(textw: number, cellw: number, opts: TabWriterOptions): string {
  if (opts.padchar === "\t") {
    if (opts.tabwidth === 0) return "";
    const rounded = Math.ceil(cellw / opts.tabwidth) * opts.tabwidth;
    return "\t".repeat(Math.ceil((rounded - textw) / opts.tabwidth));
  }
  return opts.padchar.repeat(cellw - textw);
}
