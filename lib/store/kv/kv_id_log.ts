/**
 * The KV store's ids: per window, a log of new ids split into partitions.
 * Each partition has a head, the count of its ids, an owner, and entries
 * numbered from 1, each holding the ids that became new in one commit,
 * packed 8 bytes each. The heads are the window's sharded counter: its
 * unique count is the sum of their counts.
 *
 * In memory, per open window, an {@link IdTable} holds every id this
 * instance has read in or written to the log, and each partition remembers
 * how far it has read. A new id joins its partition's queue; a commit takes
 * the queue (up to {@link MAX_IDS_PER_ENTRY} ids) and, in one atomic
 * operation, checks that the window is not reported, writes the next entry
 * and adds its ids to the head:
 *
 * - An instance that does not own the partition checks that the head is the
 *   one it read, and takes the partition: it writes the owner key.
 * - The owner checks only the owner key, which its own commits leave alone,
 *   so several of its commits run at once: one for every `commitSpacingMs`
 *   commits take lately, up to `depth`. Another instance's takeover
 *   moves the owner key and fails all of them.
 *
 * A commit that fails its check, or throws (it may have been written), ends
 * the ownership: the partition's log is read from the first entry not read
 * yet (the head sorts last), the ids found there are repeats, and the rest
 * is committed again as a takeover. A read whose entries add up to less than
 * the head's count has missed an entry that landed behind it and reads
 * again. A failed check always brings a commit that landed (another
 * instance's, or this one's whose answer was lost), so there is no limit on
 * rounds: an id fails only when its commit deadline passes, the store
 * throws, or the window is reported.
 *
 * With `gather` (buffered mode, where no answer waits for a commit), a
 * partition's next commit starts no sooner than `gather.ms` after its last
 * one did, unless `gather.ids` ids wait over all partitions: under load,
 * fewer and larger commits.
 *
 * At most `maxInFlight` commits and reads run over all partitions. A process
 * that starts mid-window reads a partition's log on its first commit there,
 * whose check fails.
 *
 * Within `openAheadMs` of a window's end (at most a tenth of the window), by
 * this instance's clock, the first commit there lays out the next window and
 * claims each of its partitions, one after the other (an empty takeover), so
 * that the next window's first ids commit as its owner at once, in one
 * round trip, instead of three: the layout, a takeover, and then the ids
 * that arrived during it. The claims run one at a time, beside the
 * `maxInFlight` commits and reads.
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
import { MINUTE_MS } from "../../minute.ts";
import type { CommitObserver, IdWaiter } from "../store.ts";
import { CommitGate, type GatherOptions } from "../commit_gate.ts";
import { IdTable } from "./id_table.ts";
import { perIdIds } from "./per_id_layout.ts";
import {
  countOfHead,
  logEnd,
  logEntryKey,
  type LogHead,
  logHeadKey,
  logOwnerKey,
  reportKey,
  seqOfLogEntryKey,
  windowKey,
  type WindowLayout,
} from "../keys.ts";
import {
  StoreUnavailableError,
  untilRecorded,
  WindowClosedError,
} from "../store.ts";

/** How often an owner starts a commit at least by default, in ms. */
export const COMMIT_SPACING_MS = 20;

/** How long before a window ends the store opens the next one, in ms. */
export const OPEN_AHEAD_MS = 5000;

