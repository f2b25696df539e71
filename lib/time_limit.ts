/**
 * A time limit on one piece of asynchronous work: the one mechanism behind
 * every bounded call of the service (a request's store call, a Redis
 * command, a remote Deno KV call), so that a peer that never answers costs
 * a bounded wait, never a hang.
 *
 * @module
 */

/**
 * Settles as `work` does, or rejects with `onTimeout()`'s error once
 * `timeoutMs` passed first. The timer is cleared either way; `work` itself
 * goes on (a promise cannot be cancelled), so what it does later must be
 * harmless to whoever gave up on it.
 *
 * @param work What to wait for.
 * @param timeoutMs How long to wait, in ms.
 * @param onTimeout The error to reject with when the time runs out.
 *
 * @example
 * ```ts
 * await withinTime(fetch(url), 1000, () => new Error("no answer in 1 s"));
 * ```
 */
export function withinTime<T>(
  work: Promise<T>,
  timeoutMs: number,
  onTimeout: () => Error,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
