/**
 * Windows ("minutes"): their arithmetic and the shape of a window's report.
 * A window is identified by the epoch millisecond at which it starts; with
 * the default 60 000 ms window that is the start of a UTC minute. Every
 * folder of `lib/` may import this module; it imports nothing.
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

/** The default window length: one minute. */
export const MINUTE_MS = 60_000;

/**
 * Returns the start of the window that contains `epochMs`.
 *
 * @param epochMs A time in milliseconds since the Unix epoch.
 * @param windowMs The window length in milliseconds.
 * @returns The epoch millisecond at which the window starts.
 *
 * @example
 * ```ts
 * windowStart(Date.UTC(2026, 0, 1, 12, 30, 59, 999)); // Date.UTC(2026, 0, 1, 12, 30)
 * ```
 */
export function windowStart(epochMs: number, windowMs = MINUTE_MS): number {
  return Math.floor(epochMs / windowMs) * windowMs;
}

/**
 * Formats a window start as an ISO 8601 UTC timestamp, the form reports use.
 *
 * @param minute The window start in epoch milliseconds.
 * @returns For example `2026-01-01T12:30:00.000Z`.
 */
export function formatMinute(minute: number): string {
  return new Date(minute).toISOString();
}
