/**
 * Checks of the numbers the store's parts are created with: a bad one throws
 * a `RangeError` naming the part, the option and the value.
 *
 * @module
 */

/**
 * `value`, once it is a whole number of at least `min`.
 *
 * @param part What is being created, e.g. `KV store`.
 * @param name The option, e.g. `partitions`.
 * @throws {RangeError} otherwise.
 *
 * @example
 * ```ts
 * wholeNumber("group commit", "batchSize", 0); // throws: "Cannot create group commit: batchSize must be a whole number of at least 1, got 0"
 * ```
 */
export function wholeNumber(
  part: string,
  name: string,
  value: number,
  min = 1,
): number {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(
      `Cannot create ${part}: ${name} must be a whole number of at least ${min}, got ${value}`,
    );
  }
  return value;
}

/**
 * `value`, once it is a number above 0.
 *
 * @throws {RangeError} otherwise.
 */
export function aboveZero(part: string, name: string, value: number): number {
  if (!(value > 0)) {
    throw new RangeError(
      `Cannot create ${part}: ${name} must be above 0, got ${value}`,
    );
  }
  return value;
}
