/**
 * A bounded, process-local memory of ids already committed per window. A
 * repeated id found here is answered without a store round trip. It only
 * ever holds ids the store confirmed, so a hit is always truthful; a miss
 * just means "ask the store".
 *
 * @module
 */
import { wholeNumber } from "../checks.ts";

/**
 * Remembers committed ids of the two most recent windows, up to `limit` ids
 * in all. When full, the newest window takes the room of the older one, so
 * the current window is never starved by the last.
 */
export class SeenIds {
  #windows = new Map<number, Set<string>>();
  #size = 0;
  readonly #limit: number;

  /**
   * @param limit The most ids held at once, over all windows; `0` disables
   *   the filter.
   */
  constructor(limit: number) {
    this.#limit = wholeNumber(limit, {
      part: "SeenIds",
      name: "limit",
      min: 0,
    });
  }

  /** How many ids are held. */
  get size(): number {
    return this.#size;
  }

  /** Whether `id` is known to be committed in the window `minute`. */
  has(minute: number, id: string): boolean {
    return this.#windows.get(minute)?.has(id) ?? false;
  }

  /** Remembers that `id` is committed in the window `minute`, if room. */
  add(minute: number, id: string): void {
    let ids = this.#windows.get(minute);
    if (ids === undefined) {
      if (this.#limit === 0) return;
      let newest = -Infinity;
      for (const m of this.#windows.keys()) newest = Math.max(newest, m);
      // Only the current window and the one before matter; older ones are
      // closed and their ids can never be asked for again.
      if (minute < newest) return;
      for (const [m, set] of this.#windows) {
        if (m < newest) {
          this.#size -= set.size;
          this.#windows.delete(m);
        }
      }
      ids = new Set();
      this.#windows.set(minute, ids);
    }
    if (ids.has(id)) return;
    if (this.#size >= this.#limit) {
      // The window being filled is the one asked about; when it is the
      // newest, the older one makes way for it.
      if (ids.size === this.#size || !this.#isNewest(minute)) return;
      for (const [m, set] of this.#windows) {
        if (m !== minute) {
          this.#size -= set.size;
          this.#windows.delete(m);
        }
      }
    }
    ids.add(id);
    this.#size++;
  }

  #isNewest(minute: number): boolean {
    for (const m of this.#windows.keys()) if (m > minute) return false;
    return true;
  }
}
