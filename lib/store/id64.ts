/**
 * Ids as 64-bit integers: the canonical decimal strings that
 * `parseAcceptQuery` yields (signed 64-bit) become two unsigned 32-bit
 * halves of their two's complement, which the KV store packs 8 bytes each
 * into its log and keeps in its in-memory id table. The conversion runs on
 * every request, so it works on doubles alone, without `BigInt`.
 *
 * @module
 */

const TWO_32 = 4_294_967_296;
const TWO_16 = 65_536;
const BILLION = 1_000_000_000;

/** An id's two's complement as two unsigned 32-bit halves. */
export interface Id64 {
  /** The low 32 bits. */
  lo: number;
  /** The high 32 bits. */
  hi: number;
}

/**
 * Writes the 64-bit two's complement of a canonical id into `out`, without
 * allocating: `out` is usually one object reused for every call.
 *
 * @param id A canonical decimal id in the signed 64-bit range, as
 *   `parseId` returns it (optional `-`, at most 19 digits).
 * @param out Receives the halves.
 * @returns `out`.
 *
 * @example
 * ```ts
 * splitId("-1", { lo: 0, hi: 0 }); // { lo: 4294967295, hi: 4294967295 }
 * splitId("4294967296", { lo: 0, hi: 0 }); // { lo: 0, hi: 1 }
 * ```
 */
export function splitId(id: string, out: Id64): Id64 {
  const negative = id.charCodeAt(0) === 45; // "-"
  const start = negative ? 1 : 0;
  const end = id.length;
  // value = upper * 1e9 + lower, with upper < 2^34 and lower < 1e9.
  const split = end - start > 9 ? end - 9 : start;
  const upper = digits(id, start, split);
  const lower = digits(id, split, end);
  // upper * 1e9 does not fit a double exactly; split it at 2^16 first.
  const upperHigh = Math.floor(upper / TWO_16);
  const low = (upper - upperHigh * TWO_16) * BILLION + lower; // < 2^46
  const middle = upperHigh * BILLION; // < 2^48, counts units of 2^16
  const middleHigh = Math.floor(middle / TWO_16);
  const carried = (middle - middleHigh * TWO_16) * TWO_16 + low; // < 2^47
  const carry = Math.floor(carried / TWO_32);
  let lo = carried - carry * TWO_32;
  let hi = middleHigh + carry;
  if (negative && (lo !== 0 || hi !== 0)) {
    // Two's complement: 2^64 - value.
    if (lo === 0) {
      hi = TWO_32 - hi;
    } else {
      lo = TWO_32 - lo;
      hi = TWO_32 - 1 - hi;
    }
  }
  out.lo = lo;
  out.hi = hi;
  return out;
}

/** The decimal value of `text[start, end)`, all digits, at most 10 of them. */
function digits(text: string, start: number, end: number): number {
  let value = 0;
  for (let i = start; i < end; i++) {
    value = value * 10 + text.charCodeAt(i) - 48;
  }
  return value;
}

/**
 * Mixes an id's halves into 32 well-spread bits (MurmurHash3's finalizer
 * over both halves), xored with `seed`.
 *
 * @param seed 0 for a hash every instance agrees on (partitions); a random
 *   one per table, so that nobody can choose ids that collide in it.
 * @returns An unsigned 32-bit hash.
 */
export function hashId(lo: number, hi: number, seed: number): number {
  let h = (lo ^ seed) ^ Math.imul(hi ^ 0x27d4eb2f, 0x85ebca6b);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Bytes per id in a packed list. */
export const ID_BYTES = 8;

/**
 * Reads ids packed {@link ID_BYTES} each (low half, then high half, little
 * endian) and calls `each` with their halves.
 *
 * @returns How many ids there were.
 */
export function forEachPackedId(
  packed: Uint8Array,
  each: (lo: number, hi: number) => void,
): number {
  if (packed.byteLength % ID_BYTES !== 0) {
    throw new RangeError(
      `Cannot read packed ids: ${packed.byteLength} bytes is not a multiple of ${ID_BYTES}`,
    );
  }
  const view = new DataView(
    packed.buffer,
    packed.byteOffset,
    packed.byteLength,
  );
  for (let at = 0; at < packed.byteLength; at += ID_BYTES) {
    each(view.getUint32(at, true), view.getUint32(at + 4, true));
  }
  return packed.byteLength / ID_BYTES;
}

/** Packs ids given as halves into {@link ID_BYTES} each, little endian. */
export function packIds(ids: readonly Id64[]): Uint8Array {
  const packed = new Uint8Array(ids.length * ID_BYTES);
  const view = new DataView(packed.buffer);
  ids.forEach(({ lo, hi }, i) => {
    view.setUint32(i * ID_BYTES, lo, true);
    view.setUint32(i * ID_BYTES + 4, hi, true);
  });
  return packed;
}

const scratch: Id64 = { lo: 0, hi: 0 };

/**
 * Which of `count` parts a canonical id belongs to, alike on every instance:
 * the partition of a Deno KV window's log, the shard of a Redis window.
 *
 * @example
 * ```ts
 * partitionOf("42", 12); // the same number on every instance
 * ```
 */
export function partitionOf(id: string, count: number): number {
  splitId(id, scratch);
  return hashId(scratch.lo, scratch.hi, 0) % count;
}
