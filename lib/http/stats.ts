/**
 * The service's recent history for `GET /api/verve/stats` and the status
 * page: per closed window its unique count and what became of its report in
 * each sink, the live count of the current window, and a summary per sink.
 *
 * @module
 */
import { formatMinute, windowStart } from "../minute.ts";
import type { Store } from "../store/store.ts";

/** The most windows one stats request may ask for. */
export const MAX_STATS_MINUTES = 1440;

/** The windows a stats request returns when it does not say. */
export const DEFAULT_STATS_MINUTES = 60;

/** What became of one window's report in one sink. */
export type SinkState =
  | { state: "delivered" | "dropped"; at: string; attempts: number }
  | { state: "pending"; attempts: number; next_attempt_at: string }
  | { state: "unknown" };

/** One closed window. */
export interface WindowEntry {
  /** The window start, ISO 8601 UTC. */
  minute: string;
  /** The reported count, or `null` when the window was not reported. */
  unique_ids: number | null;
  sinks: Record<string, SinkState>;
}

/** The answer of `GET /api/verve/stats`. */
export interface Stats {
  window_ms: number;
  generated_at: string;
  /** The window in progress and its count so far. */
  current: { minute: string; unique_ids: number };
  /** Sink names, in configuration order. */
  sinks: string[];
  /** Closed windows, oldest first. */
  minutes: WindowEntry[];
  /** Per sink: the latest delivery, and reports pending or dropped. */
  sink_summary: Record<
    string,
    { last_success: string | null; pending: number; dropped: number }
  >;
}

/** Options of {@link collectStats}. */
export interface StatsOptions {
  store: Store;
  /** Names of the configured sinks. */
  sinks: string[];
  windowMs: number;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
}

/**
 * Parses the `minutes` query parameter of a stats request.
 *
 * @returns The number of windows, or `undefined` when it is not a whole
 *   number from 1 to {@link MAX_STATS_MINUTES}.
 */
export function parseStatsMinutes(query: string): number | undefined {
  const params = new URLSearchParams(query);
  const values = params.getAll("minutes");
  if (values.length === 0) return DEFAULT_STATS_MINUTES;
  if (values.length > 1 || !/^\d{1,4}$/.test(values[0]!)) return undefined;
  const minutes = Number(values[0]);
  return minutes >= 1 && minutes <= MAX_STATS_MINUTES ? minutes : undefined;
}

/**
 * Collects the stats of the last `minutes` closed windows.
 *
 * @example
 * ```ts
 * const stats = await collectStats(60, { store, sinks: ["log"], windowMs: 60_000 });
 * stats.current.unique_ids; // ids so far in this minute
 * ```
 */
export async function collectStats(
  minutes: number,
  options: StatsOptions,
): Promise<Stats> {
  const { store, sinks, windowMs, clock = Date.now } = options;
  const now = clock();
  const current = windowStart(now, windowMs);
  const closed = Array.from(
    { length: minutes },
    (_, i) => current - (minutes - i) * windowMs,
  );
  const [live, known, outbox] = await Promise.all([
    store.countIds(current),
    store.windowStats(closed),
    store.listOutbox(),
  ]);
  const byMinute = new Map(known.map((w) => [w.minute, w]));
  const pending = new Map(outbox.map((e) => [`${e.minute}/${e.sink}`, e]));
  const summary: Stats["sink_summary"] = Object.fromEntries(
    sinks.map((sink) => [sink, { last_success: null, pending: 0, dropped: 0 }]),
  );
  for (const entry of outbox) {
    if (summary[entry.sink]) summary[entry.sink]!.pending++;
  }

  const entries = closed.map((minute): WindowEntry => {
    const window = byMinute.get(minute);
    const states: Record<string, SinkState> = {};
    for (const sink of sinks) {
      const record = window?.deliveries[sink];
      const waiting = pending.get(`${minute}/${sink}`);
      if (record) {
        states[sink] = {
          state: record.state,
          at: new Date(record.at).toISOString(),
          attempts: record.attempts,
        };
        if (record.state === "dropped") summary[sink]!.dropped++;
        const last = summary[sink]!.last_success;
        if (
          record.state === "delivered" &&
          (last === null || states[sink]!.at > last)
        ) {
          summary[sink]!.last_success = (states[sink] as { at: string }).at;
        }
      } else if (waiting) {
        states[sink] = {
          state: "pending",
          attempts: waiting.attempts,
          next_attempt_at: new Date(waiting.notBefore).toISOString(),
        };
      } else {
        states[sink] = { state: "unknown" };
      }
    }
    return {
      minute: formatMinute(minute),
      unique_ids: window?.uniqueIds ?? null,
      sinks: states,
    };
  });

  return {
    window_ms: windowMs,
    generated_at: new Date(now).toISOString(),
    current: { minute: formatMinute(current), unique_ids: live },
    sinks,
    minutes: entries,
    sink_summary: summary,
  };
}