/** The weight of the latest commit in the moving average of their time. */
const COMMIT_MS_WEIGHT = 0.1;

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
  /** Commits and reads running at once, over all partitions. Default: 4. */
  maxInFlight?: number;
  /**
   * The most commits running at once in one partition this instance owns:
   * one for every `commitSpacingMs` commits have taken lately, up to this.
   * Default: 1.
   */
  depth?: number;
  /**
   * How often an owner starts a commit in a partition at least, in ms, while
   * `depth` allows; 0 keeps `depth` in flight however fast commits are.
   * Default: {@link COMMIT_SPACING_MS}.
   */
  commitSpacingMs?: number;
  /**
   * Handles to the same database as `kv` (each its own connection) for the
   * log's commits and reads: each runs on a handle no other one runs on
   * while one is idle, on `kv` when none is. Deno's KV Connect client
   * leaves Nagle's algorithm on, so a request sent while another waits for
   * its answer on the same connection can wait for the peer's delayed ACK.
   * Default: none, all on `kv`.
   */
  connections?: Deno.Kv[];
  /**
   * How long before a window ends, in ms, a commit in it opens the next
   * window ahead: writes its layout and claims its partitions. 0: a window
   * opens on its first id. Default: 0.
   */
  openAheadMs?: number;
  /** The length of a window, in ms. Default: {@link MINUTE_MS}. */
  windowMs?: number;
  /** How a partition gathers ids between its commits, over all partitions' ids. */
  gather?: GatherOptions;
  /** Runs a KV call, retrying it while it throws. */
  withRetries<T>(call: () => Promise<T>): Promise<T>;
  /** Told about every commit of ids, e.g. for metrics. */
  onCommit?: CommitObserver;
  /** Told when another instance's commit came first. */
  onConflict?: () => void;
  /** Told when an id is refused because its window's memory is full. */
  onFull?: (minute: number) => void;
}

/** A new id waiting for its commit. */
interface Pending extends Id64 {
  id: string;
  /** When its commit must have run, by `performance.now()`. */
  deadline: number;
  /** The first request, which learns whether the id is new. */
  first: IdWaiter;
  /** Later requests for the same id: repeats. */
  repeats: IdWaiter[] | undefined;
}

