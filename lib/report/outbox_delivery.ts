/**
 * Outbox delivery: takes the reports due in the store's outbox, one attempt
 * each, hands them to their sinks, and writes what came of it back to the
 * outbox. Any instance may run it; a lease on each entry makes one attempt
 * run at a time across them. Each sink gets its windows in order: the next
 * window waits for the one before (webhooks keep the order per URL instead,
 * so one dead URL holds up no other). Failed attempts are retried with
 * backoff until they succeed or grow too old.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { backoffCap } from "../backoff.ts";
import { formatMinute } from "../minute.ts";
import { PermanentSinkError, type Sink } from "./sink.ts";
import { errorMessage } from "../telemetry/logging.ts";
import type { ServiceMetrics } from "../telemetry/service_metrics.ts";
import type {
  DeliveryOutcome,
  OutboxEntry,
  ReportStore,
} from "../store/store.ts";

/**
 * How long one delivery attempt holds its outbox entry before another
 * instance may take it over, by default: a minute more than the longest
 * `send` of any sink ({@link Sink.longestSendMs}), and two minutes at least.
 *
 * @example
 * ```ts
 * deliveryLeaseMs([{ name: "webhook", longestSendMs: 960_000, send }]); // 1 020 000
 * ```
 */
export function deliveryLeaseMs(sinks: readonly Sink[]): number {
  const longest = Math.max(0, ...sinks.map((sink) => sink.longestSendMs ?? 0));
  return Math.max(120_000, 60_000 + longest);
}

/** How long deliveries hold, wait and keep trying. */
export interface DeliveryTiming {
  /**
   * How long a report may wait in the outbox for a sink that keeps failing
   * before it is dropped (and logged), in ms. Default: 3 600 000.
   */
  maxAgeMs?: number;
  /** The first retry delay of a failed delivery, in ms. Default: 10 000. */
  retryBaseMs?: number;
  /** The longest retry delay, in ms. Default: 300 000. */
  retryMaxMs?: number;
  /**
   * How long one delivery attempt holds its outbox entry before another
   * instance may try it, in ms. Default: {@link deliveryLeaseMs} of the
   * sinks.
   */
  leaseMs?: number;
}

/** An outbox entry that may start an attempt now. */
export interface DueDelivery {
  entry: OutboxEntry;
  /** Its sink; `undefined` when no sink of that name is configured. */
  sink: Sink | undefined;
  /** The earlier windows its sink still owes a report, oldest first. */
  earlier: number[];
}

/** Options of {@link dueDeliveries}. */
export interface DueDeliveriesOptions {
  /** The configured sinks, by name. */
  sinks: ReadonlyMap<string, Sink>;
  /** The current time in epoch ms. */
  now: number;
  /** The attempts this instance has under way, by {@link attemptKey}. */
  busy: ReadonlySet<string>;
}

/**
 * Which outbox entries may start an attempt now: those whose time has come
 * and that this instance is not attempting already, and, for a sink that
 * does not keep order per target itself, only its oldest window.
 */
export function dueDeliveries(
  entries: OutboxEntry[],
  options: DueDeliveriesOptions,
): DueDelivery[] {
  const { sinks, now, busy } = options;
  const owed = new Map<string, number[]>();
  const due: DueDelivery[] = [];
  for (const entry of [...entries].sort((a, b) => a.minute - b.minute)) {
    const earlier = owed.get(entry.sink) ?? [];
    owed.set(entry.sink, [...earlier, entry.minute]);
    const sink = sinks.get(entry.sink);
    if (earlier.length > 0 && sink && !sink.ordersPerTarget) continue;
    if (entry.notBefore > now || busy.has(attemptKey(entry))) continue;
    due.push({ entry, sink, earlier });
  }
  return due;
}

/** What comes of a failed attempt. */
export type FailureAction =
  /** Counted, and tried again after `delayMs`. */
  | { action: "retry"; delayMs: number }
  /** Counted, and given up: refused for good, or too old. */
  | { action: "drop"; reason: "refused" | "too old" };

/** Options of {@link failureAction}. */
export interface FailureActionOptions
  extends Required<Omit<DeliveryTiming, "leaseMs">> {
  /** The current time in epoch ms. */
  now: number;
}

/**
 * What comes of an attempt of `entry` that failed with `error`. A sink's
 * entries wait the same for the same attempt, so the order of windows and
 * the lease need no jitter.
 */
export function failureAction(
  error: unknown,
  entry: OutboxEntry,
  options: FailureActionOptions,
): FailureAction {
  const { now, ...timing } = options;
  if (error instanceof PermanentSinkError) {
    return { action: "drop", reason: "refused" };
  }
  if (now - entry.createdAt >= timing.maxAgeMs) {
    return { action: "drop", reason: "too old" };
  }
  const delayMs = backoffCap(entry.attempts, {
    baseMs: timing.retryBaseMs,
    maxMs: timing.retryMaxMs,
  });
  return { action: "retry", delayMs };
}

