/**
 * The reporter: turns closed windows into reports, exactly once across every
 * instance that shares the store, and hands them to the sinks.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatMinute, windowStart } from "./minute.ts";
import type { MinuteReport, Sink } from "./sink.ts";
import type { Store } from "./store.ts";

/** Options of {@link createReporter}. */
export interface ReporterOptions {
  /** The shared store. */
  store: Store;
  /** Where reports go. */
  sinks: Sink[];
  /** Where the reporter logs its own problems. */
  logger: Logger;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
  /** The window length in ms. Default: 60 000. */
  windowMs?: number;
  /** How long after a window closes it becomes due, in ms. Default: 2000. */
  graceMs?: number;
  /** This instance's name in report claims. Default: a random UUID. */
  instanceId?: string;
  /**
   * How long a claim may stay unfinished before another instance takes it
   * over, in ms. Default: 60 000.
   */
  leaseMs?: number;
}

/** Reports closed windows. */
export interface Reporter {
  /**
   * Reports every due window not yet reported: the previous window (even
   * with no ids), and any older window that still has unreported ids, e.g.
   * after downtime. Sinks run in the background; see {@link Reporter.idle}.
   *
   * @returns The reports this call made, oldest first.
   */
  reportDue(): Promise<MinuteReport[]>;
  /** Resolves once every sink delivery started so far has finished. */
  idle(): Promise<void>;
}

/**
 * Creates a reporter.
 *
 * @example
 * ```ts
 * const reporter = createReporter({ store, sinks: [createLogSink(logger)], logger });
 * Deno.cron("report-unique-ids", "* * * * *", () => reporter.reportDue());
 * ```
 */
export function createReporter(options: ReporterOptions): Reporter {
  const {
    store,
    sinks,
    logger,
    clock = Date.now,
    windowMs = 60_000,
    graceMs = 2000,
    instanceId = crypto.randomUUID(),
    leaseMs = 60_000,
  } = options;
  const deliveries = new Set<Promise<void>>();

  function dispatch(report: MinuteReport, minute: number) {
    for (const sink of sinks) {
      const delivery = sink.send(report, minute).catch((error) => {
        logger.error("Sink {sink} failed on {minute}: {error}", {
          sink: sink.name,
          minute: report.minute,
          error: error instanceof Error ? error.message : String(error),
        });
      });
      deliveries.add(delivery);
      delivery.finally(() => deliveries.delete(delivery));
    }
  }

  async function reportWindow(
    minute: number,
  ): Promise<MinuteReport | undefined> {
    const claim = await store.claimReport(minute, instanceId, clock(), leaseMs);
    if (!claim.claimed) return undefined;
    const uniqueIds = await store.countIds(minute);
    await store.completeReport(minute, instanceId, uniqueIds);
    const report: MinuteReport = {
      minute: formatMinute(minute),
      unique_ids: uniqueIds,
      window_ms: windowMs,
      reported_at: new Date(clock()).toISOString(),
    };
    dispatch(report, minute);
    return report;
  }

  return {
    async reportDue(): Promise<MinuteReport[]> {
      const now = clock();
      const due = new Set<number>();
      const previous = windowStart(now, windowMs) - windowMs;
      if (previous + windowMs + graceMs <= now) due.add(previous);
      try {
        for (const minute of await store.unreportedWindows()) {
          if (minute + windowMs + graceMs <= now) due.add(minute);
        }
      } catch (error) {
        logger.error("Cannot list unreported windows: {error}", {
          error: error instanceof Error ? error.message : String(error),
        });
      }
      const reports: MinuteReport[] = [];
      for (const minute of [...due].sort((a, b) => a - b)) {
        try {
          const report = await reportWindow(minute);
          if (report) reports.push(report);
        } catch (error) {
          logger.error("Cannot report {minute}; will retry: {error}", {
            minute: formatMinute(minute),
            error: error instanceof Error ? error.message : String(error),
          });
        }
      }
      return reports;
    },
    async idle(): Promise<void> {
      while (deliveries.size > 0) await Promise.allSettled([...deliveries]);
    },
  };
}
