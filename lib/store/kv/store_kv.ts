/**
 * The Deno KV store. Ids go to a per-window, partitioned log of new ids
 * ({@link KvIdLog}): one atomic operation records up to 8 192 new ids of a
 * partition behind one check of its head, so the store holds thousands of
 * ids per commit on a local file, over KV Connect and on Deno Deploy alike.
 * Webhook URLs, report claims, the outbox and delivery records are one key
 * each (see `keys.ts`).
 *
 * Upgrading from the per-id layout of earlier versions: windows that still
 * have a count in that layout are read as well (their count, their ids when
 * they are still open, their removal once reported), so a file written by
 * an earlier version is not miscounted once every instance of that version
 * has stopped.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { wholeNumber } from "../checks.ts";
import type { GatherOptions } from "../commit_gate.ts";
import { commitsInFlight } from "../../config.ts";
import { backoffDelay, sleep } from "../../backoff.ts";
import { MINUTE_MS } from "../../minute.ts";
import {
  allWindowsPrefix,
  countOfHead,
  deliveryKey,
  deliveryPrefix,
  type LogHead,
  logHeadKey,
  logOwnerKey,
  minuteOfKey,
  outboxKey,
  outboxPrefix,
  reportKey,
  type ReportRecord,
  sinkOfKey,
  urlCountKey,
  urlDoneKey,
  urlDonePrefix,
  urlHashOfKey,
  urlKey,
  urlPrefix,
  windowKey,
  type WindowLayout,
} from "../keys.ts";
import type { CommitObserver } from "../store.ts";
import { COMMIT_SPACING_MS, KvIdLog, OPEN_AHEAD_MS } from "./kv_id_log.ts";
import { perIdCount, perIdCounters, perIdWindows } from "./per_id_layout.ts";
import {
  deliveryRecord,
  newOutboxEntry,
  type StoredOutboxEntry,
  storedOutboxEntry,
} from "../outbox.ts";
import {
  type ClaimOutcome,
  type DeliveryOutcome,
  type DeliveryRecord,
  type IdWaiter,
  type NewOutboxEntries,
  type OutboxChange,
  type OutboxEntry,
  type Store,
  StoreUnavailableError,
  type UrlOutcome,
  WindowClosedError,
  type WindowStats,
} from "../store.ts";

/** Deno KV's limit on keys in one `getMany`. */
const MAX_GET_MANY = 10;

/** How long log entries outlive their window, at least (within the retention). */
const ID_MARGIN_MS = 300_000;

/** How long log entries live, and how long an id may wait for its commit. */
export interface IdLifetime {
  /** How long each log entry lives, in ms. */
  idRetentionMs: number;
  /** The longest an id may wait from its request to its commit, in ms. */
  maxCommitWaitMs: number;
}

/**
 * How long the entries of a window's id log need to live. Ids arrive only
 * during their window, so an entry only serves to deduplicate until the
 * last commit for its window; the store fails ids that could not be
 * committed within `maxCommitWaitMs` of their request, or by
 * `maxCommitWaitMs` before their window's first entries expire, so no commit
 * can find an entry of its window expired: an entry is written no earlier
 * than its window's start and lives `idRetentionMs`, while every commit runs
 * before the window's start plus `idRetentionMs - maxCommitWaitMs`, its end
 * plus `maxCommitWaitMs`, which is half of what the entries outlive the
 * window by. Entries live for the window plus five minutes, at
 * least two windows, at most `retentionMs`. Other keys live for the whole
 * retention, but ids are by far the largest part, so this bounds the
 * database's size.
 *
 * @example
 * ```ts
 * idLifetime(60_000, 3_600_000);
 * // { idRetentionMs: 360000, maxCommitWaitMs: 150000 }
 * ```
 */
export function idLifetime(windowMs: number, retentionMs: number): IdLifetime {
  const idRetentionMs = Math.min(
    retentionMs,
    Math.max(2 * windowMs, windowMs + ID_MARGIN_MS),
  );
  return { idRetentionMs, maxCommitWaitMs: (idRetentionMs - windowMs) / 2 };
}

