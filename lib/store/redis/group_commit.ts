/**
 * The Redis store's group commit: requests queue per window and are
 * committed in batches by the store's script calls, with concurrent
 * requests for one id collapsed into one entry and ids already committed
 * answered from the local first-seen filter. (Deno KV batches inside its id
 * log, `kv/kv_id_log.ts`: there a commit can lose its partition to another
 * instance's and must read what that one wrote before it goes on.)
 *
 * @module
 */
import { wholeNumber } from "../checks.ts";
import { CommitGate, type GatherOptions } from "../commit_gate.ts";
import { SeenIds } from "./seen_ids.ts";
import {
  type CommitObserver,
  type IdWaiter,
  StoreUnavailableError,
  untilRecorded,
} from "../store.ts";

/**
 * What a backend made of one id of a batch: newly `recorded`, already
 * `known`, or an error for that id alone.
 */
export type IdOutcome = "recorded" | "known" | Error;

/** Options of {@link GroupCommit}. */
export interface GroupCommitOptions {
  /**
   * Commits a batch of distinct ids of one window, resolving one outcome per
   * id in order. A thrown error fails the whole batch.
   */
  commit(minute: number, ids: string[]): Promise<IdOutcome[]>;
  /** The most ids in one batch. */
  batchSize: number;
  /** Batches committing at once. Default: 4. */
  maxInFlight?: number;
  /** How ids gather between batches that are not full. */
  gather?: GatherOptions;
  /** Ids remembered by the first-seen filter. Default: 100 000. */
  seenIdsLimit?: number;
  /** Told about every commit: its size, duration in seconds, and success. */
  onCommit?: CommitObserver;
}

interface Entry {
  minute: number;
  id: string;
  waiters: IdWaiter[];
}

/**
 * Queues ids per window and commits them in batches through `commit`.
 *
 * A batch that is not full starts only when nothing is committing: ids
 * arriving meanwhile gather into the next batch, so commits grow with the
 * load instead of multiplying; with `gather`, nor sooner than `gather.ms`
 * after the last one started, unless `gather.ids` ids are queued. Full
 * batches may run alongside, up to `maxInFlight`.
 *
 * @example
 * ```ts
 * const commits = new GroupCommit({
 *   batchSize: 99,
 *   commit: async (minute, ids) => ids.map(() => "recorded"),
 * });
 * await commits.record(minute, "42"); // true
 * ```
 */
export class GroupCommit {
  readonly #commit: GroupCommitOptions["commit"];
  readonly #batchSize: number;
  readonly #maxInFlight: number;
  readonly #seen: SeenIds;
  readonly #onCommit: CommitObserver | undefined;
  readonly #gate: CommitGate;

  /** Entries not yet settled, by window and id (queued or committing). */
  readonly #entries = new Map<number, Map<string, Entry>>();
  /** Entries waiting for a batch, by window, in arrival order. */
  readonly #queues = new Map<number, Entry[]>();
  #queued = 0;
  /** Ids in the batches committing. */
  #committing = 0;
  #inFlight = 0;
  readonly #drained: (() => void)[] = [];

  constructor(options: GroupCommitOptions) {
    this.#commit = options.commit;
    this.#batchSize = positive("batchSize", options.batchSize);
    this.#maxInFlight = positive("maxInFlight", options.maxInFlight ?? 4);
    this.#seen = new SeenIds(options.seenIdsLimit ?? 100_000);
    this.#onCommit = options.onCommit;
    this.#gate = new CommitGate(options.gather, () => this.#flush());
  }

  /**
   * Records `id` in the window `minute` once its batch commits.
   *
   * @returns `true` when this call recorded the id, `false` when it was
   *   already recorded.
   */
  record(minute: number, id: string): Promise<boolean> {
    return untilRecorded((waiter) => this.queue(minute, id, waiter));
  }

