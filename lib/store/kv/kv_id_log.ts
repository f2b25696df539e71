/**
 * The KV store's ids: per window, a log of new ids split into partitions.
 * Each partition has a head, `{ seq, count }`, and entries `1..seq`, each
 * holding the ids that became new in one commit, packed 8 bytes each. The
 * heads are the window's sharded counter: its unique count is the sum of
 * their counts.
 *
 * In memory, per open window, an {@link IdTable} holds every id this
 * instance has read in or written to the log, and each partition remembers
 * the head it has read up to. A new id joins its partition's queue; a
 * commit takes the queue (up to {@link MAX_IDS_PER_ENTRY} ids), and in one
 * atomic operation checks that the head is the one read, checks that the
 * window is not reported, and writes the next head and entry. When another
 * instance moved the head first, one range read brings the entries after
 * the cursor and the new head; the ids found there are repeats, the rest is
 * committed at once against the new head. A failed check always brings
 * another instance's commit, so there is no limit on rounds: an id fails
 * only when its commit deadline passes, the store throws, or the window is
 * reported.
 *
 * One commit runs per partition at a time (a second would fail its check),
 * up to `maxInFlight` over all partitions. A process that starts mid-window
 * reads a partition's log on its first commit there, whose check fails.
 *
 * @module
 */
import {
  forEachPackedId,
  hashId,
  type Id64,
  packIds,
  splitId,
} from "../id64.ts";
import type { CommitObserver } from "../store.ts";
import { IdTable } from "./id_table.ts";
import { perIdIds } from "./per_id_layout.ts";
import {
  logEnd,
  logEntryKey,
  type LogHead,
  logHeadKey,
  reportKey,
  windowKey,
  type WindowLayout,
} from "../keys.ts";
import { StoreUnavailableError, WindowClosedError } from "../store.ts";

/** The most ids in one log entry: 64 KiB, Deno KV's largest value. */
export const MAX_IDS_PER_ENTRY = 8192;

/** Options of {@link KvIdLog}. */
export interface KvIdLogOptions {
  /** Partitions of the windows this instance lays out first. */
  partitions: number;
  /** How long log entries live, in ms (see `idLifetime`). */
  entryRetentionMs: number;
  /** How long heads and layouts live at most, in ms. */
  retentionMs: number;
  /**
   * The most ids of one window held in memory; past it, new ids fail as
   * unavailable.
   */
  maxIdsPerWindow: number;
  /**
   * The longest an id may wait from `record` to its commit, in ms; later,
   * it fails as unavailable. Nor may a commit run later than this before
   * the first entries of its window expire (`entryRetentionMs` after the
   * window's start), whenever its ids were asked for. Default: no limit.
   */
  maxCommitWaitMs?: number;
  /** The current time in epoch ms, for the window's deadline. Default: `Date.now`. */
  clock?: () => number;
  /** Commits running at once, over all partitions. Default: 4. */
  maxInFlight?: number;
  /** Runs a KV call, retrying it while it throws. */
  withRetries<T>(call: () => Promise<T>): Promise<T>;
  /** Told about every commit of ids, e.g. for metrics. */
  onCommit?: CommitObserver;
  /** Told when another instance's commit came first. */
  onConflict?: () => void;
  /** Told when an id is refused because its window's memory is full. */
  onFull?: (minute: number) => void;
}

interface Waiter {
  resolve(recorded: boolean): void;
  reject(error: Error): void;
}

/** A new id waiting for its commit. */
interface Pending extends Id64 {
  id: string;
  /** When its commit must have run, by `performance.now()`. */
  deadline: number;
  /** The first request, which learns whether the id is new. */
  first: Waiter;
  /** Later requests for the same id: repeats. */
  repeats: Waiter[] | undefined;
}

interface Partition {
  window: Window;
  index: number;
  /** The head this instance has read up to: its `seq`, count and version. */
  seq: number;
  count: number;
  versionstamp: string | null;
  queue: Pending[];
  committing: boolean;
  scheduled: boolean;
}

