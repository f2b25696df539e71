/**
 * A set of 64-bit ids in typed arrays: open addressing with linear probing,
 * 8 bytes a slot, at most 70% full, so at most 16 bytes per id when full and
 * 11.4 on average between two growths. The KV store keeps one per open
 * window, holding every id it has seen in the window's log.
 *
 * @module
 */
import { hashId } from "./id64.ts";

/** The most a table is filled before it doubles. */
const MAX_LOAD = 0.7;

/** The fewest slots a table has. */
const MIN_SLOTS = 1024;

/**
 * A set of ids given as two unsigned 32-bit halves (see `splitId`). An empty
 * slot holds 0 in both halves, so the id 0 is kept aside.
 *
 * @example
 * ```ts
 * const table = new IdTable();
 * table.add(7, 0); // true
 * table.has(7, 0); // true
 * table.add(7, 0); // false
 * ```
 */
export class IdTable {
  #slots: Uint32Array;
  #mask: number;
  #size = 0;
  #hasZero = false;
  /** Per table, so nobody can choose ids that collide in it. */
  readonly #seed = (Math.random() * 0x1_0000_0000) >>> 0;

  /** @param expected Ids to make room for without growing. Default: none. */
  constructor(expected = 0) {
    let slots = MIN_SLOTS;
    while (slots * MAX_LOAD < expected) slots *= 2;
    this.#slots = new Uint32Array(slots * 2);
    this.#mask = slots - 1;
  }

  /** How many ids the table holds. */
  get size(): number {
    return this.#size;
  }

  /** The bytes the table's slots take. */
  get bytes(): number {
    return this.#slots.byteLength;
  }

  /** Whether the table holds the id. */
  has(lo: number, hi: number): boolean {
    if (lo === 0 && hi === 0) return this.#hasZero;
    const slots = this.#slots;
    const mask = this.#mask;
    for (let i = hashId(lo, hi, this.#seed) & mask;; i = (i + 1) & mask) {
      const slotLo = slots[2 * i]!;
      const slotHi = slots[2 * i + 1]!;
      if (slotLo === lo && slotHi === hi) return true;
      if (slotLo === 0 && slotHi === 0) return false;
    }
  }

  /**
   * Adds the id.
   *
   * @returns `true` when it was not in the table yet.
   */
  add(lo: number, hi: number): boolean {
    if (lo === 0 && hi === 0) {
      if (this.#hasZero) return false;
      this.#hasZero = true;
      this.#size++;
      return true;
    }
    if (this.#size + 1 > (this.#mask + 1) * MAX_LOAD) this.#grow();
    if (!this.#place(this.#slots, this.#mask, lo, hi)) return false;
    this.#size++;
    return true;
  }

  /** Puts the id in the first free slot of its probe sequence, unless there. */
  #place(slots: Uint32Array, mask: number, lo: number, hi: number): boolean {
    for (let i = hashId(lo, hi, this.#seed) & mask;; i = (i + 1) & mask) {
      const slotLo = slots[2 * i]!;
      const slotHi = slots[2 * i + 1]!;
      if (slotLo === lo && slotHi === hi) return false;
      if (slotLo === 0 && slotHi === 0) {
        slots[2 * i] = lo;
        slots[2 * i + 1] = hi;
        return true;
      }
    }
  }

  #grow(): void {
    const old = this.#slots;
    const mask = this.#mask * 2 + 1;
    const slots = new Uint32Array((mask + 1) * 2);
    for (let i = 0; i < old.length; i += 2) {
      const lo = old[i]!;
      const hi = old[i + 1]!;
      if (lo !== 0 || hi !== 0) this.#place(slots, mask, lo, hi);
    }
    this.#slots = slots;
    this.#mask = mask;
  }
}