interface Partition {
  window: Window;
  index: number;
  /** The highest entry number this instance has read, written or tried. */
  seq: number;
  /**
   * Entry numbers up to `seq` not read: commits that failed, or another
   * owner's that may still land.
   */
  holes: Set<number>;
  /** The ids in the entries read or written. */
  known: number;
  /** The head as last read or written by a takeover. */
  headCount: number;
  headVersionstamp: string | null;
  /** The owner key's versionstamp while this instance owns the partition. */
  owned: string | null;
  /** Whether the log must be read before the next commit. */
  stale: boolean;
  queue: Pending[];
  /** Commits running. */
  committing: number;
  /** Whether a read of the log is running. */
  reading: boolean;
  scheduled: boolean;
  /** Holds the next commit while ids gather. */
  gate: CommitGate;
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

/** The most reads in a row that find the head ahead of its entries. */
const MAX_READS = 100;

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
  readonly #depth: number;
  readonly #spacingMs: number;
  readonly #openAheadMs: number;
  readonly #windowMs: number;
  /** Unset once the log drains: nothing gathers any longer. */
  #gather: GatherOptions | undefined;
  /** The latest window opened ahead. */
  #openedAhead = -Infinity;
  /** Settles once the latest window opened ahead is laid out and claimed. */
  #ahead: Promise<void> = Promise.resolve();
  /** This instance's name in the owner keys it writes. */
  readonly #owner = crypto.randomUUID();
  readonly #withRetries: KvIdLogOptions["withRetries"];
  readonly #onCommit: KvIdLogOptions["onCommit"];
  readonly #onConflict: KvIdLogOptions["onConflict"];
  readonly #onFull: KvIdLogOptions["onFull"];
  readonly #windows = new Map<number, Window>();
  /** Partitions with queued ids and no commit running, in turn. */
  #ready: Partition[] = [];
  #inFlight = 0;
  /** How long commits took lately, in ms: a moving average. */
  #commitMs = 0;
  /** The handles no commit or read is running on. */
  readonly #idle: Deno.Kv[];
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
    this.#depth = options.depth ?? 1;
    this.#spacingMs = options.commitSpacingMs ?? COMMIT_SPACING_MS;
    this.#windowMs = options.windowMs ?? MINUTE_MS;
    this.#openAheadMs = Math.min(options.openAheadMs ?? 0, this.#windowMs / 10);
    this.#gather = options.gather;
    this.#idle = [...options.connections ?? [kv]];
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
    return untilRecorded((waiter) => this.queue(minute, id, waiter));
  }

  /**
   * Records `id` in the window `minute`, and tells `waiter` once: at once
   * for an id in the log or a window known closed, else after the commit.
   */
  queue(minute: number, id: string, waiter: IdWaiter): void {
    const window = this.#window(minute);
    const { lo, hi } = this.#split(id);
    if (window.table.has(lo, hi)) return waiter.resolve(false);
    if (window.closed) return waiter.reject(window.closed, id);
    const queued = window.pending.get(id);
    if (queued !== undefined) {
      (queued.repeats ??= []).push(waiter);
      return;
    }
    if (window.table.size + window.pending.size >= this.#maxIds) {
      this.#onFull?.(minute);
      return waiter.reject(
        new StoreUnavailableError(
          `Cannot record id ${id}: the window holds ${this.#maxIds} ids, the most kept in memory (KV_MAX_WINDOW_IDS)`,
        ),
        id,
      );
    }
    const entry: Pending = {
      id,
      lo,
      hi,
      deadline: this.#deadline(minute),
      first: waiter,
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

  /**
   * Resolves once every id asked for is committed or failed, and the
   * window opened ahead is laid out and claimed; from then on commits no
   * longer gather.
   */
  async drain(): Promise<void> {
    // Held commits go now: nothing arrives after a drain to gather with.
    this.#gather = undefined;
    for (const window of this.#windows.values()) {
      for (const part of window.partitions ?? []) part.gate.open();
    }
    if (this.#outstanding > 0) {
      await new Promise<void>((resolve) => this.#drained.push(resolve));
    }
    await this.#ahead;
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
      const deadline = window.early[0]?.deadline ??
        this.#deadline(window.minute);
      // Both at once: on a remote database, one round trip instead of two.
      const [partitions, earlierIds] = await Promise.all([
        this.#on((kv) => this.#readLayout(kv, window.minute, deadline)),
        this.#on((kv) => perIdIds(kv, window.minute, this.#withRetries)),
      ]);
      for (const id of earlierIds) {
        // Counted through that layout's shards: here they are repeats.
        const { lo, hi } = splitId(id, this.#scratch);
        window.table.add(lo, hi);
      }
      window.partitions = Array.from({ length: partitions }, (_, index) => {
        const part: Partition = {
          window,
          index,
          seq: 0,
          holes: new Set(),
          known: 0,
          headCount: 0,
          headVersionstamp: null,
          owned: null,
          stale: false,
          queue: [],
          committing: 0,
          reading: false,
          scheduled: false,
          gate: new CommitGate(this.#gather, () => {
            this.#schedule(part);
            this.#flush();
          }),
        };
        return part;
      });
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
  async #readLayout(
    kv: Deno.Kv,
    minute: number,
    deadline: number,
  ): Promise<number> {
    const key = windowKey(minute);
    const layout: WindowLayout = { partitions: this.#partitions };
    for (;;) {
      const result = await this.#withRetries(() =>
        checkDeadline(deadline) ?? kv.atomic()
          .check({ key, versionstamp: null })
          .check({ key: reportKey(minute), versionstamp: null })
          .set(key, layout, this.#headOptions)
          .commit()
      );
      if (result.ok) return layout.partitions;
      const [stored, report] = await this.#withRetries(() =>
        kv.getMany<[WindowLayout, unknown]>([key, reportKey(minute)])
      );
      if (report.versionstamp !== null) throw new WindowClosedError(minute);
      if (stored.value !== null) return stored.value.partitions;
    }
  }

  /**
   * Runs `call` on an idle handle, so that no other commit or read of the
   * log shares its connection; on `kv` when every handle is busy.
   */
  async #on<T>(call: (kv: Deno.Kv) => Promise<T>): Promise<T> {
    const idle = this.#idle.pop();
    try {
      return await call(idle ?? this.#kv);
    } finally {
      if (idle !== undefined) this.#idle.push(idle);
    }
  }

  #enqueue(partitions: Partition[], entry: Pending): void {
    const part = partitions[hashId(entry.lo, entry.hi, 0) % partitions.length]!;
    part.queue.push(entry);
    this.#schedule(part);
    this.#flush();
  }

  /**
   * Whether the partition can start a commit or a read now: an owner up to
   * `depth` commits, anyone else one at a time, after reading what it missed.
   */
  #canStart(part: Partition): boolean {
    if (part.reading || part.gate.holds(this.#waiting(part))) return false;
    if (part.owned !== null) {
      return part.committing < this.#ownerDepth() && part.queue.length > 0;
    }
    return part.committing === 0 && part.queue.length > 0;
  }

  /**
   * The commits an owner keeps in flight: enough that one starts at least
   * every `commitSpacingMs` while commits take as long as they have lately,
   * at most `depth`. A nearby database needs one; a distant one more, so
   * that an id waits less for its turn.
   */
  #ownerDepth(): number {
    if (this.#spacingMs === 0) return this.#depth;
    return Math.min(
      this.#depth,
      Math.max(1, Math.ceil(this.#commitMs / this.#spacingMs)),
    );
  }

  /**
   * The ids that count against `gather.ids` for the partition: every id
   * waiting for its commit, or as many as a commit takes when its queue
   * holds a full entry.
   */
  #waiting(part: Partition): number {
    return part.queue.length >= MAX_IDS_PER_ENTRY
      ? Infinity
      : this.#outstanding;
  }

  #schedule(part: Partition): void {
    if (part.scheduled || !this.#canStart(part)) return;
    part.scheduled = true;
    this.#ready.push(part);
  }

  /** Starts commits and reads while partitions wait and slots are free. */
  #flush(): void {
    while (this.#inFlight < this.#maxInFlight && this.#ready.length > 0) {
      const part = this.#ready.shift()!;
      part.scheduled = false;
      if (!this.#canStart(part)) continue;
      if (part.owned === null && part.stale) {
        this.#startRead(part);
      } else if (part.gate.tryStart(this.#waiting(part))) {
        this.#startCommit(part);
        // An owner may start another commit with what is left.
        this.#schedule(part);
      }
    }
  }

  #startCommit(part: Partition): void {
    const batch = this.#take(part);
    if (batch.length === 0) return;
    this.#openAhead(part.window.minute);
    const takeover = part.owned === null;
    const seq = ++part.seq;
    part.committing++;
    this.#inFlight++;
    // The next commit starts before the callers of this one run, so the
    // database does not wait for them.
    void this.#commit(part, batch, seq, takeover).then((finish) => {
      this.#release(part);
      finish();
    }, (error) => {
      this.#release(part);
      throw error;
    });
  }

  /** Ends a commit or claim in the partition, and starts what waits. */
  #release(part: Partition): void {
    part.committing--;
    this.#inFlight--;
    this.#schedule(part);
    this.#flush();
  }

  /**
   * Opens the window after `minute` when `minute` ends within
   * `openAheadMs`, once: lays it out, then claims its partitions one after
   * the other.
   */
  #openAhead(minute: number): void {
    const next = minute + this.#windowMs;
    if (this.#openAheadMs === 0 || this.#openedAhead >= next) return;
    const now = this.#clock();
    if (now < next - this.#openAheadMs || now >= next) return;
    this.#openedAhead = next;
    if (this.#windows.has(next)) return;
    const window = this.#window(next);
    this.#ahead = this.#open(window).then(async () => {
      for (const part of window.partitions ?? []) await this.#claim(part);
    });
  }

  /**
   * Takes a partition no id has reached yet with no entry: writes its head
   * (no ids) and its owner key, if no head is there. When another instance
   * came first, or the commit throws, the partition's log is read before
   * its first commit.
   */
  async #claim(part: Partition): Promise<void> {
    if (part.committing > 0 || part.reading || part.stale || part.seq > 0) {
      return;
    }
    part.committing++;
    this.#inFlight++;
    const { minute } = part.window;
    const headKey = logHeadKey(minute, part.index);
    try {
      const result = await this.#on((kv) =>
        this.#withRetries(() =>
          kv.atomic()
            .check({ key: reportKey(minute), versionstamp: null })
            .check({ key: headKey, versionstamp: null })
            .set(headKey, new Deno.KvU64(0n), this.#headOptions)
            .set(
              logOwnerKey(minute, part.index),
              this.#owner,
              this.#headOptions,
            )
            .commit()
        )
      );
      if (result.ok) {
        part.owned = result.versionstamp;
        part.headVersionstamp = result.versionstamp;
      } else {
        this.#onConflict?.();
        part.stale = true;
      }
    } catch {
      part.stale = true;
    } finally {
      this.#release(part);
    }
  }

  #startRead(part: Partition): void {
    part.reading = true;
    this.#inFlight++;
    const window = part.window;
    void this.#on((kv) => this.#read(kv, part)).then(() => {
      part.stale = false;
      if (window.closed) {
        this.#failAll(window, part.queue.splice(0), window.closed);
      }
    }, (error) => {
      this.#failAll(
        window,
        part.queue.splice(0),
        unavailable(error, "Cannot read the window's id log"),
      );
    }).finally(() => {
      part.reading = false;
      this.#inFlight--;
      this.#schedule(part);
      this.#flush();
    });
  }

  /**
   * One commit of `batch` as entry `seq`, as the owner or as a takeover.
   *
   * @returns What settles the batch's callers, to run once the next commits
   *   have started.
   */
  async #commit(
    part: Partition,
    batch: Pending[],
    seq: number,
    takeover: boolean,
  ): Promise<() => void> {
    const window = part.window;
    let deadline = Infinity;
    for (const entry of batch) deadline = Math.min(deadline, entry.deadline);
    const owner = part.owned;
    const started = performance.now();
    let result: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      result = await this.#on((kv) =>
        this.#withRetries(() =>
          this.#append(
            kv,
            part,
            batch,
            seq,
            takeover ? undefined : owner,
            deadline,
          )
        )
      );
    } catch (error) {
      this.#onCommit?.(batch.length, elapsed(started), false);
      // It may have been written: read the log before the next commit.
      this.#lose(part, seq);
      const failure = unavailable(error);
      return () => this.#failAll(window, batch, failure);
    }
    if (!result.ok) {
      this.#onConflict?.();
      this.#lose(part, seq);
      // Committed again after the read, unless found there.
      part.queue = batch.concat(part.queue);
      return () => {};
    }
    const seconds = elapsed(started);
    this.#onCommit?.(batch.length, seconds, true);
    this.#commitMs += (seconds * 1000 - this.#commitMs) * COMMIT_MS_WEIGHT;
    part.known += batch.length;
    if (takeover) {
      part.owned = result.versionstamp;
      part.headCount += batch.length;
      part.headVersionstamp = result.versionstamp;
      // Whoever owned the partition before can no longer write.
      part.holes.clear();
    }
    for (const entry of batch) window.table.add(entry.lo, entry.hi);
    return () => {
      for (const entry of batch) this.#settle(window, entry, true);
    };
  }

  /** Ends the ownership after a failed commit of entry `seq`. */
  #lose(part: Partition, seq: number): void {
    part.owned = null;
    part.stale = true;
    part.holes.add(seq);
  }

  /**
   * Takes the ids to commit next from the queue, up to
   * {@link MAX_IDS_PER_ENTRY}. Ids found in the log are settled as repeats,
   * ids past their deadline fail.
   */
  #take(part: Partition): Pending[] {
    const window = part.window;
    const now = performance.now();
    const batch: Pending[] = [];
    let taken = 0;
    const queue = part.queue;
    while (taken < queue.length && batch.length < MAX_IDS_PER_ENTRY) {
      const entry = queue[taken++]!;
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
    }
    queue.splice(0, taken);
    return batch;
  }

  /**
   * One attempt of a commit: entry `seq` and its count added to the head,
   * checked by the owner key's versionstamp `owner`, or, for a takeover
   * (`undefined`), by the head read, writing the owner key.
   */
  #append(
    kv: Deno.Kv,
    part: Partition,
    batch: Pending[],
    seq: number,
    owner: string | null | undefined,
    deadline: number,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    // Checked on every attempt: past the deadline, entries of this window
    // may have expired, and a commit could count an id twice.
    checkDeadline(deadline);
    const { minute } = part.window;
    const headKey = logHeadKey(minute, part.index);
    const op = kv.atomic()
      .check({ key: reportKey(minute), versionstamp: null });
    if (owner === undefined) {
      const count = new Deno.KvU64(BigInt(part.headCount + batch.length));
      op.check({ key: headKey, versionstamp: part.headVersionstamp })
        .set(headKey, count, this.#headOptions)
        .set(logOwnerKey(minute, part.index), this.#owner, this.#headOptions);
    } else {
      // The owner's own commits leave both keys alone: a retry of one that
      // was written finds its entry, not the sum twice.
      op.check({ key: logOwnerKey(minute, part.index), versionstamp: owner })
        .check({
          key: logEntryKey(minute, part.index, seq),
          versionstamp: null,
        })
        .sum(headKey, BigInt(batch.length));
    }
    return op
      .set(
        logEntryKey(minute, part.index, seq),
        packIds(batch),
        this.#entryOptions,
      )
      .commit();
  }

  /**
   * Reads the partition's entries not read yet, its owner and its head, in
   * one range read from the first of them (the head sorts last), adding
   * their ids to the table; again while the entries read add up to less
   * than the head. Nothing new means the report check failed, or a commit
   * that threw was not written.
   */
  async #read(kv: Deno.Kv, part: Partition): Promise<void> {
    const { minute, table } = part.window;
    let moved = false;
    for (let reads = 0; reads < MAX_READS; reads++) {
      let start = part.seq + 1;
      for (const hole of part.holes) start = Math.min(start, hole);
      const entries = await this.#withRetries(() =>
        Array.fromAsync(
          kv.list<Uint8Array | string | Deno.KvU64 | LogHead>({
            start: logEntryKey(minute, part.index, start),
            end: logEnd(minute, part.index),
          }),
        )
      );
      let head: Deno.KvEntry<Deno.KvU64 | LogHead> | undefined;
      for (const entry of entries) {
        const value = entry.value;
        if (value instanceof Uint8Array) {
          const seq = seqOfLogEntryKey(entry.key);
          // Read before, unless it was a hole.
          if (seq <= part.seq && !part.holes.delete(seq)) continue;
          for (let missing = part.seq + 1; missing < seq; missing++) {
            part.holes.add(missing);
          }
          part.seq = Math.max(part.seq, seq);
          part.known += forEachPackedId(
            value,
            (lo, hi) => table.add(lo, hi),
          );
          moved = true;
        } else if (typeof value !== "string") {
          head = entry as Deno.KvEntry<Deno.KvU64 | LogHead>;
        }
      }
      const versionstamp = head?.versionstamp ?? null;
      const gone = head === undefined && part.headVersionstamp !== null;
      if (versionstamp !== part.headVersionstamp) moved = true;
      if (gone || !moved) {
        const report = await this.#withRetries(() => kv.get(reportKey(minute)));
        if (report.versionstamp !== null) {
          part.window.closed = new WindowClosedError(minute);
          return;
        }
        if (gone) {
          // Heads outlive every commit the deadline allows; one that is gone
          // cannot be written again without overwriting its entries.
          throw new StoreUnavailableError(
            `Cannot record ids: the head of partition ${part.index} has expired`,
          );
        }
        // Nothing new: a commit that threw was not written.
        return;
      }
      part.headVersionstamp = versionstamp;
      part.headCount = countOfHead(head?.value ?? null);
      if (part.known > part.headCount) {
        throw new StoreUnavailableError(
          `Cannot record ids: partition ${part.index} holds more ids than its head counts`,
        );
      }
      if (part.known < part.headCount) continue;
      return;
    }
    throw new StoreUnavailableError(
      `Cannot record ids: partition ${part.index}'s entries kept landing behind its reads`,
    );
  }

  #settle(window: Window, entry: Pending, recorded: boolean): void {
    this.#forget(window, entry);
    entry.first.resolve(recorded);
    for (const waiter of entry.repeats ?? []) waiter.resolve(false);
  }

  #reject(window: Window, entry: Pending, error: Error): void {
    this.#forget(window, entry);
    entry.first.reject(error, entry.id);
    for (const waiter of entry.repeats ?? []) waiter.reject(error, entry.id);
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