/** Options of {@link createKvStore}. */
export interface KvStoreOptions {
  /** How long per-window keys live, in ms; at least two windows. */
  retentionMs: number;
  /**
   * How long log entries live, in ms (see {@link idLifetime}). Default:
   * `retentionMs`.
   */
  idRetentionMs?: number;
  /**
   * The longest an id may wait from `recordId` to its commit, in ms; later
   * commits are refused and the id fails as unavailable (see
   * {@link idLifetime}). Default: no limit.
   */
  maxCommitWaitMs?: number;
  /**
   * Partitions of each window's log, for the windows this instance starts;
   * a window keeps the number it started with. Default: 1.
   */
  partitions?: number;
  /**
   * The most ids of one window held in memory; past it, new ids fail as
   * unavailable. Default: 5 000 000.
   */
  maxIdsPerWindow?: number;
  /** Distinct webhook URLs accepted per window. Default: 1000. */
  maxUrlsPerWindow?: number;
  /**
   * The most commits of ids running at once in one partition this instance
   * owns (the last instance to commit there): one for every
   * `commitSpacingMs` commits have taken lately, up to this. Default: 1.
   */
  depth?: number;
  /**
   * How often an owner starts a commit in a partition at least, in ms, while
   * `depth` allows; 0 keeps `depth` in flight however fast commits are.
   * Default: 20 (`COMMIT_SPACING_MS`).
   */
  commitSpacingMs?: number;
  /**
   * How long before a window ends, in ms, a commit of ids in it opens the
   * next window ahead (its layout, and a claim on each partition), so that
   * the next window's first ids commit in one round trip; at most a tenth of
   * `windowMs`; 0: a window opens on its first id. Default: 5000
   * (`OPEN_AHEAD_MS`).
   */
  openAheadMs?: number;
  /** The length of a window, in ms. Default: 60000 (`MINUTE_MS`). */
  windowMs?: number;
  /**
   * How each partition gathers ids between its commits, for buffered
   * acknowledgements, where no answer waits for a commit.
   */
  gather?: GatherOptions;
  /**
   * Commits of ids and reads of the log running at once, over all
   * partitions. Default: the partitions times `depth`, at least 4, so that
   * every partition can commit at once.
   */
  maxInFlight?: number;
  /**
   * Handles to the same database as `kv` (which may be one of them), each
   * its own connection, for the commits and reads of ids: each runs on one
   * nothing else of the id log runs on while one is idle (see
   * `KvIdLogOptions.connections`). The store owns them and closes them in
   * `close()`. Default: none, all on `kv`.
   */
  connections?: Deno.Kv[];
  /**
   * Attempts per commit when KV throws (e.g. `database is locked` while
   * another process writes the same file: often at once, sometimes after
   * waiting up to 5 s for the lock). Default: 10.
   */
  commitAttempts?: number;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
  /** Base of the retry backoff, in ms. Default: 5. */
  retryBaseMs?: number;
  /** Told about every commit of ids: its size, seconds, and success. */
  onCommit?: CommitObserver;
  /** Told when a commit of ids lost the race for its partition's head. */
  onConflict?: () => void;
  /** Told when an id is refused because its window's memory is full. */
  onFull?: (minute: number) => void;
}

/** Rounds of `recordUrl` before it gives up on conflicting commits. */
const URL_ROUNDS = 32;

/**
 * Creates a {@link Store} on a Deno KV database. The store owns `kv` and
 * closes it in `close()`.
 *
 * @example
 * ```ts
 * const store = createKvStore(await Deno.openKv(":memory:"), {
 *   retentionMs: 3_600_000,
 * });
 * await store.recordId(Date.UTC(2026, 0, 1, 12, 0), "42"); // true
 * await store.close();
 * ```
 */
export function createKvStore(kv: Deno.Kv, options: KvStoreOptions): Store {
  return new KvStore(kv, options);
}

class KvStore implements Store {
  readonly #kv: Deno.Kv;
  readonly #retentionMs: number;
  readonly #maxUrls: number;
  readonly #commitAttempts: number;
  readonly #retryBaseMs: number;
  readonly #ids: KvIdLog;
  readonly #connections: Deno.Kv[];
  readonly #knownUrls = new Map<number, Set<string>>();
  #closed: Promise<void> | undefined;

