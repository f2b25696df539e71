/**
 * A set of 64-bit ids in typed arrays: open addressing with linear probing,
 * 8 bytes a slot, at most 70% full. It grows by half when full, so it takes
 * 11.4 bytes per id when full and 17.1 right after growing (plus, while it
 * moves its ids, the slots it grew from); sized up front for the ids it
 * expects, 11.4. It grows without a pause: each `add` moves a few ids of the
 * old slots into the new ones, and lookups read both until the move is done.
 * The KV store keeps one per open window, holding every id it has seen in
 * the window's log.
 *
 * @module
 */
import { hashId } from "../id64.ts";

/** The most a table is filled before it grows. */
const MAX_LOAD = 0.7;

/** The fewest slots a table has. */
const MIN_SLOTS = 1024;

/** How much a full table grows. */
const GROWTH = 1.5;

/**
 * Old slots moved per `add` while growing. A grown table takes
 * `(GROWTH - 1) / GROWTH` of its room in new ids before it grows again, a
 * third of its old slots: 8 per add moves them all well before that.
 */
const MOVES_PER_ADD = 8;

/**
 * The slot of a 32-bit hash in a table of `capacity` slots: the hash scaled
 * to the table, so any size works, not only powers of two.
 */
function slotOf(hash: number, capacity: number): number {
  return Math.floor(hash * capacity / 0x1_0000_0000);
}

/** Slots of one size: each takes two entries of `slots`, low half first. */
interface Slots {
  slots: Uint32Array;
  capacity: number;
}

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
  #current: Slots;
  /** The slots the table grew from, until every id in them is moved. */
  #old: Slots | undefined;
  /** The next old slot to move. */
  #moved = 0;
  #size = 0;
  #hasZero = false;
  /** Per table, so nobody can choose ids that collide in it. */
  readonly #seed = (Math.random() * 0x1_0000_0000) >>> 0;

  /** @param expected Ids to make room for without growing. Default: none. */
  constructor(expected = 0) {
    this.#current = slotsFor(
      Math.max(MIN_SLOTS, Math.ceil(expected / MAX_LOAD)),
    );
  }

  /** How many ids the table holds. */
  get size(): number {
    return this.#size;
  }

  /** The bytes the table's slots take. */
  get bytes(): number {
    return this.#current.slots.byteLength +
      (this.#old?.slots.byteLength ?? 0);
  }

  /** Whether the table holds the id. */
  has(lo: number, hi: number): boolean {
    if (lo === 0 && hi === 0) return this.#hasZero;
    return this.#find(this.#current, lo, hi) ||
      (this.#old !== undefined && this.#find(this.#old, lo, hi));
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
    if (this.#size + 1 > this.#current.capacity * MAX_LOAD) this.#grow();
    if (this.#old !== undefined) {
      if (this.#find(this.#old, lo, hi)) return false;
      this.#move(MOVES_PER_ADD);
    }
    if (!this.#place(this.#current, lo, hi)) return false;
    this.#size++;
    return true;
  }

  #find({ slots, capacity }: Slots, lo: number, hi: number): boolean {
    for (let i = slotOf(hashId(lo, hi, this.#seed), capacity);;) {
      const slotLo = slots[2 * i]!;
      const slotHi = slots[2 * i + 1]!;
      if (slotLo === lo && slotHi === hi) return true;
      if (slotLo === 0 && slotHi === 0) return false;
      if (++i === capacity) i = 0;
    }
  }

  /** Puts the id in the first free slot of its probe sequence, unless there. */
  #place({ slots, capacity }: Slots, lo: number, hi: number): boolean {
    for (let i = slotOf(hashId(lo, hi, this.#seed), capacity);;) {
      const slotLo = slots[2 * i]!;
      const slotHi = slots[2 * i + 1]!;
      if (slotLo === lo && slotHi === hi) return false;
      if (slotLo === 0 && slotHi === 0) {
        slots[2 * i] = lo;
        slots[2 * i + 1] = hi;
        return true;
      }
      if (++i === capacity) i = 0;
    }
  }

  /** Starts moving the ids into slots half again as many. */
  #grow(): void {
    // A move still running when the table is full again ends at once.
    if (this.#old !== undefined) this.#move(Infinity);
    this.#old = this.#current;
    this.#moved = 0;
    this.#current = slotsFor(Math.ceil(this.#current.capacity * GROWTH));
  }

  /** Moves up to `count` old slots' ids into the current slots. */
  #move(count: number): void {
    const old = this.#old!;
    const end = Math.min(old.capacity, this.#moved + count);
    const slots = old.slots;
    for (let i = this.#moved; i < end; i++) {
      const lo = slots[2 * i]!;
      const hi = slots[2 * i + 1]!;
      if (lo !== 0 || hi !== 0) this.#place(this.#current, lo, hi);
    }
    this.#moved = end;
    if (end === old.capacity) this.#old = undefined;
  }
}

function slotsFor(capacity: number): Slots {
  return { slots: new Uint32Array(capacity * 2), capacity };
}
