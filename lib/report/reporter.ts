/**
 * The reporter: turns closed windows into reports, exactly once across every
 * instance that shares the store, and delivers them to the sinks through the
 * store's outbox: a report enters the outbox, once per sink, in the same step
 * that marks its window reported, and leaves it per sink only once that sink
 * took it. Failed deliveries are retried with backoff on later ticks, by
 * whichever instance ticks, until they succeed or grow too old. Each sink
 * gets its windows in order: the next window waits for the one before
 * (webhooks keep the order per URL instead, so one dead URL holds up no
 * other).
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { backoffCap } from "../backoff.ts";
import { formatMinute, windowStart } from "../minute.ts";
import {
  type MinuteReport,
  PermanentSinkError,
  type Sink,
  SinkWaitingError,
} from "./sink.ts";
import type { ServiceMetrics } from "../telemetry/service_metrics.ts";
import type { OutboxEntry, Store } from "../store/store.ts";

/** What bounds the longest delivery of one window's report. */
export interface DeliveryBounds {
  /** Attempts per webhook URL in one delivery (`WEBHOOK_ATTEMPTS`). */
  webhookAttempts: number;
  /** The time limit of one webhook attempt (`WEBHOOK_TIMEOUT_MS`). */
  webhookTimeoutMs: number;
  /** Distinct webhook URLs a window may have (`MAX_URLS_PER_WINDOW`). */
  maxUrlsPerWindow: number;
  /** Webhook POSTs in flight at once (`WEBHOOK_CONCURRENCY`). */
  webhookConcurrency: number;
}

/**
 * How long one delivery attempt holds its outbox entry before another
 * instance may take it over: long enough for the slowest sink, every webhook
 * URL of a window tried `webhookAttempts` times (each up to its time limit
 * and its backoff), `webhookConcurrency` at once, and at least two minutes.
 *
 * @example
 * ```ts
 * deliveryLeaseMs({
 *   webhookAttempts: 3,
 *   webhookTimeoutMs: 5000,
 *   maxUrlsPerWindow: 1000,
 *   webhookConcurrency: 32,
 * }); // 60 000 + 3 × 10 000 × 32 = 1 020 000
 * ```
 */
