/**
 * A time limit for tests that wait for something that must happen soon, so
 * that a wait which would end only on a long timer fails instead.
 *
 * @module
 */

/** `promise`, or a rejection once `ms` pass first. */
export async function withinMs<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
