/**
 * The Deno KV store. Ids are recorded with group commit: concurrent
 * `recordId` calls queue up and are committed together, one atomic operation
 * per batch holding a check-and-set per id, a check that the window is not
 * yet reported, and one `sum` on a counter shard. A batch whose checks fail
 * reads which ids already exist, settles those as repeats and commits the
 * rest again, so an id is counted exactly once however the batches race.
 *
 * @module
 */
import { backoffDelay, sleep } from "./backoff.ts";
import {
  allCountersPrefix,
  counterKey,
  counterPrefix,
  deliveryKey,
  deliveryPrefix,
  idKey,
  outboxKey,
  outboxPrefix,
  reportKey,
  type ReportRecord,
  urlCountKey,
  urlKey,
  urlPrefix,
} from "./keys.ts";
import {
  type CommitObserver,
  GroupCommit,
  type IdOutcome,
} from "./group_commit.ts";
import {
  type ClaimOutcome,
  type DeliveryOutcome,
  type DeliveryRecord,
  type NewOutboxEntries,
  type OutboxEntry,
  type Store,
  StoreUnavailableError,
  type UrlOutcome,
  WindowClosedError,
  type WindowStats,
} from "./store.ts";

/** Deno KV's limit on checks in one atomic operation, locally. */
export const LOCAL_KV_MAX_CHECKS = 100;

/** Deno KV's limit on checks in one atomic operation over KV Connect. */
export const REMOTE_KV_MAX_CHECKS = 10;

/**
 * The largest batch of ids the database behind `kvPath` accepts in one atomic
 * operation, keeping one check for the window's report key: remote databases
 * (an `https://` KV Connect URL, or Deno's default database, which is remote
 * on Deno Deploy) allow fewer checks than a local file.
 *
 * @example
 * ```ts
 * batchSizeFor("./data/verve.kv"); // 99
 * batchSizeFor("https://api.deno.com/databases/…/connect"); // 9
 * ```
 */
export function batchSizeFor(kvPath: string | undefined): number {
  const remote = kvPath === undefined || /^https?:\/\//i.test(kvPath);
  return (remote ? REMOTE_KV_MAX_CHECKS : LOCAL_KV_MAX_CHECKS) - 1;
}

/** How long id keys outlive their window, at least (within the retention). */
const ID_KEY_MARGIN_MS = 300_000;

/** How long id keys live, and how long an id may wait for its commit. */
export interface IdLifetime {
  /** How long each id key lives, in ms. */
  idRetentionMs: number;
  /** The longest an id may wait from its request to its commit, in ms. */
  maxCommitWaitMs: number;
}

/**
 * How long id keys need to live. Ids arrive only during their window, so a
 * key only serves to deduplicate until the last commit for its window; the
 * store fails ids that could not be committed within `maxCommitWaitMs` of
 * their request, so no commit can find a key of its window expired: a key is
 * set no earlier than its window's start and lives `idRetentionMs`, while
 * every commit runs before the window's end plus `maxCommitWaitMs`, which is
 * half of what the keys outlive the window by. Keys live for the window plus
 * five minutes, at least two windows, at most `retentionMs`. Other keys live
 * for the whole retention, but ids are by far the most numerous, so this
 * bounds the database's size.
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
    Math.max(2 * windowMs, windowMs + ID_KEY_MARGIN_MS),
  );
  return { idRetentionMs, maxCommitWaitMs: (idRetentionMs - windowMs) / 2 };
}

/** Options of {@link createKvStore}. */
export interface KvStoreOptions {
  /** How long per-window keys live, in ms; at least two windows. */
  retentionMs: number;
  /**
   * How long id keys live, in ms (see {@link idLifetime}). Default:
   * `retentionMs`.
   */
  idRetentionMs?: number;
  /**
   * The longest an id may wait from `recordId` to its commit, in ms; later
   * commits are refused and the id fails as unavailable (see
   * {@link idLifetime}). Default: no limit.
   */
  maxCommitWaitMs?: number;
  /** Shards of each window's counter. Default: 16. */
  counterShards?: number;
  /** Distinct webhook URLs accepted per window. Default: 1000. */
  maxUrlsPerWindow?: number;
  /**
   * The most ids in one atomic operation. Default: 99, one below the local
   * check limit (one check guards the window's report). Over KV Connect use
   * `REMOTE_KV_MAX_CHECKS - 1`.
   */
  batchSize?: number;
  /** Batches committing at once. Default: 4. */
  maxInFlight?: number;
  /**
   * Attempts per commit when KV throws (e.g. `database is locked` while
   * another process writes the same file: often at once, sometimes after
   * waiting up to 5 s for the lock). Default: 10.
   */
  commitAttempts?: number;
  /**
   * Rounds a batch may be retried after failed checks before its remaining
   * ids are answered as unavailable. Default: 8.
   */
  conflictRounds?: number;
  /** Ids remembered locally per process (see {@link SeenIds}). Default: 100 000. */
  seenIdsLimit?: number;
  /** Base of the retry backoff, in ms. Default: 5. */
  retryBaseMs?: number;
  /** Told about every commit of ids, e.g. for metrics. */
  onCommit?: CommitObserver;
}

