/**
 * Log output: JSON Lines on a stream (stdout in production), one object per
 * record, through LogTape.
 *
 * @module
 */
import {
  configure,
  dispose,
  getJsonLinesFormatter,
  getStreamSink,
} from "@logtape/logtape";
import type { LogLevel } from "./config.ts";

/** The root category of every logger of the service. */
export const LOG_CATEGORY = "verve";

/**
 * Sends every log record of the service's categories at `level` and above to
 * `stream` as JSON Lines, e.g.
 * `{"@timestamp":"…","level":"INFO","message":"…","logger":"verve.report","properties":{…}}`.
 *
 * @returns A function that flushes pending lines and detaches the logger.
 */
export async function configureLogging(
  level: LogLevel,
  stream: WritableStream<Uint8Array> = Deno.stdout.writable,
): Promise<() => Promise<void>> {
  await configure({
    reset: true,
    sinks: {
      stream: getStreamSink(stream, {
        formatter: getJsonLinesFormatter({ properties: "nest:properties" }),
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
  return dispose;
}
