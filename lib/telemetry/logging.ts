/**
 * Log output: JSON Lines on a stream (stdout in production), one object per
 * record, through LogTape.
 *
 * @module
 */
import {
  configure,
  dispose,
  getStreamSink,
  type LogRecord,
} from "@logtape/logtape";
import type { LogLevel } from "../config.ts";

/** The root category of every logger of the service. */
export const LOG_CATEGORY = "verve";

/**
 * Sends every log record of the service's categories at `level` and above to
 * `stream` as JSON Lines, e.g.
 * `{"@timestamp":"…","level":"INFO","message":"…","logger":"verve.report","properties":{…}}`.
 *
 * @returns A function that flushes pending lines and detaches the logger;
 *   later calls wait for the first one.
 */
export async function configureLogging(
  level: LogLevel,
  stream: WritableStream<Uint8Array> = Deno.stdout.writable,
): Promise<() => Promise<void>> {
  await configure({
    reset: true,
    sinks: {
      stream: getStreamSink(stream, {
        formatter: formatJsonLine,
      }),
    },
    loggers: [
      { category: LOG_CATEGORY, lowestLevel: level, sinks: ["stream"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["stream"],
      },
    ],
  });
  let disposed: Promise<void> | undefined;
  return () => disposed ??= dispose();
}

/**
 * Formats one record as a JSON line. Values in the message appear as they
 * are (strings without quotes); bigints become decimal strings.
 *
 * @example
 * ```ts
 * formatJsonLine(record);
 * // {"@timestamp":"2026-01-01T12:01:02.000Z","level":"INFO","message":"Window 2026-01-01T12:00:00.000Z had 3 unique ids","logger":"verve.report","properties":{…}}
 * ```
 */
export function formatJsonLine(record: LogRecord): string {
  const message = record.message
    .map((part, i) =>
      i % 2 === 0 || typeof part === "string" ? part : json(part)
    )
    .join("");
  return json({
    "@timestamp": new Date(record.timestamp).toISOString(),
    level: record.level.toUpperCase(),
    message,
    logger: record.category.join("."),
    properties: record.properties,
  }) + "\n";
}

function json(value: unknown): string {
  return JSON.stringify(
    value,
    (_, v) => typeof v === "bigint" ? v.toString() : v,
  ) ?? String(value);
}

/**
 * An error's message for a log line: `error.message`, or the thrown value
 * as text when it is not an `Error`.
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
