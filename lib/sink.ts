/**
 * The report and the sink interface every report output implements.
 *
 * @module
 */

/** One window's report, as written to the log and POSTed to webhooks. */
export interface MinuteReport {
  /** The window start, ISO 8601 UTC, e.g. `2026-01-01T12:30:00.000Z`. */
  minute: string;
  /** The exact number of distinct ids recorded in the window. */
  unique_ids: number;
  /** The window length in ms (60 000 in production). */
  window_ms: number;
  /** When the report was made, ISO 8601 UTC. */
  reported_at: string;
}

/** A destination for window reports. */
export interface Sink {
  /** A short name for logs, e.g. `log` or `webhook`. */
  readonly name: string;
  /**
   * Delivers one report. Resolves when the sink is done with it (delivered
   * or given up, which the sink logs itself); it does not throw.
   *
   * @param report The report.
   * @param minute The window start in epoch ms, the report's identity.
   */
  send(report: MinuteReport, minute: number): Promise<void>;
}
