/**
 * The reporter: turns closed windows into reports, exactly once across every
 * instance that shares the store. A report enters the store's outbox, once
 * per sink, in the same step that marks its window reported; the outbox
 * delivery ({@link OutboxDelivery}) takes it from there.
 *
 * A window that cannot be reported on a tick (its claim or its completion
 * failed) holds up no later window: it stays due and goes on a later tick,
 * so a sink may get it after a later window. The order per sink holds among
 * the reports in the outbox. A window with ids stays due in the store; one
 * without (its report is a zero) is remembered by the instance that failed
 * on it, up to {@link MAX_RETRIED_WINDOWS}.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { formatMinute, windowStart } from "../minute.ts";
import { type DeliveryTiming, OutboxDelivery } from "./outbox_delivery.ts";
import type { MinuteReport, Sink } from "./sink.ts";
import { errorMessage } from "../telemetry/logging.ts";
import type { ServiceMetrics } from "../telemetry/service_metrics.ts";
import type { IdStore, ReportStore } from "../store/store.ts";

/**
 * The most windows a reporter remembers to try again after their report
 * failed: a day of one-minute windows. Past it, the oldest is given up,
 * logged; one with ids is still listed by the store.
 */
export const MAX_RETRIED_WINDOWS = 1440;

/** Options of {@link createReporter}. */
export interface ReporterOptions {
  /** The shared store: its counts, its claims and its outbox. */
  store: Pick<IdStore, "countIds"> & ReportStore;
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
  /**
   * When this instance started, in epoch ms by `clock`: a window that ended
   * before it is reported only when it has ids (no instance may have been
   * running to count it). Default: `-Infinity`, every previous window is
   * reported, with no ids as 0 (on Deno Deploy an instance runs whenever a
   * request comes, so a window without one had none).
   */
  startedAt?: number;
  /** This instance's name in report claims. Default: a random UUID. */
  instanceId?: string;
  /**
   * How long a claim may stay unfinished before another instance takes it
   * over, in ms. Default: 60 000.
   */
  leaseMs?: number;
  /** How deliveries hold, wait and keep trying. */
  delivery?: DeliveryTiming;
  /** Metrics to count deliveries and the outbox in. */
  metrics?: ServiceMetrics;
  /**
   * Aborted at shutdown: no delivery starts after it (one would fail at
   * once and count an attempt); those under way finish.
   */
  signal?: AbortSignal;
}

/** Reports closed windows. */
export interface Reporter {
  /**
   * Reports every due window not yet reported: the previous window (even
   * with no ids, unless it ended before `startedAt`), and any older window that still has unreported ids, e.g.
   * after downtime; then starts every due delivery in the outbox. Sinks run
   * in the background; see {@link Reporter.idle}.
   *
   * @returns The reports this call made, oldest first.
   */
  reportDue(): Promise<MinuteReport[]>;
  /** Resolves once every sink delivery started so far has finished. */
  idle(): Promise<void>;
  /**
   * The deliveries running now, as `<sink> <window start>`: what a shutdown
   * that cannot wait for them leaves to their lease and a later attempt.
   */
  deliveriesInProgress(): string[];
}

/**
 * The windows due for a report at `now`, oldest first: the previous window
 * (unless it ended before `startedAt`), and every window of `unreported`
 * that closed, each once its grace passed.
 */
export function dueWindows(
  now: number,
  unreported: number[],
  options: { windowMs: number; graceMs: number; startedAt?: number },
): number[] {
  const { windowMs, graceMs, startedAt = -Infinity } = options;
  const previous = windowStart(now, windowMs) - windowMs;
  const watched = previous + windowMs > startedAt ? [previous] : [];
  const due = new Set(
    [...watched, ...unreported].filter((minute) =>
      minute + windowMs + graceMs <= now
    ),
  );
  return [...due].sort((a, b) => a - b);
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
    startedAt = -Infinity,
  } = options;
  const delivery = new OutboxDelivery({
    store,
    sinks,
    logger,
    clock,
    ...(options.delivery ? { timing: options.delivery } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });

  /**
   * Claims, counts and completes one window's report.
   *
   * @returns The report, or why there is none: the window is `reported`
   *   already, or `claimed` by a report under way (another instance's, or
   *   one of this instance's that failed, until its lease ends).
   */
  async function reportWindow(
    minute: number,
  ): Promise<MinuteReport | "reported" | "claimed"> {
    const claim = await store.claimReport(minute, instanceId, clock(), leaseMs);
    if (!claim.claimed) return claim.reason;
    const uniqueIds = await store.countIds(minute);
    const report: MinuteReport = {
      minute: formatMinute(minute),
      unique_ids: uniqueIds,
      window_ms: windowMs,
      reported_at: new Date(clock()).toISOString(),
    };
    await store.completeReport(minute, instanceId, uniqueIds, {
      report,
      sinks: sinks.map((sink) => sink.name),
      now: clock(),
    });
    return report;
  }

  /** Windows whose report failed here, to try again on the next tick. */
  const failed = new Set<number>();

  /** Remembers that `minute`'s report failed, within the bound. */
  function rememberFailed(minute: number): void {
    failed.add(minute);
    if (failed.size <= MAX_RETRIED_WINDOWS) return;
    const oldest = Math.min(...failed);
    failed.delete(oldest);
    logger.error(
      "Gave up retrying the report of {minute} here: more than {max} windows failed",
      { minute: formatMinute(oldest), max: MAX_RETRIED_WINDOWS },
    );
  }

  /** The unreported windows, or none when the store cannot list them. */
  async function unreportedWindows(): Promise<number[]> {
    try {
      return await store.unreportedWindows();
    } catch (error) {
      logger.error("Cannot list unreported windows: {error}", {
        error: errorMessage(error),
      });
      return [];
    }
  }

  return {
    async reportDue(): Promise<MinuteReport[]> {
      const now = clock();
      const unreported = [...await unreportedWindows(), ...failed];
      const due = dueWindows(now, unreported, { windowMs, graceMs, startedAt });
      const reports: MinuteReport[] = [];
      for (const minute of due) {
        try {
          const report = await reportWindow(minute);
          if (typeof report === "object") reports.push(report);
          // A claim under way may be one of this instance's that failed.
          if (report !== "claimed") failed.delete(minute);
        } catch (error) {
          rememberFailed(minute);
          logger.error("Cannot report {minute}; will retry: {error}", {
            minute: formatMinute(minute),
            error: errorMessage(error),
          });
        }
      }
      await delivery.deliverDue();
      return reports;
    },
    idle: () => delivery.idle(),
    deliveriesInProgress: () => delivery.inProgress(),
  };
}
