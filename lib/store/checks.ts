/**
 * Checks of the numbers the store's parts are created with: a bad one throws
 * a `RangeError` naming the part, the option and the value.
 *
 * @module
 */

/** What a checked number is: which option of which part. */
export interface CheckedOption {
  /** The part being created, e.g. `KV store`. */
  part: string;
  /** The option, e.g. `partitions`. */
  name: string;
}

/**
 * Returns `value` when it is a whole number of at least `min` (default 1).
 *
 * @throws {RangeError} when it is not, naming the part and the option.
 *
 * @example
 * ```ts
 * wholeNumber(0, { part: "group commit", name: "batchSize" });
 * // RangeError: Cannot create group commit: batchSize must be a whole
 * // number of at least 1, got 0
 * ```
 */
export function wholeNumber(
  value: number,
  option: CheckedOption & { min?: number },
): number {
  const { part, name, min = 1 } = option;
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(
      `Cannot create ${part}: ${name} must be a whole number of at least ${min}, got ${value}`,
    );
  }
  return value;
}

/**
 * Returns `value` when it is a number above 0 (`Infinity` included).
 *
 * @throws {RangeError} when it is not, naming the part and the option.
 */
export function aboveZero(value: number, option: CheckedOption): number {
  if (!(value > 0)) {
    throw new RangeError(
      `Cannot create ${option.part}: ${option.name} must be above 0, got ${value}`,
    );
  }
  return value;
}