  constructor(kv: Deno.Kv, options: KvStoreOptions) {
    this.#kv = kv;
    this.#connections = options.connections ?? [];
    this.#retentionMs = positive("retentionMs", options.retentionMs);
    this.#maxUrls = options.maxUrlsPerWindow ?? 1000;
    this.#commitAttempts = positive(
      "commitAttempts",
      options.commitAttempts ?? 10,
    );
    this.#retryBaseMs = options.retryBaseMs ?? 5;
    this.#ids = new KvIdLog(kv, {
      partitions: positive("partitions", options.partitions ?? 1),
      entryRetentionMs: positive(
        "idRetentionMs",
        options.idRetentionMs ?? this.#retentionMs,
      ),
      retentionMs: this.#retentionMs,
      maxIdsPerWindow: positive(
        "maxIdsPerWindow",
        options.maxIdsPerWindow ?? 5_000_000,
      ),
      depth: positive("depth", options.depth ?? 1),
      commitSpacingMs: atLeastZero(
        "commitSpacingMs",
        options.commitSpacingMs ?? COMMIT_SPACING_MS,
      ),
      openAheadMs: atLeastZero(
        "openAheadMs",
        options.openAheadMs ?? OPEN_AHEAD_MS,
      ),
      windowMs: positive("windowMs", options.windowMs ?? MINUTE_MS),
      maxInFlight: positive(
        "maxInFlight",
        options.maxInFlight ??
          commitsInFlight(options.partitions ?? 1, options.depth ?? 1),
      ),
      ...(options.connections ? { connections: options.connections } : {}),
      ...(options.gather ? { gather: options.gather } : {}),
      withRetries: this.#retrying,
      ...(options.maxCommitWaitMs !== undefined
        ? { maxCommitWaitMs: options.maxCommitWaitMs }
        : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.onCommit ? { onCommit: options.onCommit } : {}),
      ...(options.onConflict ? { onConflict: options.onConflict } : {}),
      ...(options.onFull ? { onFull: options.onFull } : {}),
    });
  }

  recordId(minute: number, id: string): Promise<boolean> {
    return this.#ids.record(minute, id);
  }

  queueId(minute: number, id: string, waiter: IdWaiter): void {
    this.#ids.queue(minute, id, waiter);
  }

  knows(minute: number, id: string): boolean {
    return this.#ids.knows(minute, id);
  }

  /** Commits the operation `build` makes, retrying when KV throws. */
  async #commit(
    build: () => Deno.AtomicOperation,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return await this.#withRetries(() => build().commit());
  }

  /** {@link KvStore.#withRetries} as a function to pass on. */
  readonly #retrying = <T>(call: () => Promise<T>) => this.#withRetries(call);

  /**
   * Runs a KV call, retrying with jittered backoff when it throws, except
   * for {@link StoreUnavailableError}, which is final.
   */
  async #withRetries<T>(call: () => Promise<T>): Promise<T> {
    for (let attempt = 0;; attempt++) {
      try {
        return await call();
      } catch (error) {
        if (
          error instanceof StoreUnavailableError ||
          attempt + 1 >= this.#commitAttempts
        ) throw error;
        await sleep(backoffDelay(attempt, { baseMs: this.#retryBaseMs }));
      }
    }
  }

  async recordUrl(minute: number, url: string): Promise<UrlOutcome> {
    const known = this.#knownUrls.get(minute);
    if (known?.has(url)) return "known";
    const hash = sha256Hex(url);
    const keys = [
      urlKey(minute, hash),
      urlCountKey(minute),
      reportKey(minute),
    ] as const;
    for (let round = 0; round < URL_ROUNDS; round++) {
      try {
        const [stored, count, report] = await this.#withRetries(() =>
          this.#kv.getMany<[string, number, ReportRecord]>(keys)
        );
        if (stored.versionstamp !== null) {
          this.#rememberUrl(minute, url);
          return "known";
        }
        if (report.versionstamp !== null) throw new WindowClosedError(minute);
        const urls = count.value ?? 0;
        if (urls >= this.#maxUrls) return "full";
        const result = await this.#commit(() =>
          this.#kv.atomic()
            .check(stored, count, report)
            .set(keys[0], url, { expireIn: this.#retentionMs })
            .set(keys[1], urls + 1, { expireIn: this.#retentionMs })
        );
        if (result.ok) {
          this.#rememberUrl(minute, url);
          return "recorded";
        }
      } catch (error) {
        if (error instanceof WindowClosedError) throw error;
        throw new StoreUnavailableError(
          `Cannot record URL: ${(error as Error).message}`,
          { cause: error },
        );
      }
      await sleep(backoffDelay(round, { baseMs: this.#retryBaseMs }));
    }
    throw new StoreUnavailableError(
      "Cannot record URL: too many conflicting commits",
    );
  }

  #rememberUrl(minute: number, url: string): void {
    let known = this.#knownUrls.get(minute);
    if (known === undefined) {
      for (const m of this.#knownUrls.keys()) {
        if (m < minute) this.#knownUrls.delete(m);
      }
      known = new Set();
      this.#knownUrls.set(minute, known);
    }
    if (known.size < this.#maxUrls) known.add(url);
  }

  async countIds(minute: number): Promise<number> {
    const [heads, perId] = await Promise.all([
      this.#readHeads(minute),
      perIdCount(this.#kv, minute, this.#retrying),
    ]);
    let total = perId;
    for (const head of heads) total += countOfHead(head.value);
    return total;
  }

  /** The heads of the window's partitions; none once it is reported. */
  async #readHeads(
    minute: number,
  ): Promise<Deno.KvEntryMaybe<Deno.KvU64 | LogHead>[]> {
    const layout = await this.#withRetries(() =>
      this.#kv.get<WindowLayout>(windowKey(minute))
    );
    const keys = Array.from(
      { length: layout.value?.partitions ?? 0 },
      (_, partition) => logHeadKey(minute, partition),
    );
    const chunks: Promise<Deno.KvEntryMaybe<Deno.KvU64 | LogHead>[]>[] = [];
    for (let at = 0; at < keys.length; at += MAX_GET_MANY) {
      const chunk = keys.slice(at, at + MAX_GET_MANY);
      chunks.push(
        this.#withRetries(() =>
          this.#kv.getMany<(Deno.KvU64 | LogHead)[]>(chunk)
        ),
      );
    }
    return (await Promise.all(chunks)).flat();
  }

  async listOwedUrls(minute: number): Promise<string[]> {
    const [urls, done] = await Promise.all([
      this.#withRetries(() =>
        Array.fromAsync(this.#kv.list<string>({ prefix: urlPrefix(minute) }))
      ),
      this.#withRetries(() =>
        Array.fromAsync(this.#kv.list({ prefix: urlDonePrefix(minute) }))
      ),
    ]);
    const doneHashes = new Set(done.map(({ key }) => urlHashOfKey(key)));
    return urls.filter(({ key }) => !doneHashes.has(urlHashOfKey(key))).map((
      { value },
    ) => value);
  }

  async markUrlDone(minute: number, url: string): Promise<void> {
    const key = urlDoneKey(minute, sha256Hex(url));
    await this.#withRetries(() =>
      this.#kv.set(key, true, { expireIn: this.#retentionMs })
    );
  }

  async claimReport(
    minute: number,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<ClaimOutcome> {
    const key = reportKey(minute);
    const current = await this.#withRetries(() =>
      this.#kv.get<ReportRecord>(key)
    );
    if (current.value?.state === "reported") {
      return { claimed: false, reason: "reported" };
    }
    if (current.value && now - current.value.claimedAt < leaseMs) {
      return { claimed: false, reason: "claimed" };
    }
    const record: ReportRecord = { state: "claimed", owner, claimedAt: now };
    const result = await this.#commit(() =>
      this.#kv.atomic().check(current).set(key, record, {
        expireIn: this.#retentionMs,
      })
    );
    return result.ok
      ? { claimed: true }
      : { claimed: false, reason: "claimed" };
  }

  async completeReport(
    minute: number,
    owner: string,
    uniqueIds: number,
    outbox?: NewOutboxEntries,
  ): Promise<void> {
    const key = reportKey(minute);
    const current = await this.#withRetries(() =>
      this.#kv.get<ReportRecord>(key)
    );
    if (current.value?.owner !== owner) {
      throw new StoreUnavailableError(
        `Cannot complete report of ${
          new Date(minute).toISOString()
        }: not claimed by ${owner}`,
      );
    }
    // The window's layout, heads and owners, and any count in the per-id
    // layout.
    const drop: Deno.KvKey[] = [windowKey(minute)];
    const heads = await this.#readHeads(minute);
    heads.forEach((head, partition) => {
      drop.push(head.key, logOwnerKey(minute, partition));
    });
    for (const shard of await perIdCounters(this.#kv, minute, this.#retrying)) {
      drop.push(shard.key);
    }
    const record: ReportRecord = {
      ...current.value,
      state: "reported",
      uniqueIds,
    };
    const result = await this.#commit(() => {
      const op = this.#kv.atomic().check(current).set(key, record, {
        expireIn: this.#retentionMs,
      });
      for (const key of drop) op.delete(key);
      for (const sink of outbox?.sinks ?? []) {
        op.set(outboxKey(minute, sink), newOutboxEntry(outbox!));
      }
      return op;
    });
    if (!result.ok) {
      throw new StoreUnavailableError(
        `Cannot complete report of ${
          new Date(minute).toISOString()
        }: claim changed`,
      );
    }
  }

  async listOutbox(): Promise<OutboxEntry[]> {
    const entries: OutboxEntry[] = [];
    for await (
      const entry of this.#kv.list<StoredOutboxEntry>({
        prefix: outboxPrefix(),
      })
    ) {
      entries.push({
        ...entry.value,
        minute: minuteOfKey(entry.key),
        sink: sinkOfKey(entry.key),
        version: entry.versionstamp,
      });
    }
    return entries;
  }

  async updateOutbox(
    entry: OutboxEntry,
    change: OutboxChange,
  ): Promise<boolean> {
    const key = outboxKey(entry.minute, entry.sink);
    const result = await this.#commit(() =>
      this.#kv.atomic()
        .check({ key, versionstamp: entry.version })
        .set(key, storedOutboxEntry(entry, change))
    );
    if (result.ok) entry.version = result.versionstamp;
    return result.ok;
  }

  async removeOutbox(
    entry: OutboxEntry,
    outcome: DeliveryOutcome,
    at: number,
  ): Promise<void> {
    const record = deliveryRecord(entry, outcome, at);
    // Only the holder of the current version may finish it.
    await this.#commit(() =>
      this.#kv.atomic()
        .check({
          key: outboxKey(entry.minute, entry.sink),
          versionstamp: entry.version,
        })
        .delete(outboxKey(entry.minute, entry.sink))
        .set(deliveryKey(entry.minute, entry.sink), record, {
          expireIn: this.#retentionMs,
        })
    );
  }

  /**
   * Reads the windows' reports and delivery records with two range scans
   * over the span of `minutes`, not a round trip per window: the status page
   * asks for up to a day of windows, and KV may be remote.
   */
  async windowStats(minutes: number[]): Promise<WindowStats[]> {
    if (minutes.length === 0) return [];
    const first = Math.min(...minutes);
    const last = Math.max(...minutes);
    const [reports, deliveries] = await Promise.all([
      Array.fromAsync(this.#kv.list<ReportRecord>({
        start: reportKey(first),
        end: reportKey(last + 1),
      })),
      Array.fromAsync(this.#kv.list<DeliveryRecord>({
        start: deliveryPrefix(first),
        end: deliveryPrefix(last + 1),
      })),
    ]);
    const reportOf = new Map(
      reports.map((entry) => [minuteOfKey(entry.key), entry.value]),
    );
    const deliveriesOf = new Map<number, Record<string, DeliveryRecord>>();
    for (const { key, value } of deliveries) {
      const minute = minuteOfKey(key);
      const records = deliveriesOf.get(minute) ?? {};
      records[sinkOfKey(key)] = value;
      deliveriesOf.set(minute, records);
    }
    const stats: WindowStats[] = [];
    for (const minute of minutes) {
      const report = reportOf.get(minute);
      const records = deliveriesOf.get(minute);
      if (report === undefined && records === undefined) continue;
      stats.push({
        minute,
        uniqueIds: report?.state === "reported" ? report.uniqueIds : undefined,
        deliveries: records ?? {},
      });
    }
    return stats;
  }

  async unreportedWindows(): Promise<number[]> {
    const minutes = new Set(await perIdWindows(this.#kv));
    for await (const entry of this.#kv.list({ prefix: allWindowsPrefix() })) {
      minutes.add(minuteOfKey(entry.key));
    }
    return [...minutes].sort((a, b) => a - b);
  }

  async ping(): Promise<void> {
    try {
      await this.#kv.get(reportKey(0));
    } catch (error) {
      throw new StoreUnavailableError(
        `Deno KV does not answer: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /** Durable: an id known here is a repeat; any other waits for its commit. */
  takeId(minute: number, id: string): "repeat" | undefined {
    return this.knows(minute, id) ? "repeat" : undefined;
  }

  queuedIds(): number {
    return this.#ids.queued;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  close(): Promise<void> {
    this.#closed ??= this.#ids.drain().then(() => {
      for (const kv of new Set([this.#kv, ...this.#connections])) kv.close();
    });
    return this.#closed;
  }
}

function positive(name: string, value: number): number {
  return wholeNumber(value, { part: "KV store", name });
}

function atLeastZero(name: string, value: number): number {
  return wholeNumber(value, { part: "KV store", name, min: 0 });
}

/** The key part of a URL: its SHA-256 in hex. */
function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
