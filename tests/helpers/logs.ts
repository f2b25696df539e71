/**
 * Captures LogTape records in memory for assertions.
 *
 * @module
 */
import { configure, getLogger, type LogRecord, reset } from "@logtape/logtape";
import type { Logger } from "@logtape/logtape";

/** Captured records, and the logger that feeds them. */
export interface CapturedLogs extends AsyncDisposable {
  records: LogRecord[];
  /** A logger under the `test` category, captured at every level. */
  logger(name: string): Logger;
  /** Records whose category ends with `name`. */
  of(name: string): LogRecord[];
}

/** Routes every record of the `verve` and `test` categories into memory. */
export async function captureLogs(): Promise<CapturedLogs> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record) => records.push(record) },
    loggers: [
      { category: "test", lowestLevel: "trace", sinks: ["memory"] },
      { category: "verve", lowestLevel: "trace", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  return {
    records,
    logger: (name) => getLogger(["test", name]),
    of: (name) => records.filter((r) => r.category.at(-1) === name),
    async [Symbol.asyncDispose]() {
      await reset();
    },
  };
}
