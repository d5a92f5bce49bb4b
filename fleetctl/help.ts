// Help text in the layout of fleet's usage template (fleetctl/help.go): NAME, USAGE, VERSION,
// COMMANDS, DESCRIPTION, OPTIONS and GLOBAL OPTIONS, aligned by the same tabwriter.

import { COMMANDS, type CommandSpec, type FlagSpec, GLOBAL_FLAGS } from "./spec.js";
import { tabwrite } from "./tabwriter.js";
import { VERSION } from "./version.js";

const DESCRIPTION = "fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system.";

export function rootHelp(): string {
  let text = `NAME:\n\tfleetctl - ${DESCRIPTION}\n\n`;
  text += "USAGE:\n\tfleetctl [global options] <command> [command options] [arguments...]\n\n";
  text += `VERSION:\n\t${VERSION}\n\n`;
  text += "COMMANDS:\n";
  for (const c of COMMANDS) text += `\t${c.name}\t${c.short}\n`;
  text += `\nGLOBAL OPTIONS:\n${flagUsages(GLOBAL_FLAGS)}\n`;
  text += "Run 'fleetctl help <command>' for more information on a command.\n";
  return tabwrite(text);
}

export function commandHelp(cmd: CommandSpec): string {
  let text = `NAME:\n\tfleetctl ${cmd.name} - ${cmd.short}\n\n`;
  text += `USAGE:\n\tfleetctl ${cmd.use}\n`;
  if (cmd.long) text += `\nDESCRIPTION:\n\t${cmd.long}\n`;
  if (cmd.flags.length > 0) text += `\nOPTIONS:\n${flagUsages(cmd.flags)}`;
  text += `\nGLOBAL OPTIONS:\n${flagUsages(GLOBAL_FLAGS)}`;
  return tabwrite(text);
}

function flagUsages(flags: FlagSpec[]): string {
  return flags
    .map((f) => {
      const short = (f.aliases ?? []).filter((a) => a.length === 1).map((a) => `-${a}, `);
      const value = f.type === "bool" ? "" : `=${JSON.stringify(f.default)}`;
      return `\t${short.join("")}--${f.name}${value}\t${f.usage}\n`;
    })
    .join("");
}