interface Window {
  minute: number;
  table: IdTable;
  /** Ids waiting for their commit, by id. */
  pending: Map<string, Pending>;
  /** Set once the window's layout is read or written. */
  partitions: Partition[] | undefined;
  /** Ids that arrived before the layout was known. */
  early: Pending[];
  opening: boolean;
  /** Set once the window is known to be reported. */
  closed: WindowClosedError | undefined;
}

const RESOLVED_REPEAT = Promise.resolve(false);

/**
 * Records ids in the per-window, partitioned log of a Deno KV database.
 *
 * @example
 * ```ts
 * const ids = new KvIdLog(kv, {
 *   partitions: 4,
 *   entryRetentionMs: 360_000,
 *   retentionMs: 3_600_000,
 *   maxIdsPerWindow: 5_000_000,
 *   withRetries: (call) => call(),
 * });
 * await ids.record(minute, "42"); // true
 * ```
 */
export class KvIdLog {
  readonly #kv: Deno.Kv;
  readonly #partitions: number;
  readonly #entryOptions: { expireIn: number };
  readonly #headOptions: { expireIn: number };
  readonly #maxIds: number;
  readonly #maxWaitMs: number;
  readonly #entryRetentionMs: number;
  readonly #clock: () => number;
  readonly #maxInFlight: number;
  readonly #withRetries: KvIdLogOptions["withRetries"];
  readonly #onCommit: KvIdLogOptions["onCommit"];
  readonly #onConflict: KvIdLogOptions["onConflict"];
  readonly #onFull: KvIdLogOptions["onFull"];
  readonly #windows = new Map<number, Window>();
  /** Partitions with queued ids and no commit running, in turn. */
  #ready: Partition[] = [];
  #inFlight = 0;
  /** Ids waiting for their commit, over all windows. */
  #outstanding = 0;
  #drained: (() => void)[] = [];
  /** The last id split on the request path, and its halves. */
  #lastId = "";
  readonly #last: Id64 = { lo: 0, hi: 0 };
  /** Reused by other `splitId` calls. */
  readonly #scratch: Id64 = { lo: 0, hi: 0 };

  constructor(kv: Deno.Kv, options: KvIdLogOptions) {
    this.#kv = kv;
    this.#partitions = options.partitions;
    this.#entryOptions = { expireIn: options.entryRetentionMs };
    this.#headOptions = { expireIn: options.retentionMs };
    this.#maxIds = options.maxIdsPerWindow;
    this.#maxWaitMs = options.maxCommitWaitMs ?? Infinity;
    this.#entryRetentionMs = options.entryRetentionMs;
    this.#clock = options.clock ?? Date.now;
    this.#maxInFlight = options.maxInFlight ?? 4;
    this.#withRetries = options.withRetries;
    this.#onCommit = options.onCommit;
    this.#onConflict = options.onConflict;
    this.#onFull = options.onFull;
  }

  /**
   * Records `id` in the window `minute`.
   *
   * @returns `true` when this call recorded the id, `false` when it was
   *   already in the log.
   */
  record(minute: number, id: string): Promise<boolean> {
    const window = this.#window(minute);
    const { lo, hi } = this.#split(id);
    if (window.table.has(lo, hi)) return RESOLVED_REPEAT;
    if (window.closed) return Promise.reject(window.closed);
    const queued = window.pending.get(id);
    if (queued !== undefined) {
      return new Promise((resolve, reject) => {
        (queued.repeats ??= []).push({ resolve, reject });
      });
    }
    if (window.table.size + window.pending.size >= this.#maxIds) {
      this.#onFull?.(minute);
      return Promise.reject(
        new StoreUnavailableError(
          `Cannot record id ${id}: the window holds ${this.#maxIds} ids, the most kept in memory (KV_MAX_WINDOW_IDS)`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const entry: Pending = {
        id,
        lo,
        hi,
        deadline: this.#deadline(minute),
        first: { resolve, reject },
        repeats: undefined,
      };
      window.pending.set(id, entry);
      this.#outstanding++;
      if (window.partitions === undefined) {
        window.early.push(entry);
        void this.#open(window);
      } else {
        this.#enqueue(window.partitions, entry);
      }
    });
  }