/** The key of an entry among the attempts under way: `minute/sink`. */
export function attemptKey(
  entry: Pick<OutboxEntry, "minute" | "sink">,
): string {
  return `${entry.minute}/${entry.sink}`;
}

/** Options of {@link OutboxDelivery}. */
export interface OutboxDeliveryOptions {
  /** The store whose outbox holds the reports. */
  store: ReportStore;
  /** The configured sinks. */
  sinks: Sink[];
  /** Where delivery problems are logged. */
  logger: Logger;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
  /** How long deliveries hold, wait and keep trying. */
  timing?: DeliveryTiming;
  /** Metrics to count deliveries and the outbox in. */
  metrics?: ServiceMetrics;
  /**
   * Aborted at shutdown: no delivery starts after it (one would fail at
   * once and count an attempt); those under way finish.
   */
  signal?: AbortSignal;
}

/** Delivers the reports of a store's outbox to their sinks. */
export class OutboxDelivery {
  readonly #store: ReportStore;
  readonly #sinks: ReadonlyMap<string, Sink>;
  readonly #logger: Logger;
  readonly #clock: () => number;
  readonly #timing: Required<DeliveryTiming>;
  readonly #metrics: ServiceMetrics | undefined;
  readonly #signal: AbortSignal | undefined;
  /** Every delivery and pass started and not yet finished. */
  readonly #running = new Set<Promise<void>>();
  /** The entries this instance is attempting, by {@link attemptKey}. */
  readonly #busy = new Set<string>();
  /** The pass {@link OutboxDelivery.#rerun} started, while it runs. */
  #rerunPass: Promise<void> | undefined;
  /** Whether a delivery finished while that pass ran. */
  #rerunAgain = false;

