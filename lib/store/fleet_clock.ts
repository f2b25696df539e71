/**
 * The fleet's clock: the clock windows and reports follow. It is this
 * instance's clock corrected by the latest reading of a {@link ClockProbe}
 * (Redis's clock, or the median of the instances' clocks on Deno KV), so
 * that instances whose clocks disagree still put a request in the same
 * window and report a window only once every instance has left it. A clock
 * `warnMs` or more off is logged at warning level once per window.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { sleep } from "../backoff.ts";
import { formatMinute, windowStart } from "../minute.ts";
import { withinTime } from "../time_limit.ts";
import type { ClockProbe, ClockReading } from "./clock_probe.ts";

/** Options of {@link FleetClock}. */
export interface FleetClockOptions {
  /** Where readings come from. */
  probe: ClockProbe;
  /** Where a clock that is off is logged. */
  logger: Logger;
  /** The window length in ms: a clock that is off is logged once per window. */
  windowMs: number;
  /**
   * How often to take a reading, in ms; each wait is jittered by ±25 %.
   *
   * @default {1000}
   */
  periodMs?: number;
  /**
   * How far off this clock may be before it is logged, in ms.
   *
   * @default {1000}
   */
  warnMs?: number;
  /**
   * This instance's own clock, in epoch ms.
   *
   * @default {Date.now}
   */
  clock?: () => number;
  /** Called with every reading taken, e.g. to set a metric. */
  onReading?: (reading: ClockReading) => void;
}

/**
 * The fleet's clock, kept up to date by {@link FleetClock.run}.
 *
 * @example
 * ```ts
 * const fleet = new FleetClock({ probe, logger, windowMs: 60_000 });
 * fleet.run(signal);
 * await fleet.ready(3000);
 * const minute = windowStart(fleet.now());
 * ```
 */
export class FleetClock {
  readonly #probe: ClockProbe;
  readonly #logger: Logger;
  readonly #windowMs: number;
  readonly #periodMs: number;
  readonly #warnMs: number;
  readonly #clock: () => number;
  readonly #onReading: ((reading: ClockReading) => void) | undefined;
  #offsetMs = 0;
  #warnedWindow: number | undefined;
  #firstReading = Promise.withResolvers<void>();
  #failing = false;

  constructor(options: FleetClockOptions) {
    this.#probe = options.probe;
    this.#logger = options.logger;
    this.#windowMs = options.windowMs;
    this.#periodMs = options.periodMs ?? 1000;
    this.#warnMs = options.warnMs ?? 1000;
    this.#clock = options.clock ?? Date.now;
    this.#onReading = options.onReading;
  }

  /** The fleet's time in epoch ms; a function, to pass on as a clock. */
  readonly now = (): number => this.#clock() - this.#offsetMs;

  /** This clock minus the fleet's, in ms, as last read; 0 before. */
  get offsetMs(): number {
    return this.#offsetMs;
  }

  /**
   * Takes one reading and follows it.
   *
   * @returns The reading; `undefined` when there was none (nothing to
   *   compare with yet, or the store did not answer).
   */
  async check(): Promise<ClockReading | undefined> {
    let reading: ClockReading | undefined;
    try {
      reading = await this.#probe.read();
    } catch (error) {
      if (!this.#failing) {
        this.#logger.debug("Cannot compare the clock: {error}", {
          error: (error as Error).message,
        });
      }
      this.#failing = true;
      return undefined;
    }
    this.#failing = false;
    if (reading === undefined) return undefined;
    this.#offsetMs = reading.offsetMs;
    this.#onReading?.(reading);
    this.#firstReading.resolve();
    this.#warnWhenOff(reading);
    return reading;
  }

  /** Logs a clock that is off, once per window; and once when it is back. */
  #warnWhenOff(reading: ClockReading): void {
    const skewMs = Math.round(reading.offsetMs);
    if (Math.abs(skewMs) < this.#warnMs) {
      if (this.#warnedWindow !== undefined) {
        this.#warnedWindow = undefined;
        this.#logger.info(
          "This instance's clock agrees with the fleet's again ({skewMs} ms, {reference})",
          { skewMs, reference: reading.reference },
        );
      }
      return;
    }
    const minute = windowStart(this.now(), this.#windowMs);
    if (this.#warnedWindow === minute) return;
    this.#warnedWindow = minute;
    this.#logger.warn(
      "This instance's clock is {distanceMs} ms {direction} the fleet's ({reference}); windows and reports follow the fleet's clock",
      {
        distanceMs: Math.abs(skewMs),
        skewMs,
        direction: skewMs > 0 ? "ahead of" : "behind",
        errorMs: Math.round(reading.errorMs),
        reference: reading.reference,
        minute: formatMinute(minute),
      },
    );
  }

  /**
   * Takes a reading every `periodMs` until `signal` aborts, then withdraws
   * what the probe wrote.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.check();
      const jitter = 0.75 + Math.random() / 2;
      if (!await sleep(this.#periodMs * jitter, signal)) break;
    }
    await this.#probe.close().catch(() => {});
  }

  /**
   * Resolves once a first reading was taken, or `timeoutMs` passed (the
   * instance then follows its own clock until there is one).
   */
  async ready(timeoutMs: number): Promise<void> {
    await withinTime(
      this.#firstReading.promise,
      timeoutMs,
      () => new Error("no reading yet"),
    ).catch(() => {});
  }
}
