/**
 * Buffered acknowledgements (`ACK_MODE=buffered`): a {@link Store} whose ids
 * role is wrapped (every other role is the store's own), so that `recordId`
 * answers as soon as the id is queued for commit, instead of after the
 * commit. A crash loses the ids acknowledged but not yet committed:
 * at most `maxPending` of them, acknowledged within the last `maxAgeMs`. A
 * clean shutdown commits them all.
 *
 * An id whose window is reported between its acknowledgement and its commit
 * (this instance's clock is behind the one that reported it by more than
 * the grace) is committed in the next window instead, as a request arriving
 * then would be.
 *
 * It falls back to waiting for commits (backpressure, so memory and the
 * window of loss stay bounded) while `maxPending` ids are waiting, while the
 * oldest of them has waited `maxAgeMs`, and after a commit failed, until one
 * succeeds again, so callers see store failures as they happen.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { aboveZero, wholeNumber } from "./checks.ts";
import {
  type IdRole,
  type IdWaiter,
  MAX_WINDOW_MOVES,
  type Store,
  untilRecorded,
  WindowClosedError,
  withIdRole,
} from "./store.ts";

/** Options of {@link createBufferedStore}. */
export interface BufferedStoreOptions {
  /** Where ids lost after their acknowledgement are logged. */
  logger: Logger;
  /**
   * The most ids acknowledged and not yet committed; past it, `recordId`
   * waits for the commit. Default: 2000.
   */
  maxPending?: number;
  /**
   * How long an acknowledged id may wait for its commit, in ms; while the
   * oldest one has waited longer, `recordId` waits for the commit. Default:
   * 100.
   */
  maxAgeMs?: number;
  /** The current time in ms, for `maxAgeMs`. Default: `performance.now`. */
  clock?: () => number;
  /** How often lost ids are summed up in the log, in ms. Default: 1000. */
  lossReportMs?: number;
  /** The window length in ms, to find the next window. Default: 60 000. */
  windowMs?: number;
  /** Called for each id committed in a later window than it was given. */
  onMoved?: () => void;
}

const ACCEPTED = Promise.resolve(true);
const REPEAT = Promise.resolve(false);

/** The longest span of acknowledgements one batch takes, in ms. */
const MAX_BATCH_SPAN_MS = 1;

/**
 * Ids of one window acknowledged within a short span, waiting for their
 * commits. They are settled by count through one waiter, so no promise,
 * closure or record is made per id; their age is the first one's, so the
 * oldest id is never taken for younger than it is.
 */
interface Batch {
  minute: number;
  /** When its first id was acknowledged, by the clock. */
  since: number;
  /** Its ids not yet committed or lost. */
  left: number;
  /** Told by the store of each of its ids. */
  waiter: IdWaiter;
}

/**
 * Wraps `store` so that ids are acknowledged before they are committed.
 * `recordId` resolves `true` at once for an id it buffered: accepted, not yet
 * known to be new. An id this instance already knows is committed in the
 * window resolves `false` at once and takes no room in the buffer.
 *
 * @example
 * ```ts
 * const store = createBufferedStore(createKvStore(kv, options), {
 *   logger: getLogger(["verve", "store"]),
 * });
 * ```
 */
export function createBufferedStore(
  store: Store,
  options: BufferedStoreOptions,
): Store {
  return withIdRole(store, new BufferedIds(store, options));
}

/** The ids role, acknowledged before the commit; the rest is the store's. */
class BufferedIds implements IdRole {
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #maxPending: number;
  readonly #maxAgeMs: number;
  readonly #batchSpanMs: number;
  readonly #clock: () => number;
  readonly #lossReportMs: number;
  readonly #windowMs: number;
  readonly #onMoved: (() => void) | undefined;
  /**
   * Batches in order of acknowledgement, the last one the batch new ids
   * join; settled ones leave the head.
   */
  #batches: Batch[] = [];
  #head = 0;
  /** Acknowledged ids not yet committed or lost. */
  #count = 0;
  #failing = false;
  #lost = 0;
  #lastLoss = "";
  #lossTimer: ReturnType<typeof setTimeout> | undefined;
  #closed: Promise<void> | undefined;
  /** Called once no acknowledged id waits for its commit. */
  #whenSettled: (() => void)[] = [];

