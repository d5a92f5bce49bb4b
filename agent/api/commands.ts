// `fleetctl status` and `fleetctl journal` without SSH: the agent on the unit's machine runs
// systemctl/journalctl itself. UnitCommands is what the API needs; SystemdCommands is the thin
// adapter that spawns the real programs (no shell: arguments go straight to execve).

import { spawn } from "node:child_process";
import { constants } from "node:os";
import { PassThrough, type Readable } from "node:stream";
import type { WireCommandOutput } from "./schema.js";

export interface JournalOptions {
  lines: number;
  output: string;
}

export interface UnitCommands {
  /** `systemctl status -l --no-pager UNIT`: its combined output and exit code. */
  status(unit: string): Promise<WireCommandOutput>;
  /** `journalctl --unit UNIT --no-pager -n LINES --output OUTPUT`. */
  journal(unit: string, opts: JournalOptions): Promise<WireCommandOutput>;
  /** As journal, with `--follow`: the output as it comes, until `signal` aborts or journalctl exits. */
  followJournal(unit: string, opts: JournalOptions, signal: AbortSignal): Readable;
}

/** journalctl's --output modes; anything else is refused before a process is spawned. */
export const JOURNAL_OUTPUTS = [
  "short",
  "short-full",
  "short-iso",
  "short-iso-precise",
  "short-precise",
  "short-monotonic",
  "short-delta",
  "short-unix",
  "with-unit",
  "verbose",
  "export",
  "json",
  "json-pretty",
  "json-sse",
  "json-seq",
  "cat",
] as const;

export function statusArgs(unit: string): string[] {
  return ["status", "-l", "--no-pager", "--", unit];
}

export function journalArgs(unit: string, opts: JournalOptions, follow: boolean): string[] {
  // --unit=X keeps a unit name from ever being read as an option.
  const args = [`--unit=${unit}`, "--no-pager", `--lines=${opts.lines}`, `--output=${opts.output}`];
  return follow ? [...args, "--follow"] : args;
}

export interface SystemdCommandsOptions {
  /** A non-following command is killed after this long. */
  timeoutMs?: number;
  /** Output beyond this many bytes is dropped, with a note at the end. */
  maxOutputBytes?: number;
}

export class SystemdCommands implements UnitCommands {
  private readonly timeoutMs: number;
  private readonly maxOutputBytes: number;

  constructor(opts: SystemdCommandsOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.maxOutputBytes = opts.maxOutputBytes ?? 8 * 1024 * 1024;
  }

  status(unit: string): Promise<WireCommandOutput> {
    return this.run("systemctl", statusArgs(unit));
  }

  journal(unit: string, opts: JournalOptions): Promise<WireCommandOutput> {
    return this.run("journalctl", journalArgs(unit, opts, false));
  }

  followJournal(unit: string, opts: JournalOptions, signal: AbortSignal): Readable {
    const out = new PassThrough();
    const child = spawn("journalctl", journalArgs(unit, opts, true), {
      stdio: ["ignore", "pipe", "pipe"],
      signal,
    });
    child.stdout.pipe(out, { end: false });
    child.stderr.pipe(out, { end: false });
    child.on("error", (err) => {
      // An abort is the normal end of a follow; anything else is worth a line in the stream.
      if (!signal.aborted) out.write(`journalctl: ${err.message}\n`);
    });
    child.on("close", () => out.end());
    return out;
  }

  private run(command: string, args: string[]): Promise<WireCommandOutput> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], timeout: this.timeoutMs });
      const chunks: Buffer[] = [];
      let size = 0;
      let truncated = false;
      const collect = (chunk: Buffer) => {
        if (size + chunk.length > this.maxOutputBytes) {
          truncated = true;
          chunks.push(chunk.subarray(0, Math.max(0, this.maxOutputBytes - size)));
          size = this.maxOutputBytes;
          return;
        }
        chunks.push(chunk);
        size += chunk.length;
      };
      child.stdout.on("data", collect);
      child.stderr.on("data", collect);
      child.on("error", (err) => reject(new Error(`cannot run ${command}: ${err.message}`)));
      child.on("close", (code, signal) => {
        let output = Buffer.concat(chunks).toString("utf8");
        if (truncated) output += `\n[output truncated at ${this.maxOutputBytes} bytes]\n`;
        if (signal) output += `\n[${command} was killed by ${signal}]\n`;
        // A killed command has no exit code; 128+n is what a shell would report.
        resolve({ exitCode: code ?? 128 + (signal ? constants.signals[signal] : 0), output });
      });
    });
  }
}