  /**
   * Records `id` in the window `minute`, and tells `waiter` once: at once
   * for an id the first-seen filter knows, else after its batch commits.
   */
  queue(minute: number, id: string, waiter: IdWaiter): void {
    if (this.#seen.has(minute, id)) return waiter.resolve(false);
    let byId = this.#entries.get(minute);
    if (byId === undefined) {
      byId = new Map();
      this.#entries.set(minute, byId);
    }
    const entry = byId.get(id);
    if (entry !== undefined) {
      entry.waiters.push(waiter);
      return;
    }
    const created: Entry = { minute, id, waiters: [waiter] };
    byId.set(id, created);
    this.#enqueue(created);
  }

  /** Whether `id` is committed in the window `minute`, by the first-seen filter. */
  knows(minute: number, id: string): boolean {
    return this.#seen.has(minute, id);
  }

  /** How many ids are queued or committing. */
  get queued(): number {
    let count = 0;
    for (const byId of this.#entries.values()) count += byId.size;
    return count;
  }

  /**
   * Resolves once every queued id is committed or failed; from then on
   * batches no longer gather.
   */
  async drain(): Promise<void> {
    // A held batch goes now: nothing arrives after a drain to gather with.
    this.#gate.open();
    if (this.#inFlight > 0 || this.#queued > 0) {
      await new Promise<void>((resolve) => this.#drained.push(resolve));
    }
  }

  #enqueue(entry: Entry): void {
    let queue = this.#queues.get(entry.minute);
    if (queue === undefined) {
      queue = [];
      this.#queues.set(entry.minute, queue);
    }
    queue.push(entry);
    this.#queued++;
    this.#flush();
  }

  /** Starts batches while there are queued ids and free commit slots. */
  #flush(): void {
    while (this.#inFlight < this.#maxInFlight && this.#queued > 0) {
      const [minute, queue] = this.#queues.entries().next().value!;
      const waiting = this.#queued + this.#committing;
      if (
        queue.length < this.#batchSize &&
        (this.#inFlight > 0 || this.#gate.holds(waiting) ||
          !this.#gate.tryStart(waiting))
      ) break;
      const batch = queue.splice(0, this.#batchSize);
      if (queue.length === 0) this.#queues.delete(minute);
      this.#queued -= batch.length;
      this.#committing += batch.length;
      this.#inFlight++;
      this.#commitBatch(minute, batch).finally(() => {
        this.#committing -= batch.length;
        this.#inFlight--;
        this.#flush();
      });
    }
    if (
      this.#inFlight === 0 && this.#queued === 0 && this.#drained.length > 0
    ) {
      for (const resolve of this.#drained.splice(0)) resolve();
    }
  }

  async #commitBatch(minute: number, batch: Entry[]): Promise<void> {
    let outcomes: IdOutcome[];
    const started = performance.now();
    try {
      outcomes = await this.#commit(minute, batch.map((entry) => entry.id));
      this.#onCommit?.(
        batch.length,
        (performance.now() - started) / 1000,
        true,
      );
    } catch (error) {
      this.#onCommit?.(
        batch.length,
        (performance.now() - started) / 1000,
        false,
      );
      const failure = error instanceof StoreUnavailableError
        ? error
        : new StoreUnavailableError(
          `Cannot record ids: ${(error as Error).message}`,
          { cause: error },
        );
      for (const entry of batch) this.#reject(entry, failure);
      return;
    }
    batch.forEach((entry, i) => {
      const outcome = outcomes[i];
      if (outcome === "recorded" || outcome === "known") {
        this.#settle(entry, outcome === "recorded");
      } else {
        this.#reject(
          entry,
          outcome ??
            new StoreUnavailableError(
              `Cannot record id ${entry.id}: no outcome`,
            ),
        );
      }
    });
  }

  #settle(entry: Entry, recorded: boolean): void {
    this.#forget(entry);
    this.#seen.add(entry.minute, entry.id);
    // Only the first request for an id recorded it; the rest are repeats.
    entry.waiters.forEach((waiter, i) => waiter.resolve(recorded && i === 0));
  }

  #reject(entry: Entry, error: Error): void {
    this.#forget(entry);
    for (const waiter of entry.waiters) waiter.reject(error, entry.id);
  }

  #forget(entry: Entry): void {
    const byId = this.#entries.get(entry.minute);
    byId?.delete(entry.id);
    if (byId?.size === 0) this.#entries.delete(entry.minute);
  }
}

function positive(name: string, value: number): number {
  return wholeNumber(value, { part: "group commit", name });
}
