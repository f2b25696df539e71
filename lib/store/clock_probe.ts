/**
 * Clock probes: how far this instance's clock is from the fleet's, read
 * through the shared store. A Redis store compares with the server's clock
 * (`redis/redis_clock.ts`); a Deno KV store with the clocks of the other
 * instances, through readings each one writes (`kv/kv_clock.ts`). The
 * {@link FleetClock} turns the readings into the clock windows follow.
 *
 * @module
 */

/**
 * One comparison of this instance's clock with the fleet's. A comparison
 * bounds the offset ({@link offsetWithin}): clocks that agree within its
 * bounds are not moved at all.
 */
export interface ClockReading {
  /** This instance's clock minus the fleet's, in ms: > 0 when it is ahead. */
  offsetMs: number;
  /** How far `offsetMs` may be off, in ms. */
  errorMs: number;
  /** What the fleet's clock was taken from, for the log: `redis`, `3 instances`. */
  reference: string;
}

/** Compares this instance's clock with the fleet's, through the store. */
export interface ClockProbe {
  /**
   * Takes one reading. `undefined` while there is nothing to compare with
   * yet (a peer seen once, whose reading's age is not known).
   *
   * @throws when the store cannot be reached.
   */
  read(): Promise<ClockReading | undefined>;
  /** Withdraws what this instance wrote for the others, if anything. */
  close(): Promise<void>;
}

/**
 * The offset that bounds `[low, high]` stand for: 0 when they hold 0 (the
 * clocks agree as far as can be told, and a clock is never moved by a
 * comparison's error alone), else their midpoint.
 *
 * @example
 * ```ts
 * offsetWithin(-300, 500); // 0
 * offsetWithin(4600, 5400); // 5000
 * ```
 */
export function offsetWithin(low: number, high: number): number {
  return low <= 0 && high >= 0 ? 0 : (low + high) / 2;
}

/**
 * The fleet's clock as an offset from this instance's, given every
 * instance's offset from this one (this one's own, 0, among them): their
 * median, so that a clock far off moves it only when it is half of the
 * fleet. Of the middle two of an even count, the one nearer this clock:
 * with two instances, neither can tell whose clock is off, so each keeps
 * its own.
 *
 * @example
 * ```ts
 * fleetOffset([0, 5000, -5000]); // 0
 * fleetOffset([0, 5000]); // 0
 * ```
 */
export function fleetOffset(offsets: readonly number[]): number {
  if (offsets.length === 0) {
    throw new RangeError("Cannot take the fleet's clock of no instances");
  }
  const sorted = offsets.toSorted((a, b) => a - b);
  const middle = sorted.length >> 1;
  if (sorted.length % 2 === 1) return sorted[middle]!;
  const [low, high] = [sorted[middle - 1]!, sorted[middle]!];
  return Math.abs(low) <= Math.abs(high) ? low : high;
}
