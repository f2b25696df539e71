/**
 * Gathering before a commit: in buffered mode no answer waits for a commit,
 * so a queue of ids may wait a few ms after one commit starts before the
 * next one does. Under load the commits are then fewer and larger: less of
 * the database's and the main thread's time goes to commits that each cost
 * about the same whatever they hold. Under a light load nothing waits: the
 * first commit after a quiet spell starts at once.
 *
 * @module
 */
import { wholeNumber } from "./checks.ts";

/**
 * How a queue gathers ids between commits. Where a store takes this option,
 * leaving it out lets every commit start as soon as the store allows.
 */
export interface GatherOptions {
  /**
   * The least time from the start of one commit to the next, in ms; the
   * next one also waits for the one in progress where the store runs one at
   * a time.
   * @default {0}
   */
  ms: number;
  /**
   * Ids waiting for their commit (those being committed included) at which
   * the next commit starts at once, whatever `ms`.
   * @default {1}
   */
  ids: number;
}

/**
 * Holds a queue's next commit until `ms` after its last one started, or
 * until `ids` ids wait.
 *
 * @example
 * ```ts
 * const gate = new CommitGate({ ms: 10, ids: 1000 }, () => flush());
 * if (gate.tryStart(queued)) commit(); // else flush() runs once it may
 * ```
 */
export class CommitGate {
  readonly #ms: number;
  readonly #ids: number;
  readonly #onOpen: () => void;
  #lastStart = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #open = false;

  /**
   * @param gather How long and up to how many ids to gather; `undefined`
   *   lets every commit start at once.
   * @param onOpen Called once a held commit may start.
   */
  constructor(gather: GatherOptions | undefined, onOpen: () => void) {
    const part = "commit gate";
    this.#ms = wholeNumber(gather?.ms ?? 0, { part, name: "ms", min: 0 });
    this.#ids = wholeNumber(gather?.ids ?? 1, { part, name: "ids" });
    this.#onOpen = onOpen;
  }

  /**
   * Whether the next commit is held with `queued` ids waiting, without
   * reading the clock: the gate is waiting for its time and `queued` is
   * below its `ids`.
   */
  holds(queued: number): boolean {
    return this.#timer !== undefined && queued < this.#ids;
  }

  /**
   * Stops gathering for good, e.g. before the store closes: a held commit
   * may start now (`onOpen` runs), and every later one at once.
   */
  open(): void {
    this.#open = true;
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#onOpen();
  }

  /**
   * Whether a commit may start now with `queued` ids waiting; when it may,
   * it counts as started. When not, `onOpen` runs once it may.
   */
  tryStart(queued: number): boolean {
    if (this.#ms === 0 || this.#open) return true;
    const now = performance.now();
    const wait = this.#lastStart + this.#ms - now;
    if (wait > 0 && queued < this.#ids) {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.#onOpen();
      }, wait);
      return false;
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#lastStart = now;
    return true;
  }
}