  /** Whether `id` is in this instance's copy of the window's log. */
  knows(minute: number, id: string): boolean {
    const table = this.#windows.get(minute)?.table;
    if (table === undefined) return false;
    const { lo, hi } = this.#split(id);
    return table.has(lo, hi);
  }

  /**
   * The id's halves. A request asks `knows` and then `record` for one id, so
   * the last one is kept.
   */
  #split(id: string): Id64 {
    if (id !== this.#lastId) {
      splitId(id, this.#last);
      this.#lastId = id;
    }
    return this.#last;
  }

  /** How many ids wait for their commit. */
  get queued(): number {
    return this.#outstanding;
  }

  /**
   * When an id asked for now in the window `minute` must be committed, by
   * `performance.now()`: within `maxCommitWaitMs`, and as long before the
   * window's first entries expire, so a conflict always finds every entry
   * of the window (an id may be asked for late, e.g. after a slow URL).
   */
  #deadline(minute: number): number {
    if (this.#maxWaitMs === Infinity) return Infinity;
    const now = performance.now();
    const windowLeft = minute + this.#entryRetentionMs - this.#maxWaitMs -
      this.#clock();
    return now + Math.min(this.#maxWaitMs, windowLeft);
  }

  /** Resolves once every id asked for is committed or failed. */
  async drain(): Promise<void> {
    if (this.#outstanding > 0) {
      await new Promise<void>((resolve) => this.#drained.push(resolve));
    }
  }

  /** The window's state, made on its first id; windows long closed go. */
  #window(minute: number): Window {
    let window = this.#windows.get(minute);
    if (window !== undefined) return window;
    let previous: Window | undefined;
    for (const other of this.#windows.values()) {
      if (other.minute < minute && other.minute > (previous?.minute ?? -1)) {
        previous = other;
      }
    }
    // Ids only arrive in the current window; the one before may still be
    // committing. Older ones are kept only while ids wait in them.
    for (const [m, other] of this.#windows) {
      if (m < minute && other !== previous && other.pending.size === 0) {
        this.#windows.delete(m);
      }
    }
    window = {
      minute,
      // Sized like the window before, so a steady load does not regrow it.
      table: new IdTable(previous?.table.size ?? 0),
      pending: new Map(),
      partitions: undefined,
      early: [],
      opening: false,
      closed: undefined,
    };
    this.#windows.set(minute, window);
    return window;
  }

  /**
   * Reads or writes the window's layout, then queues the ids that arrived
   * meanwhile; when that fails, they fail and the next id tries again.
   */
  async #open(window: Window): Promise<void> {
    if (window.opening) return;
    window.opening = true;
    let failure: Error | undefined;
    try {
      // The first id's deadline bounds the wait: no other is older.
      const deadline = window.early[0]!.deadline;
      const partitions = await this.#readLayout(window.minute, deadline);
      for (
        const id of await perIdIds(this.#kv, window.minute, this.#withRetries)
      ) {
        // Counted through that layout's shards: here they are repeats.
        const { lo, hi } = splitId(id, this.#scratch);
        window.table.add(lo, hi);
      }
      window.partitions = Array.from({ length: partitions }, (_, index) => ({
        window,
        index,
        seq: 0,
        count: 0,
        versionstamp: null,
        queue: [],
        committing: false,
        scheduled: false,
      }));
    } catch (error) {
      if (error instanceof WindowClosedError) window.closed = error;
      failure = error instanceof WindowClosedError
        ? error
        : unavailable(error, "Cannot open the window's id log");
    }
    window.opening = false;
    const early = window.early;
    window.early = [];
    for (const entry of early) {
      if (window.partitions === undefined) {
        this.#reject(window, entry, failure!);
      } else {
        this.#enqueue(window.partitions, entry);
      }
    }
  }

  /**
   * The number of partitions of the window's log: the first instance to
   * write in a window fixes it, so instances with different settings still
   * agree on where each id goes.
   */
  async #readLayout(minute: number, deadline: number): Promise<number> {
    const key = windowKey(minute);
    const layout: WindowLayout = { partitions: this.#partitions };
    for (;;) {
      const result = await this.#withRetries(() =>
        checkDeadline(deadline) ?? this.#kv.atomic()
          .check({ key, versionstamp: null })
          .check({ key: reportKey(minute), versionstamp: null })
          .set(key, layout, this.#headOptions)
          .commit()
      );
      if (result.ok) return layout.partitions;
      const [stored, report] = await this.#withRetries(() =>
        this.#kv.getMany<[WindowLayout, unknown]>([key, reportKey(minute)])
      );
      if (report.versionstamp !== null) throw new WindowClosedError(minute);
      if (stored.value !== null) return stored.value.partitions;
    }
  }

  #enqueue(partitions: Partition[], entry: Pending): void {
    const part = partitions[hashId(entry.lo, entry.hi, 0) % partitions.length]!;
    part.queue.push(entry);
    this.#schedule(part);
    this.#flush();
  }

