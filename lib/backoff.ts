/**
 * Waiting between retries: exponential backoff with full jitter, and a sleep
 * that an `AbortSignal` can cut short.
 *
 * @module
 */

/** How a backoff delay grows. */
export interface BackoffOptions {
  /** The delay cap of the first retry, in ms. Default: 100. */
  baseMs?: number;
  /** The largest delay, in ms. Default: 5000. */
  maxMs?: number;
  /** A source of numbers in [0, 1). Default: `Math.random`. */
  random?: () => number;
}

/**
 * The longest delay before retry number `attempt` (0 for the first retry):
 * `baseMs` doubled per attempt, at most `maxMs`.
 *
 * @example
 * ```ts
 * backoffCap(3, { baseMs: 10 }); // 80
 * ```
 */
export function backoffCap(
  attempt: number,
  options: Omit<BackoffOptions, "random"> = {},
): number {
  const { baseMs = 100, maxMs = 5000 } = options;
  return Math.min(maxMs, baseMs * 2 ** attempt);
}

/**
 * The delay before retry number `attempt` (0 for the first retry): a random
 * value between 0 and {@link backoffCap}, so that many clients retrying
 * together spread out.
 *
 * @example
 * ```ts
 * backoffDelay(3, { baseMs: 10, random: () => 0.5 }); // 40
 * ```
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
): number {
  const { random = Math.random } = options;
  return Math.floor(backoffCap(attempt, options) * random());
}

/**
 * Resolves after `ms` milliseconds, or as soon as `signal` aborts.
 *
 * @returns `true` when the full time passed, `false` when aborted.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