export function deliveryLeaseMs(bounds: DeliveryBounds): number {
  const rounds = Math.ceil(bounds.maxUrlsPerWindow / bounds.webhookConcurrency);
  return Math.max(
    120_000,
    60_000 + bounds.webhookAttempts * (bounds.webhookTimeoutMs + 5000) * rounds,
  );
}

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
  /**
   * How long a report may wait in the outbox for a sink that keeps failing
   * before it is dropped (and logged), in ms. Default: 3 600 000.
   */
  outboxMaxAgeMs?: number;
  /** The first retry delay of a failed delivery, in ms. Default: 10 000. */
  retryBaseMs?: number;
  /** The longest retry delay, in ms. Default: 300 000. */
  retryMaxMs?: number;
  /**
   * How long one delivery attempt holds its outbox entry before another
   * instance may try it, in ms. Default: 120 000.
   */
  deliveryLeaseMs?: number;
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
   * with no ids), and any older window that still has unreported ids, e.g.
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
  const {
    outboxMaxAgeMs = 3_600_000,
    retryBaseMs = 10_000,
    retryMaxMs = 300_000,
    deliveryLeaseMs = 120_000,
    metrics,
    signal,
  } = options;
  const sinksByName = new Map(sinks.map((sink) => [sink.name, sink]));
  const deliveries = new Set<Promise<void>>();
  /** Outbox entries this instance is delivering, by `minute/sink`. */
  const delivering = new Set<string>();

  async function reportWindow(
    minute: number,
  ): Promise<MinuteReport | undefined> {
    const claim = await store.claimReport(minute, instanceId, clock(), leaseMs);
    if (!claim.claimed) return undefined;
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

  /** Starts every due delivery of the outbox that nobody else holds. */
  async function deliverDue(): Promise<void> {
    if (signal?.aborted) return;
    let entries: OutboxEntry[];
    try {
      entries = await store.listOutbox();
      const depth = new Map(sinks.map((sink) => [sink.name, 0]));
      for (const { sink } of entries) {
        depth.set(sink, (depth.get(sink) ?? 0) + 1);
      }
      for (const [sink, count] of depth) {
        metrics?.outboxDepth.set(count, [sink]);
      }
    } catch (error) {
      logger.error("Cannot read the outbox; will retry: {error}", {
        error: describe(error),
      });
      return;
    }
    entries.sort((a, b) => a.minute - b.minute);
    /** Per sink, the windows of the entries seen so far: earlier ones. */
    const owed = new Map<string, number[]>();
    for (const entry of entries) {
      if (signal?.aborted) return;
      const key = `${entry.minute}/${entry.sink}`;
      const earlier = owed.get(entry.sink) ?? [];
      owed.set(entry.sink, [...earlier, entry.minute]);
      const sink = sinksByName.get(entry.sink);
      // A window waits until its sink has the ones before it.
      if (earlier.length > 0 && sink && !sink.ordersPerTarget) continue;
      if (entry.notBefore > clock() || delivering.has(key)) continue;
      if (sink === undefined) {
        // A sink taken out of the configuration: its reports wait in case it
        // comes back, then age out like any other.
        if (clock() - entry.createdAt >= outboxMaxAgeMs) {
          logger.error("No sink {sink} is configured; dropped: {minute}", {
            sink: entry.sink,
            minute: entry.report.minute,
            report: entry.report,
          });
          await store.removeOutbox(entry, "dropped", clock()).catch(() => {});
        }
        continue;
      }
      try {
        if (!await store.leaseOutbox(entry, clock() + deliveryLeaseMs)) {
          continue;
        }
      } catch (error) {
        logger.error("Cannot take {minute} for {sink}; will retry: {error}", {
          sink: entry.sink,
          minute: entry.report.minute,
          error: describe(error),
        });
        continue;
      }
      delivering.add(key);
      track(
        deliver(sink, entry, earlier).finally(() => delivering.delete(key)),
      );
    }
  }

  /** A pass of {@link deliverDue} started by {@link rerunDeliveries}. */
  let rerun: Promise<void> | undefined;
  /** Whether a delivery finished while that pass ran. */
  let rerunAgain = false;

  /**
   * Runs {@link deliverDue} again after a delivery finished. Deliveries that
   * finish while a pass runs share one more pass after it, instead of each
   * reading the whole outbox.
   */
  function rerunDeliveries(): void {
    if (rerun) {
      rerunAgain = true;
      return;
    }
    rerun = (async () => {
      try {
        do {
          rerunAgain = false;
          await deliverDue();
        } while (rerunAgain);
      } finally {
        // At once, with no await after the last check: a delivery that
        // finishes from here on starts a pass of its own.
        rerun = undefined;
      }
    })();
    track(rerun);
  }

  /** Keeps `work` in the deliveries {@link Reporter.idle} waits for. */
  function track(work: Promise<void>): void {
    const tracked = work.finally(() => deliveries.delete(tracked));
    deliveries.add(tracked);
  }

  /** One delivery attempt; the outcome goes back to the outbox. */
  async function deliver(
    sink: Sink,
    entry: OutboxEntry,
    earlier: number[],
  ): Promise<void> {
    const { report } = entry;
    const attempt = entry.attempts + 1;
    let outcome: "delivered" | "dropped" = "delivered";
    try {
      try {
        await sink.send(
          report,
          entry.minute,
          ...(sink.ordersPerTarget ? [earlier] : []),
        );
        metrics?.reports.inc([sink.name, "delivered"]);
      } catch (error) {
        if (error instanceof SinkWaitingError) {
          // Not an attempt: due again at once, so it goes as soon as the
          // window before it is delivered (its removal starts the due ones
          // again), or on the next tick.
          await store.leaseOutbox(entry, clock());
          return;
        }
        const tooOld = clock() - entry.createdAt >= outboxMaxAgeMs;
        const retry = !(error instanceof PermanentSinkError) && !tooOld;
        metrics?.reports.inc([sink.name, retry ? "retry" : "dropped"]);
        outcome = "dropped";
        if (error instanceof PermanentSinkError) {
          logger.error(
            "Sink {sink} refused the report of {minute}, dropped: {error}",
            {
              sink: sink.name,
              minute: report.minute,
              error: error.message,
              report,
            },
          );
        } else if (tooOld) {
          logger.error(
            "Sink {sink} failed on {minute} {attempt} times, dropped: {error}",
            {
              sink: sink.name,
              minute: report.minute,
              attempt,
              error: describe(error),
              report,
            },
          );
        } else {
          // A sink's outbox entries wait the same for the same attempt: the
          // order of windows and the lease need no jitter.
          const delayMs = backoffCap(entry.attempts, {
            baseMs: retryBaseMs,
            maxMs: retryMaxMs,
          });
          logger.warn(
            "Sink {sink} failed on {minute} (attempt {attempt}), retrying in {delayMs} ms: {error}",
            {
              sink: sink.name,
              minute: report.minute,
              attempt,
              delayMs,
              error: describe(error),
            },
          );
          await store.retryOutbox(entry, clock() + delayMs);
          return;
        }
      }
      await store.removeOutbox(entry, outcome, clock());
      // The sink's next window (or one waiting for this one) may go now,
      // not a tick later.
      rerunDeliveries();
    } catch (error) {
      // The lease runs out and a later tick tries again.
      logger.error("Cannot update the outbox for {sink} on {minute}: {error}", {
        sink: sink.name,
        minute: report.minute,
        error: describe(error),
      });
    }
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
      await deliverDue();
      return reports;
    },
    async idle(): Promise<void> {
      while (deliveries.size > 0) await Promise.allSettled([...deliveries]);
    },
    deliveriesInProgress(): string[] {
      return [...delivering].map((key) => {
        const [minute, sink] = key.split("/");
        return `${sink} ${formatMinute(Number(minute))}`;
      });
    },
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
