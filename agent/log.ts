// Structured JSON logs (pino) to stdout, which systemd sends to the journal.

import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { ...bindings }, timestamp: pino.stdTimeFunctions.isoTime });
}