  /** @param options The store, the sinks and how to deliver. */
  constructor(options: OutboxDeliveryOptions) {
    const { timing = {} } = options;
    this.#store = options.store;
    this.#sinks = new Map(options.sinks.map((sink) => [sink.name, sink]));
    this.#logger = options.logger;
    this.#clock = options.clock ?? Date.now;
    this.#timing = {
      maxAgeMs: timing.maxAgeMs ?? 3_600_000,
      retryBaseMs: timing.retryBaseMs ?? 10_000,
      retryMaxMs: timing.retryMaxMs ?? 300_000,
      leaseMs: timing.leaseMs ?? deliveryLeaseMs(options.sinks),
    };
    this.#metrics = options.metrics;
    this.#signal = options.signal;
  }

  /**
   * Starts every due delivery of the outbox that nobody else holds. The
   * deliveries run in the background; see {@link OutboxDelivery.idle}.
   */
  async deliverDue(): Promise<void> {
    if (this.#signal?.aborted) return;
    let entries: OutboxEntry[];
    try {
      entries = await this.#store.listOutbox();
    } catch (error) {
      this.#logger.error("Cannot read the outbox; will retry: {error}", {
        error: errorMessage(error),
      });
      return;
    }
    this.#recordDepth(entries);
    const due = dueDeliveries(entries, {
      sinks: this.#sinks,
      now: this.#clock(),
      busy: this.#busy,
    });
    for (const { entry, sink, earlier } of due) {
      if (this.#signal?.aborted) return;
      if (sink === undefined) await this.#dropUnconfigured(entry);
      else if (await this.#lease(entry)) this.#start(sink, entry, earlier);
    }
  }

  /** Resolves once every delivery started so far has finished. */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }

  /** The deliveries running now, as `<sink> <window start>`. */
  inProgress(): string[] {
    return [...this.#busy].map((key) => {
      const [minute, sink] = key.split("/");
      return `${sink} ${formatMinute(Number(minute))}`;
    });
  }

  #recordDepth(entries: OutboxEntry[]): void {
    if (!this.#metrics) return;
    const depth = new Map([...this.#sinks.keys()].map((name) => [name, 0]));
    for (const { sink } of entries) depth.set(sink, (depth.get(sink) ?? 0) + 1);
    for (const [sink, count] of depth) {
      this.#metrics.outboxDepth.set(count, [sink]);
    }
  }

  /**
   * A sink taken out of the configuration: its reports wait in case it
   * comes back, then age out like any other.
   */
  async #dropUnconfigured(entry: OutboxEntry): Promise<void> {
    if (this.#clock() - entry.createdAt < this.#timing.maxAgeMs) return;
    this.#logger.error("No sink {sink} is configured; dropped: {minute}", {
      sink: entry.sink,
      minute: entry.report.minute,
      report: entry.report,
    });
    await this.#store.removeOutbox(entry, "dropped", this.#clock())
      .catch(() => {});
  }

  /** Takes `entry` for one attempt, unless this or another instance has. */
  async #lease(entry: OutboxEntry): Promise<boolean> {
    // Another pass of this instance may have taken it since it was listed.
    if (this.#busy.has(attemptKey(entry))) return false;
    try {
      const until = this.#clock() + this.#timing.leaseMs;
      return await this.#store.updateOutbox(entry, { notBefore: until });
    } catch (error) {
      this.#logger.error(
        "Cannot take {minute} for {sink}; will retry: {error}",
        {
          sink: entry.sink,
          minute: entry.report.minute,
          error: errorMessage(error),
        },
      );
      return false;
    }
  }

  #start(sink: Sink, entry: OutboxEntry, earlier: number[]): void {
    const key = attemptKey(entry);
    this.#busy.add(key);
    this.#track(
      this.#attempt(sink, entry, earlier).finally(() => this.#busy.delete(key)),
    );
  }

  /** Keeps `work` among what {@link OutboxDelivery.idle} waits for. */
  #track(work: Promise<void>): void {
    const tracked = work.finally(() => this.#running.delete(tracked));
    this.#running.add(tracked);
  }

  /** One attempt; what came of it goes back to the outbox. */
  async #attempt(
    sink: Sink,
    entry: OutboxEntry,
    earlier: number[],
  ): Promise<void> {
    try {
      let outcome: DeliveryOutcome = "delivered";
      try {
        const sent = await sink.send(
          entry.report,
          entry.minute,
          ...(sink.ordersPerTarget ? [earlier] : []),
        );
        if (sent === "waiting") {
          // Not an attempt: due again at once, it goes as soon as the
          // window before it is delivered (that removal starts the due ones
          // again), or next tick.
          await this.#store.updateOutbox(entry, { notBefore: this.#clock() });
          return;
        }
        this.#metrics?.reports.inc([sink.name, "delivered"]);
      } catch (error) {
        if (!await this.#failed(sink, entry, error)) return;
        outcome = "dropped";
      }
      await this.#store.removeOutbox(entry, outcome, this.#clock());
      // The sink's next window (or one waiting for this one) may go now,
      // not a tick later.
      this.#rerun();
    } catch (error) {
      // The lease runs out and a later pass tries again.
      this.#logger.error(
        "Cannot update the outbox for {sink} on {minute}: {error}",
        {
          sink: sink.name,
          minute: entry.report.minute,
          error: errorMessage(error),
        },
      );
    }
  }

  /**
   * Acts on a failed attempt as {@link failureAction} says: a retry counts
   * the attempt, logs it and puts the entry back for later; a drop counts
   * and logs it.
   *
   * @returns `true` when the entry is given up and is to be removed.
   */
  async #failed(
    sink: Sink,
    entry: OutboxEntry,
    error: unknown,
  ): Promise<boolean> {
    const now = this.#clock();
    const verdict = failureAction(error, entry, { ...this.#timing, now });
    const { report } = entry;
    const attempt = entry.attempts + 1;
    switch (verdict.action) {
      case "retry":
        this.#metrics?.reports.inc([sink.name, "retry"]);
        this.#logger.warn(
          "Sink {sink} failed on {minute} (attempt {attempt}), retrying in {delayMs} ms: {error}",
          {
            sink: sink.name,
            minute: report.minute,
            attempt,
            delayMs: verdict.delayMs,
            error: errorMessage(error),
          },
        );
        await this.#store.updateOutbox(entry, {
          attempts: entry.attempts + 1,
          notBefore: now + verdict.delayMs,
        });
        return false;
      case "drop":
        this.#metrics?.reports.inc([sink.name, "dropped"]);
        this.#logger.error(
          verdict.reason === "refused"
            ? "Sink {sink} refused the report of {minute}, dropped: {error}"
            : "Sink {sink} failed on {minute} {attempt} times, dropped: {error}",
          {
            sink: sink.name,
            minute: report.minute,
            attempt,
            error: errorMessage(error),
            report,
          },
        );
        return true;
    }
  }

  /**
   * Runs {@link OutboxDelivery.deliverDue} again after a delivery finished.
   * Deliveries that finish while a pass runs share one more pass after it,
   * instead of each reading the whole outbox.
   */
  #rerun(): void {
    if (this.#rerunPass) {
      this.#rerunAgain = true;
      return;
    }
    this.#rerunPass = (async () => {
      try {
        do {
          this.#rerunAgain = false;
          await this.deliverDue();
        } while (this.#rerunAgain);
      } finally {
        // At once, with no await after the last check: a delivery that
        // finishes from here on starts a pass of its own.
        this.#rerunPass = undefined;
      }
    })();
    this.#track(this.#rerunPass);
  }
}