  constructor(store: Store, options: BufferedStoreOptions) {
    this.#store = store;
    this.#logger = options.logger;
    this.#maxPending = wholeNumber(options.maxPending ?? 2000, {
      part: "buffered store",
      name: "maxPending",
    });
    this.#maxAgeMs = aboveZero(options.maxAgeMs ?? 100, {
      part: "buffered store",
      name: "maxAgeMs",
    });
    this.#batchSpanMs = Math.min(MAX_BATCH_SPAN_MS, this.#maxAgeMs / 16);
    this.#clock = options.clock ?? (() => performance.now());
    this.#lossReportMs = options.lossReportMs ?? 1000;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#onMoved = options.onMoved;
  }

  recordId(minute: number, id: string): Promise<boolean> {
    const taken = this.takeId(minute, id);
    if (taken === "new") return ACCEPTED;
    if (taken === "repeat") return REPEAT;
    return untilRecorded((waiter) => this.#await(minute, id, waiter));
  }

  queueId(minute: number, id: string, waiter: IdWaiter): void {
    const taken = this.takeId(minute, id);
    if (taken !== undefined) return waiter.resolve(taken === "new");
    this.#await(minute, id, waiter);
  }

  /** Leaves an id the buffer has no room for to the store's commit. */
  #await(minute: number, id: string, waiter: IdWaiter): void {
    this.#store.queueId(minute, id, {
      resolve: (recorded) => {
        this.#failing = false;
        waiter.resolve(recorded);
      },
      reject: (error, id) => waiter.reject(error, id),
    });
  }

  takeId(minute: number, id: string): "new" | "repeat" | undefined {
    if (this.#store.knows(minute, id)) return "repeat";
    const now = this.#clock();
    if (this.#failing || !this.#hasRoom(now)) return undefined;
    let batch = this.#batches[this.#batches.length - 1];
    if (
      batch === undefined || batch.minute !== minute ||
      now - batch.since >= this.#batchSpanMs
    ) {
      batch = this.#startBatch(minute, now);
    }
    batch.left++;
    this.#count++;
    this.#store.queueId(minute, id, batch.waiter);
    return "new";
  }

  #startBatch(minute: number, since: number): Batch {
    const batch = { minute, since, left: 0 } as Batch;
    batch.waiter = this.#waiter(batch, minute, 0);
    this.#batches.push(batch);
    return batch;
  }

  /**
   * What settles ids of `batch` committed in `minute`, `moves` windows after
   * the one they were acknowledged in.
   */
  #waiter(batch: Batch, minute: number, moves: number): IdWaiter {
    return {
      resolve: () => {
        this.#settle(batch);
        this.#failing = false;
        if (moves > 0) this.#onMoved?.();
      },
      reject: (error, id) => this.#retry(batch, minute, id, error, moves),
    };
  }

  /**
   * After an acknowledged id of `batch` failed in `minute`: commits it in
   * the next window where that one was reported, else counts it lost.
   */
  #retry(
    batch: Batch,
    minute: number,
    id: string,
    error: Error,
    moves: number,
  ): void {
    // A window reported before its last ids committed is not a store
    // failure: the id counts in the next window.
    if (error instanceof WindowClosedError && moves < MAX_WINDOW_MOVES) {
      const next = minute + this.#windowMs;
      this.#store.queueId(next, id, this.#waiter(batch, next, moves + 1));
      return;
    }
    this.#settle(batch);
    if (!(error instanceof WindowClosedError)) this.#failing = true;
    this.#lose(error);
  }

  /** Whether one more id may be acknowledged before its commit. */
  #hasRoom(now: number): boolean {
    if (this.#count >= this.#maxPending) return false;
    const oldest = this.#batches[this.#head];
    return oldest === undefined || now - oldest.since < this.#maxAgeMs;
  }

  /** Counts one id of `batch` settled; batches settled leave the head. */
  #settle(batch: Batch): void {
    batch.left--;
    if (--this.#count === 0) {
      for (const wake of this.#whenSettled.splice(0)) wake();
    }
    const list = this.#batches;
    while (this.#head < list.length && list[this.#head]!.left === 0) {
      this.#head++;
    }
    if (this.#head === list.length) {
      list.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > list.length) {
      list.splice(0, this.#head);
      this.#head = 0;
    }
  }

  /** Counts an acknowledged id that was not committed; logs them in sums. */
  #lose(error: Error): void {
    this.#lost++;
    this.#lastLoss = error.message;
    this.#lossTimer ??= setTimeout(
      () => this.#reportLosses(),
      this.#lossReportMs,
    );
  }

  #reportLosses(): void {
    clearTimeout(this.#lossTimer);
    this.#lossTimer = undefined;
    if (this.#lost === 0) return;
    this.#logger.error(
      "Lost {lost} acknowledged ids that could not be committed: {error}",
      { lost: this.#lost, error: this.#lastLoss },
    );
    this.#lost = 0;
  }

  knows(minute: number, id: string): boolean {
    return this.#store.knows(minute, id);
  }

  countIds(minute: number) {
    return this.#store.countIds(minute);
  }

  queuedIds(): number {
    return this.#store.queuedIds();
  }

  /**
   * Commits every buffered id (an id moving on to the next window too),
   * then closes the wrapped store, which drains its own queue.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      if (this.#count > 0) {
        await new Promise<void>((resolve) => this.#whenSettled.push(resolve));
      }
      await this.#store.close();
      // Let the settle callbacks of the last commits run before summing up.
      await new Promise((resolve) => setTimeout(resolve, 0));
      this.#reportLosses();
    })();
    return this.#closed;
  }
}