/**
 * The value of an id key. Only its presence matters; bytes are stored as
 * they are, without the structured-clone serializer a number goes through.
 */
const SEEN = new Uint8Array(0);

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
  readonly #idSetOptions: { expireIn: number };
  readonly #shards: number;
  readonly #maxUrls: number;
  readonly #commitAttempts: number;
  readonly #conflictRounds: number;
  readonly #retryBaseMs: number;
  readonly #ids: GroupCommit;
  #nextShard = 0;
  readonly #knownUrls = new Map<number, Set<string>>();

  constructor(kv: Deno.Kv, options: KvStoreOptions) {
    this.#kv = kv;
    this.#retentionMs = positive("retentionMs", options.retentionMs);
    this.#idSetOptions = {
      expireIn: positive(
        "idRetentionMs",
        options.idRetentionMs ?? this.#retentionMs,
      ),
    };
    this.#shards = positive("counterShards", options.counterShards ?? 16);
    this.#maxUrls = options.maxUrlsPerWindow ?? 1000;
    const batchSize = positive("batchSize", options.batchSize ?? 99);
    if (batchSize >= LOCAL_KV_MAX_CHECKS) {
      throw new RangeError(
        `Cannot create KV store: batchSize must be below ${LOCAL_KV_MAX_CHECKS}, got ${batchSize}`,
      );
    }
    this.#commitAttempts = positive(
      "commitAttempts",
      options.commitAttempts ?? 10,
    );
    this.#conflictRounds = positive(
      "conflictRounds",
      options.conflictRounds ?? 8,
    );
    this.#retryBaseMs = options.retryBaseMs ?? 5;
    this.#nextShard = Math.floor(Math.random() * this.#shards);
    this.#ids = new GroupCommit({
      commit: (minute, ids, deadline) => this.#commitIds(minute, ids, deadline),
      batchSize,
      maxInFlight: options.maxInFlight ?? 4,
      maxRounds: this.#conflictRounds,
      seenIdsLimit: options.seenIdsLimit ?? 100_000,
      ...(options.onCommit ? { onCommit: options.onCommit } : {}),
      ...(options.maxCommitWaitMs !== undefined
        ? { maxWaitMs: options.maxCommitWaitMs }
        : {}),
    });
  }

  recordId(minute: number, id: string): Promise<boolean> {
    return this.#ids.record(minute, id);
  }

  knows(minute: number, id: string): boolean {
    return this.#ids.knows(minute, id);
  }

  /**
   * Commits a batch in one atomic operation: the window's report key must
   * be absent, each id key absent, then set, and one counter shard grows by
   * the batch size. When a check fails, reads which ids exist: those are
   * known, the others retried (or refused once the window is reported).
   */
  async #commitIds(
    minute: number,
    ids: string[],
    deadline: number,
  ): Promise<IdOutcome[]> {
    const result = await this.#commit(() => {
      // Checked on every attempt: past the deadline, an id key of this
      // window may have expired, and a commit could count an id twice.
      if (performance.now() > deadline) {
        throw new StoreUnavailableError(
          "Cannot record ids: the deadline for their commit has passed",
        );
      }
      const op = this.#kv.atomic().check({
        key: reportKey(minute),
        versionstamp: null,
      });
      for (const id of ids) {
        const key = idKey(minute, id);
        op.check({ key, versionstamp: null });
        op.set(key, SEEN, this.#idSetOptions);
      }
      this.#nextShard = (this.#nextShard + 1) % this.#shards;
      return op.sum(counterKey(minute, this.#nextShard), BigInt(ids.length));
    });
    if (result.ok) return ids.map(() => "recorded");
    const reads = await this.#withRetries(() =>
      Promise.all([
        this.#kv.get(reportKey(minute)),
        ...ids.map((id) => this.#kv.get(idKey(minute, id))),
      ])
    );
    const reported = reads[0]!.versionstamp !== null;
    return reads.slice(1).map((read) =>
      read.versionstamp !== null
        ? "known"
        : reported
        ? new WindowClosedError(minute)
        : "retry"
    );
  }

  /** Commits the operation `build` makes, retrying when KV throws. */
  async #commit(
    build: () => Deno.AtomicOperation,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return await this.#withRetries(() => build().commit());
  }

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
    const hash = await sha256Hex(url);
    const keys = [
      urlKey(minute, hash),
      urlCountKey(minute),
      reportKey(minute),
    ] as const;
    for (let round = 0; round < this.#conflictRounds * 4; round++) {
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
    let total = 0n;
    const shards = this.#kv.list<Deno.KvU64>({ prefix: counterPrefix(minute) });
    for await (const shard of shards) total += shard.value.value;
    return Number(total);
  }

  async listUrls(minute: number): Promise<string[]> {
    const urls: string[] = [];
    for await (
      const entry of this.#kv.list<string>({ prefix: urlPrefix(minute) })
    ) {
      urls.push(entry.value);
    }
    return urls;
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
    const shards: Deno.KvKey[] = [];
    for await (
      const shard of this.#kv.list({ prefix: counterPrefix(minute) })
    ) {
      shards.push(shard.key);
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
      for (const shard of shards) op.delete(shard);
      for (const sink of outbox?.sinks ?? []) {
        const value: StoredOutbox = {
          report: outbox!.report,
          attempts: 0,
          createdAt: outbox!.now,
          notBefore: outbox!.now,
        };
        op.set(outboxKey(minute, sink), value);
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
      const entry of this.#kv.list<StoredOutbox>({ prefix: outboxPrefix() })
    ) {
      entries.push({
        ...entry.value,
        minute: entry.key[2] as number,
        sink: entry.key[3] as string,
        version: entry.versionstamp,
      });
    }
    return entries;
  }

  async leaseOutbox(entry: OutboxEntry, until: number): Promise<boolean> {
    return await this.#swapOutbox(entry, { notBefore: until });
  }

  async retryOutbox(entry: OutboxEntry, notBefore: number): Promise<void> {
    await this.#swapOutbox(entry, { attempts: entry.attempts + 1, notBefore });
  }

  /** Rewrites an outbox entry with `change` if nobody changed it since. */
  async #swapOutbox(
    entry: OutboxEntry,
    change: Partial<Pick<OutboxEntry, "attempts" | "notBefore">>,
  ): Promise<boolean> {
    const key = outboxKey(entry.minute, entry.sink);
    const result = await this.#commit(() =>
      this.#kv.atomic()
        .check({ key, versionstamp: entry.version })
        .set(key, { ...storedOutbox(entry), ...change })
    );
    if (result.ok) entry.version = result.versionstamp;
    return result.ok;
  }

  async removeOutbox(
    entry: OutboxEntry,
    outcome: DeliveryOutcome,
    at: number,
  ): Promise<void> {
    const record: DeliveryRecord = {
      state: outcome,
      at,
      attempts: entry.attempts,
    };
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
      reports.map((entry) => [entry.key[2] as number, entry.value]),
    );
    const deliveriesOf = new Map<number, Record<string, DeliveryRecord>>();
    for (const { key, value } of deliveries) {
      const minute = key[2] as number;
      const records = deliveriesOf.get(minute) ?? {};
      records[key[3] as string] = value;
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
    const minutes = new Set<number>();
    for await (const shard of this.#kv.list({ prefix: allCountersPrefix() })) {
      minutes.add(shard.key[2] as number);
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

  async close(): Promise<void> {
    await this.#ids.drain();
    this.#kv.close();
  }
}

/** An outbox entry as stored; its window and sink are in its key. */
type StoredOutbox = Pick<
  OutboxEntry,
  "report" | "attempts" | "createdAt" | "notBefore"
>;

function storedOutbox(entry: OutboxEntry): StoredOutbox {
  const { report, attempts, createdAt, notBefore } = entry;
  return { report, attempts, createdAt, notBefore };
}

function positive(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(
      `Cannot create KV store: ${name} must be a whole number >= 1, got ${value}`,
    );
  }
  return value;
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}
