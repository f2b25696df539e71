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
  /**
   * The first record whose category ends with `name`, once there is one;
   * rejects when none came within `timeoutMs` (default 5000).
   */
  first(name: string, timeoutMs?: number): Promise<LogRecord>;
}

/** Routes every record of the `verve` and `test` categories into memory. */
export async function captureLogs(): Promise<CapturedLogs> {
  const records: LogRecord[] = [];
  const waiters = new Set<() => void>();
  const of = (name: string) =>
    records.filter((r) => r.category.at(-1) === name);
  await configure({
    reset: true,
    sinks: {
      memory: (record) => {
        records.push(record);
        for (const wake of waiters) wake();
      },
    },
    loggers: [
      { category: "test", lowestLevel: "trace", sinks: ["memory"] },
      { category: "verve", lowestLevel: "trace", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  return {
    records,
    logger: (name) => getLogger(["test", name]),
    of,
    first: (name, timeoutMs = 5000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`No ${name} log line within ${timeoutMs} ms`));
        }, timeoutMs);
        const check = () => {
          const found = of(name)[0];
          if (found === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        };
        waiters.add(check);
        check();
      }),
    async [Symbol.asyncDispose]() {
      await reset();
    },
  };
}
