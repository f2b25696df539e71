/**
 * Log output: JSON Lines, one object per record, through LogTape: on a
 * stream (stdout in production), or, where OpenTelemetry collects the logs
 * (`OTEL_DENO=true`, and Deno Deploy), through the console, whose lines
 * Deno's built-in OpenTelemetry exports as log records (what it writes to
 * `Deno.stdout` it does not), each with the severity of the console method
 * that wrote it.
 *
 * @module
 */
import {
  configure,
  dispose,
  getStreamSink,
  type LogLevel as RecordLevel,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
import type { LogLevel } from "../config.ts";

/** The root category of every logger of the service. */
export const LOG_CATEGORY = "verve";

/** Where {@link configureLogging} writes. */
export interface LoggingOptions {
  /**
   * The stream of the JSON lines.
   * @default {Deno.stdout.writable}
   */
  stream?: WritableStream<Uint8Array>;
  /**
   * Write through the console instead, for OpenTelemetry to export each
   * line as a log record: `debug` and `trace` with `console.debug`, `info`
   * with `console.info` (both on stdout), `warning` with `console.warn`,
   * `error` and `fatal` with `console.error` (both on stderr).
   * @default {false}
   */
  console?: boolean;
}

/** The console method that writes records of each level. */
const CONSOLE_METHODS: Record<
  RecordLevel,
  "debug" | "info" | "warn" | "error"
> = {
  trace: "debug",
  debug: "debug",
  info: "info",
  warning: "warn",
  error: "error",
  fatal: "error",
};

/** A sink that writes each record's JSON line with its level's console method. */
export function consoleJsonSink(
  target: Pick<Console, "debug" | "info" | "warn" | "error"> = console,
): Sink {
  return (record) => {
    target[CONSOLE_METHODS[record.level]](formatJsonLine(record).trimEnd());
  };
}

/**
 * Sends every log record of the service's categories at `level` and above
 * as JSON Lines, e.g.
 * `{"@timestamp":"…","level":"INFO","message":"…","logger":"verve.report","properties":{…}}`,
 * to a stream, or through the console (see {@link LoggingOptions}).
 *
 * @returns A function that flushes pending lines and detaches the logger;
 *   later calls wait for the first one.
 */
export async function configureLogging(
  level: LogLevel,
  options: LoggingOptions = {},
): Promise<() => Promise<void>> {
  await configure({
    reset: true,
    sinks: {
      stream: options.console ? consoleJsonSink() : getStreamSink(
        options.stream ?? Deno.stdout.writable,
        { formatter: formatJsonLine },
      ),
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