  #schedule(part: Partition): void {
    if (part.scheduled || part.committing) return;
    part.scheduled = true;
    this.#ready.push(part);
  }

  /** Starts commits while partitions wait and commit slots are free. */
  #flush(): void {
    while (this.#inFlight < this.#maxInFlight && this.#ready.length > 0) {
      const part = this.#ready.shift()!;
      part.scheduled = false;
      if (part.committing || part.queue.length === 0) continue;
      part.committing = true;
      this.#inFlight++;
      // The next commit starts before the callers of this one run, so the
      // database does not wait for them.
      void this.#commitPartition(part).then((finish) => {
        this.#release(part);
        finish();
      }, (error) => {
        this.#release(part);
        throw error;
      });
    }
  }

  /** Ends a partition's commit and starts whatever can start. */
  #release(part: Partition): void {
    part.committing = false;
    this.#inFlight--;
    if (part.queue.length > 0) this.#schedule(part);
    this.#flush();
  }

  /**
   * Commits the partition's queue, catching up with the log on conflicts.
   *
   * @returns What settles the last batch's callers, to run once the
   *   partition is free for its next commit.
   */
  async #commitPartition(part: Partition): Promise<() => void> {
    const window = part.window;
    let batch = this.#take(part, []);
    while (batch.length > 0) {
      let deadline = Infinity;
      for (const entry of batch) deadline = Math.min(deadline, entry.deadline);
      const started = performance.now();
      let result: Deno.KvCommitResult | Deno.KvCommitError;
      try {
        result = await this.#withRetries(() =>
          this.#append(part, batch, deadline)
        );
      } catch (error) {
        this.#onCommit?.(batch.length, elapsed(started), false);
        const failure = unavailable(error);
        return () => this.#failAll(window, batch, failure);
      }
      if (result.ok) {
        this.#onCommit?.(batch.length, elapsed(started), true);
        part.seq++;
        part.count += batch.length;
        part.versionstamp = result.versionstamp;
        for (const entry of batch) window.table.add(entry.lo, entry.hi);
        const recorded = batch;
        return () => {
          for (const entry of recorded) this.#settle(window, entry, true);
        };
      }
      this.#onConflict?.();
      try {
        await this.#catchUp(part);
      } catch (error) {
        const failure = unavailable(error);
        return () => this.#failAll(window, batch, failure);
      }
      const closed = window.closed;
      if (closed) {
        const failed = [...batch, ...part.queue.splice(0)];
        return () => this.#failAll(window, failed, closed);
      }
      batch = this.#take(part, batch);
    }
    return () => {};
  }

  /**
   * Takes the ids to commit next: those of `kept` still new, then the
   * queue's, up to {@link MAX_IDS_PER_ENTRY}. Ids found in the log are
   * settled as repeats, ids past their deadline fail.
   */
  #take(part: Partition, kept: Pending[]): Pending[] {
    const window = part.window;
    const now = performance.now();
    const batch: Pending[] = [];
    const consider = (entry: Pending) => {
      if (window.table.has(entry.lo, entry.hi)) {
        this.#settle(window, entry, false);
      } else if (now > entry.deadline) {
        this.#reject(
          window,
          entry,
          new StoreUnavailableError(
            `Cannot record id ${entry.id}: the deadline for its commit has passed`,
          ),
        );
      } else {
        batch.push(entry);
      }
    };
    kept.forEach(consider);
    let taken = 0;
    const queue = part.queue;
    while (taken < queue.length && batch.length < MAX_IDS_PER_ENTRY) {
      consider(queue[taken++]!);
    }
    queue.splice(0, taken);
    return batch;
  }

  /** One commit: the next entry and head, if the head is the one read. */
  #append(
    part: Partition,
    batch: Pending[],
    deadline: number,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    // Checked on every attempt: past the deadline, entries of this window
    // may have expired, and a commit could count an id twice.
    checkDeadline(deadline);
    const { minute } = part.window;
    const head: LogHead = {
      seq: part.seq + 1,
      count: part.count + batch.length,
    };
    return this.#kv.atomic()
      .check({
        key: logHeadKey(minute, part.index),
        versionstamp: part.versionstamp,
      })
      .check({ key: reportKey(minute), versionstamp: null })
      .set(logHeadKey(minute, part.index), head, this.#headOptions)
      .set(
        logEntryKey(minute, part.index, head.seq),
        packIds(batch),
        this.#entryOptions,
      )
      .commit();
  }

  /**
   * Reads the partition's entries after the cursor and its head, in one
   * range read (the head sorts last), adding their ids to the table. A head
   * that did not move means the report check failed: the window is closed.
   */
  async #catchUp(part: Partition): Promise<void> {
    const { minute, table } = part.window;
    const entries = await this.#withRetries(() =>
      Array.fromAsync(
        this.#kv.list<Uint8Array | LogHead>({
          start: logEntryKey(minute, part.index, part.seq + 1),
          end: logEnd(minute, part.index),
        }),
      )
    );
    let head: Deno.KvEntry<LogHead> | undefined;
    for (const entry of entries) {
      if (entry.value instanceof Uint8Array) {
        forEachPackedId(entry.value, (lo, hi) => table.add(lo, hi));
      } else {
        head = entry as Deno.KvEntry<LogHead>;
      }
    }
    if (head === undefined || head.versionstamp === part.versionstamp) {
      const report = await this.#withRetries(() =>
        this.#kv.get(reportKey(minute))
      );
      if (report.versionstamp !== null) {
        part.window.closed = new WindowClosedError(minute);
        return;
      }
      if (head === undefined && part.versionstamp !== null) {
        // Heads outlive every commit the deadline allows; one that is gone
        // cannot be written again without overwriting its entries.
        throw new StoreUnavailableError(
          `Cannot record ids: the head of partition ${part.index} has expired`,
        );
      }
      return;
    }
    part.seq = head.value.seq;
    part.count = head.value.count;
    part.versionstamp = head.versionstamp;
  }

  #settle(window: Window, entry: Pending, recorded: boolean): void {
    this.#forget(window, entry);
    entry.first.resolve(recorded);
    for (const waiter of entry.repeats ?? []) waiter.resolve(false);
  }

  #reject(window: Window, entry: Pending, error: Error): void {
    this.#forget(window, entry);
    entry.first.reject(error);
    for (const waiter of entry.repeats ?? []) waiter.reject(error);
  }

  #failAll(window: Window, entries: Pending[], error: Error): void {
    for (const entry of entries) this.#reject(window, entry, error);
  }

  #forget(window: Window, entry: Pending): void {
    window.pending.delete(entry.id);
    if (--this.#outstanding === 0) {
      for (const resolve of this.#drained.splice(0)) resolve();
    }
  }
}

/** Throws when `deadline` (a `performance.now()` time) has passed. */
function checkDeadline(deadline: number): undefined {
  if (performance.now() > deadline) {
    throw new StoreUnavailableError(
      "Cannot record ids: the deadline for their commit has passed",
    );
  }
}

function elapsed(started: number): number {
  return (performance.now() - started) / 1000;
}

function unavailable(
  error: unknown,
  context = "Cannot record ids",
): StoreUnavailableError {
  return error instanceof StoreUnavailableError
    ? error
    : new StoreUnavailableError(`${context}: ${(error as Error).message}`, {
      cause: error,
    });
}
