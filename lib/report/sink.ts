/**
 * The report and the sink interface every report output implements.
 *
 * @module
 */

import type { MinuteReport } from "../minute.ts";

export type { MinuteReport };

/**
 * What came of a delivery that did not fail: the destination took the
 * report (or the sink is done with it, for sinks that handle their own
 * failures), or part of it waits for an earlier window to reach the same
 * target first, which is not an attempt: the delivery tries it again soon.
 */
export type SendOutcome = "delivered" | "waiting";

/** A destination for window reports. */
export interface Sink {
  /** A short name for logs, e.g. `log` or `webhook`. */
  readonly name: string;
  /**
   * Delivers one report. Throws {@link PermanentSinkError} when retrying
   * cannot help, any other error for a retry on a later tick.
   *
   * @param report The report.
   * @param minute The window start in epoch ms, the report's identity.
   * @param earlier The earlier windows this sink still owes a report,
   *   oldest first; only given to sinks that keep order per target.
   */
  send(
    report: MinuteReport,
    minute: number,
    earlier?: number[],
  ): Promise<SendOutcome>;
  /**
   * Whether the sink keeps the order of windows per target itself, as the
   * webhook sink does per URL: its windows' deliveries then start side by
   * side, each told the earlier windows still owed. Otherwise the reporter
   * delivers the sink's windows one after another, oldest first.
   */
  readonly ordersPerTarget?: boolean;
  /**
   * The longest one `send` may take, in ms, when it can take long (many
   * targets, each tried several times): the outbox holds an entry at least
   * that long before another instance may try it.
   */
  readonly longestSendMs?: number;
  /** Releases connections the sink holds, at shutdown. */
  close?(): Promise<void>;
}

/**
 * A delivery failure that retrying cannot fix (bad credentials, unknown
 * topic, a request the destination refuses): the report is dropped, logged.
 */
export class PermanentSinkError extends Error {
  /** @param message What the destination said. */
  constructor(message: string) {
    super(message);
    this.name = "PermanentSinkError";
  }
}
