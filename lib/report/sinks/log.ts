/**
 * The log sink: each report as one structured log line.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { MinuteReport, SendOutcome, Sink } from "../sink.ts";

/**
 * Creates a sink that writes each report at info level to `logger`, with the
 * report's fields as the record's properties.
 *
 * @example
 * ```ts
 * const sink = createLogSink(getLogger(["verve", "report"]));
 * ```
 */
export function createLogSink(logger: Logger): Sink {
  return {
    name: "log",
    send(report: MinuteReport): Promise<SendOutcome> {
      logger.info(
        "Window {minute} had {unique_ids} unique ids",
        { ...report },
      );
      return Promise.resolve("delivered");
    },
  };
}
