/**
 * A timer that fires shortly after each window closes. `main.ts` uses
 * `Deno.cron` for one-minute windows; this timer serves any other window
 * length (short windows in tests and demos).
 *
 * @module
 */
import { sleep } from "../backoff.ts";
import { windowStart } from "../minute.ts";

/** Options of {@link startWindowTimer}. */
export interface WindowTimerOptions {
  /** The window length in ms. */
  windowMs: number;
  /** How long after each window end to fire, in ms. */
  delayMs: number;
  /** Called once per window; a tick still running delays the next one. */
  onTick(): Promise<unknown>;
  /** Stops the timer. */
  signal: AbortSignal;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
}

/**
 * Calls `onTick` at `delayMs` after the end of every window until `signal`
 * aborts.
 *
 * @returns A promise that settles once the timer has stopped and the last
 *   tick has finished.
 */
export async function startWindowTimer(
  options: WindowTimerOptions,
): Promise<void> {
  const { windowMs, delayMs, onTick, signal, clock = Date.now } = options;
  while (!signal.aborted) {
    const now = clock();
    const fireAt = windowStart(now - delayMs, windowMs) + windowMs + delayMs;
    if (!await sleep(fireAt - now, signal)) return;
    await onTick();
  }
}
