/**
 * The Redis {@link Store}, on one Redis or a Redis Cluster (the key layout:
 * `keys.ts`; the scripts: `scripts.ts`).
 *
 * A window's ids are spread over its shards, each in a hash slot of its own
 * and so, on a cluster, over every master: a batch of new ids becomes one
 * script call per shard it touches, sent at once. The window's other keys
 * (its shard count, webhook URLs, report record and outbox) share the
 * window's own slot. Two small indexes are sorted sets of window starts,
 * each a single key in a slot of its own: `verve:windows` (windows with ids
 * and no report yet) and `verve:outbox` (windows with reports waiting for a
 * sink). Every script and multi-key command touches the keys of one slot
 * only, so a cluster client routes each to the master that holds them.
 *
 * No id enters a window after its count is taken: the claim marks the
 * window's report (after which no writer can learn the window's shard
 * count for the first time), then closes every shard with a script that
 * sets its marker; a write checks its shard's marker in the same script
 * that adds its ids. The count is taken once every shard is closed, so a
 * report interrupted between shards is completed once, with the same count,
 * by whoever claims next: at once when closing a shard failed (the claim is
 * given up), when its lease ends after a crash.
 *
 * Steps that span an index and a window are ordered so that a failure or a
 * failover between them loses nothing and duplicates nothing: a window
 * enters an index before its keys are written (an index entry without keys
 * is harmless: the claim finds the window reported or empty), and leaves it
 * only after its report or outbox is done (a stale entry is found done and
 * dropped, or ages out after the retention).
 *
 * Windows written by earlier versions keep their ids in one set in the
 * window's slot, closed by the report record: the claim closes it, and its
 * ids are moved into the window's shards before they close when the window
 * has both (so an id in both counts once).
 *
 * On a cluster a master's writes reach its replica asynchronously; with
 * `waitReplicas`, each write is followed by `WAIT`, and counts only once that
 * many replicas have it (or every replica its master has left, after a
 * failover took one), so a failover that promotes the replica loses no
 * acknowledged id and no report state. How many replicas a master has is
 * read with `ROLE` and trusted for a second (`commands.ts`), so a master
 * left without replicas is not asked to `WAIT` for one on every write.
 *
 * Every Redis error or timeout surfaces as {@link StoreUnavailableError}; the
 * client reconnects by itself (on a cluster, it also finds the new master of
 * a slot after a failover), so the store recovers when Redis returns.
 *
 * @module
 */
import type { GatherOptions } from "../commit_gate.ts";
import { GroupCommit, type IdOutcome } from "./group_commit.ts";
import {
  REDIS_OUTBOX_KEY,
  REDIS_WINDOWS_KEY,
  redisShardKeys,
  redisWindowKeys,
  type ReportRecord,
} from "../keys.ts";
import {
  deliveryRecord,
  newOutboxEntry,
  storedOutboxEntry,
} from "../outbox.ts";
import {
  type ClaimOutcome,
  type CommitObserver,
  type DeliveryOutcome,
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
import { RedisCommands } from "./commands.ts";
import { moveOneSlotIds } from "./one_slot_layout.ts";
import { byShard } from "./slots.ts";
import type { RedisConnection } from "./connection.ts";
import {
  CLAIM,
  CLOSE_SHARD,
  COMPLETE,
  FINISH_OUTBOX,
  LAYOUT,
  MARK_URL_DONE,
  RECORD_IDS,
  RECORD_URL,
  RELEASE,
  SWAP_OUTBOX,
} from "./scripts.ts";

/** Options of {@link createRedisStore}. */
export interface RedisStoreOptions {
  /** How long per-window keys live, in ms. */
  retentionMs: number;
  /**
   * The shards of a window this instance starts, or `auto`: as many as the
   * masters that hold the slots (1 on one server). A window keeps the
   * count its first writer set.
   * @default {"auto"}
   */
  shards?: number | "auto";
  /**
   * Distinct webhook URLs accepted per window.
   * @default {1000}
   */
  maxUrlsPerWindow?: number;
  /**
   * The time limit of one command, in ms.
   * @default {1000}
   */
  timeoutMs?: number;
  /**
   * The most ids in one batch, over all of its shards.
   * @default {500}
   */
  batchSize?: number;
  /**
   * Batches in flight at once.
   * @default {4}
   */
  maxInFlight?: number;
  /**
   * How ids gather between batches that are not full, for buffered
   * acknowledgements, where no answer waits for a commit.
   */
  gather?: GatherOptions;
  /**
   * Ids remembered locally per process.
   * @default {100_000}
   */
  seenIdsLimit?: number;
  /**
   * The current time in epoch ms.
   * @default {Date.now}
   */
  clock?: () => number;
  /** Told about every commit of ids, e.g. for metrics. */
  onCommit?: CommitObserver;
  /**
   * Replicas that must have each write before it counts (Redis `WAIT`);
   * fewer within the time limit fail the write as unavailable.
   * @default {0}
   */
  waitReplicas?: number;
}

/** The most shards of a window. */
export const MAX_SHARDS = 256;

/**
 * Creates a {@link Store} on a Redis connection. The store owns the
 * connection and closes it in `close()`.
 *
 * @example
 * ```ts
 * const redis = openRedis(["redis://127.0.0.1:6379"], logger);
 * const store = createRedisStore(redis, { retentionMs: 3_600_000, shards: 12 });
 * ```
 */
export function createRedisStore(
  redis: RedisConnection,
  options: RedisStoreOptions,
): Store {
  return new RedisStore(redis, options);
}

/** The field–value pairs of an `HGETALL` answer, in either shape. */
function pairs(answer: unknown): [string, string][] {
  if (Array.isArray(answer)) {
    return Array.from(
      { length: answer.length / 2 },
      (_, i) => [String(answer[2 * i]), String(answer[2 * i + 1])],
    );
  }
  return Object.entries((answer ?? {}) as Record<string, string>);
}

class RedisStore implements Store {
  readonly #redis: RedisCommands;
  readonly #retentionMs: number;
  readonly #maxUrls: number;
  readonly #clock: () => number;
  readonly #shards: number | "auto";
  readonly #ids: GroupCommit;
  #closed: Promise<void> | undefined;
  /**
   * The shard count of each window this process writes, once put in the
   * index of unreported windows and read (or set) in the window's keys;
   * -1 for a window that closed before it had any.
   */
  readonly #layouts = new Map<number, Promise<number>>();

  constructor(redis: RedisConnection, options: RedisStoreOptions) {
    if (!(options.retentionMs >= 1)) {
      throw new RangeError(
        `Cannot create Redis store: retentionMs must be at least 1, got ${options.retentionMs}`,
      );
    }
    this.#redis = new RedisCommands(redis, {
      timeoutMs: options.timeoutMs ?? 1000,
      waitReplicas: options.waitReplicas ?? 0,
    });
    this.#retentionMs = Math.round(options.retentionMs);
    this.#maxUrls = options.maxUrlsPerWindow ?? 1000;
    this.#clock = options.clock ?? Date.now;
    this.#shards = options.shards ?? "auto";
    if (
      this.#shards !== "auto" &&
      !(Number.isInteger(this.#shards) && this.#shards >= 1 &&
        this.#shards <= MAX_SHARDS)
    ) {
      throw new RangeError(
        `Cannot create Redis store: shards must be a whole number from 1 to ${MAX_SHARDS}, got ${options.shards}`,
      );
    }
    this.#ids = new GroupCommit({
      commit: (minute, ids) => this.#commitIds(minute, ids),
      batchSize: options.batchSize ?? 500,
      maxInFlight: options.maxInFlight ?? 4,
      ...(options.gather ? { gather: options.gather } : {}),
      seenIdsLimit: options.seenIdsLimit ?? 100_000,
      ...(options.onCommit ? { onCommit: options.onCommit } : {}),
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

  /**
   * Commits a batch: one script call per shard it touches, all at once. A
   * shard that fails or closed fails its own ids only.
   */
  async #commitIds(minute: number, ids: string[]): Promise<IdOutcome[]> {
    const count = await this.#layout(minute);
    if (count === -1) return ids.map(() => new WindowClosedError(minute));
    const shards = redisShardKeys(minute, count);
    const outcomes: IdOutcome[] = new Array(ids.length);
    await Promise.all(
      [...byShard(ids, count)].map(async ([shard, positions]) => {
        const keys = shards[shard]!;
        try {
          const added = await this.#redis.run(RECORD_IDS, [
            keys.ids,
            keys.closed,
          ], [
            String(this.#retentionMs),
            ...positions.map((at) => ids[at]!),
          ]);
          positions.forEach((at, i) => {
            outcomes[at] = added === -1
              ? new WindowClosedError(minute)
              : (added as number[])[i] === 1
              ? "recorded"
              : "known";
          });
        } catch (error) {
          for (const at of positions) outcomes[at] = error as Error;
        }
      }),
    );
    // Every shard failed: the commit did, as one on a single shard does.
    if (outcomes.every((outcome) => outcome instanceof StoreUnavailableError)) {
      throw outcomes[0];
    }
    return outcomes;
  }

  /**
   * The keys of a window's shards, when the window has `count` of them;
   * when it has none recorded, the count this instance wrote the window
   * with, else the one it would start it with: either the window has no ids
   * in shards, or Redis lost the record (a restart without persistence, an
   * eviction) while writers that knew it went on.
   */
  async #shardKeys(minute: number, count: number) {
    const written = count ||
      await this.#layouts.get(minute)?.catch(() => 0) || 0;
    return redisShardKeys(
      minute,
      written > 0 ? written : this.#shardsToStart(),
    );
  }

  /** The keys of a window's shards, by the count recorded in its keys. */
  async #recordedShardKeys(minute: number) {
    const { shards } = redisWindowKeys(minute);
    const count = Number(await this.#redis.call(["GET", shards], shards));
    return await this.#shardKeys(minute, count);
  }

  /** The shards of a window this instance starts now. */
  #shardsToStart(): number {
    if (this.#shards !== "auto") return this.#shards;
    return Math.min(MAX_SHARDS, Math.max(1, this.#redis.masters()));
  }

  /**
   * The window's shard count, after putting the window in the index of
   * unreported windows (before any of its keys): read or set once per
   * window by this process.
   */
  #layout(minute: number): Promise<number> {
    let layout = this.#layouts.get(minute);
    if (layout === undefined) {
      layout = (async () => {
        await this.#redis.write([
          "ZADD",
          REDIS_WINDOWS_KEY,
          "NX",
          String(minute),
          String(minute),
        ]);
        const keys = redisWindowKeys(minute);
        return Number(
          await this.#redis.run(LAYOUT, [keys.shards, keys.report], [
            String(this.#shardsToStart()),
            String(this.#retentionMs),
          ]),
        );
      })();
      for (const m of this.#layouts.keys()) {
        if (m < minute) this.#layouts.delete(m);
      }
      this.#layouts.set(minute, layout);
      layout.catch(() => {
        if (this.#layouts.get(minute) === layout) this.#layouts.delete(minute);
      });
    }
    return layout;
  }

  async recordUrl(minute: number, url: string): Promise<UrlOutcome> {
    const keys = redisWindowKeys(minute);
    const outcome = await this.#redis.run(
      RECORD_URL,
      [keys.urls, keys.report],
      [
        url,
        String(this.#maxUrls),
        String(this.#retentionMs),
      ],
    );
    if (outcome === "closed") throw new WindowClosedError(minute);
    return outcome as UrlOutcome;
  }

  async countIds(minute: number): Promise<number> {
    const sets = [
      redisWindowKeys(minute).oneSlotIds,
      ...(await this.#recordedShardKeys(minute)).map((shard) => shard.ids),
    ];
    const sizes = await Promise.all(
      sets.map((key) => this.#redis.call(["SCARD", key], key)),
    );
    return sizes.reduce<number>((sum, size) => sum + Number(size), 0);
  }

  async listOwedUrls(minute: number): Promise<string[]> {
    const keys = redisWindowKeys(minute);
    return await this.#redis.call(
      ["SDIFF", keys.urls, keys.urlsDone],
      keys.urls,
    ) as string[];
  }

  async markUrlDone(minute: number, url: string): Promise<void> {
    await this.#redis.run(MARK_URL_DONE, [redisWindowKeys(minute).urlsDone], [
      url,
      String(this.#retentionMs),
    ]);
  }

  /**
   * Claims the window's report, then closes it for ids: the one-slot set of
   * earlier versions by the claim itself, then every shard (this instance's
   * count of them when the window has none recorded), after moving any
   * one-slot ids into their shards. A claim that fails while closing is
   * given up at once (its lease ends), so that the next claim, on this
   * instance's next tick or another's, closes the rest and counts.
   */
  async claimReport(
    minute: number,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<ClaimOutcome> {
    const keys = redisWindowKeys(minute);
    const [outcome, count, oneSlot] = await this.#redis.run(
      CLAIM,
      [keys.report, keys.shards, keys.oneSlotIds],
      [owner, String(now), String(leaseMs), String(this.#retentionMs)],
    ) as [string, number?, number?];
    if (outcome === "reported") {
      // A late batch may have put the window back in the index.
      await this.#redis.write(["ZREM", REDIS_WINDOWS_KEY, String(minute)]);
    }
    if (outcome !== "ok") {
      return { claimed: false, reason: outcome as "reported" | "claimed" };
    }
    const shards = await this.#shardKeys(minute, count ?? 0);
    try {
      if (oneSlot === 1 && count) {
        await moveOneSlotIds(this.#redis, minute, {
          count,
          retentionMs: this.#retentionMs,
        });
      }
      await Promise.all(
        shards.map((shard) =>
          this.#redis.run(CLOSE_SHARD, [shard.ids, shard.closed], [
            String(this.#retentionMs),
          ])
        ),
      );
    } catch (error) {
      // A shard's master is away (a failover, say): whoever claims next
      // closes the rest, without waiting out the lease.
      await this.#redis.run(RELEASE, [keys.report], [owner]).catch(() => {
        // Then the lease ends it.
      });
      throw error;
    }
    return { claimed: true };
  }

  async completeReport(
    minute: number,
    owner: string,
    uniqueIds: number,
    outbox?: NewOutboxEntries,
  ): Promise<void> {
    const keys = redisWindowKeys(minute);
    const entries = (outbox?.sinks ?? []).flatMap((sink) => [
      sink,
      JSON.stringify(newOutboxEntry(outbox!)),
    ]);
    if (entries.length > 0) {
      // Indexed first: an entry must never exist without its index.
      await this.#redis.write([
        "ZADD",
        REDIS_OUTBOX_KEY,
        String(minute),
        String(minute),
      ]);
    }
    const outcome = await this.#redis.run(
      COMPLETE,
      [keys.report, keys.oneSlotIds, keys.outbox],
      [owner, String(uniqueIds), String(this.#retentionMs), ...entries],
    );
    if (outcome !== "ok") {
      throw new StoreUnavailableError(
        `Cannot complete report of ${
          new Date(minute).toISOString()
        }: not claimed by ${owner}`,
      );
    }
    // The shards' markers stay, and keep ids out until they expire.
    await Promise.all(
      (await this.#recordedShardKeys(minute)).map((shard) =>
        this.#redis.write(["DEL", shard.ids])
      ),
    );
    await this.#redis.write(["ZREM", REDIS_WINDOWS_KEY, String(minute)]);
  }

  async listOutbox(): Promise<OutboxEntry[]> {
    const minutes = await this.#redis.call(
      ["ZRANGE", REDIS_OUTBOX_KEY, "0", "-1"],
      REDIS_OUTBOX_KEY,
    );
    const entries: OutboxEntry[] = [];
    for (const minute of (minutes as string[]).map(Number)) {
      const { outbox } = redisWindowKeys(minute);
      const entriesOfMinute = pairs(
        await this.#redis.call(["HGETALL", outbox], outbox),
      );
      for (const [sink, json] of entriesOfMinute) {
        entries.push({ ...JSON.parse(json), minute, sink, version: json });
      }
    }
    return entries;
  }

  async updateOutbox(
    entry: OutboxEntry,
    change: OutboxChange,
  ): Promise<boolean> {
    const json = JSON.stringify(storedOutboxEntry(entry, change));
    const swapped = await this.#redis.run(
      SWAP_OUTBOX,
      [redisWindowKeys(entry.minute).outbox],
      [entry.sink, entry.version, json],
    );
    if (swapped !== 1) return false;
    entry.version = json;
    return true;
  }

  async removeOutbox(
    entry: OutboxEntry,
    outcome: DeliveryOutcome,
    at: number,
  ): Promise<void> {
    const keys = redisWindowKeys(entry.minute);
    const record = deliveryRecord(entry, outcome, at);
    const left = await this.#redis.run(FINISH_OUTBOX, [
      keys.outbox,
      keys.delivery,
    ], [
      entry.sink,
      entry.version,
      JSON.stringify(record),
      String(this.#retentionMs),
    ]);
    // The window's reports all left: nothing can enter its outbox again.
    if (left === 0) {
      await this.#redis.write(["ZREM", REDIS_OUTBOX_KEY, String(entry.minute)]);
    }
  }

  async windowStats(minutes: number[]): Promise<WindowStats[]> {
    const all = await Promise.all(minutes.map(async (minute) => {
      const keys = redisWindowKeys(minute);
      const [report, deliveries] = await Promise.all([
        this.#redis.call(["GET", keys.report], keys.report),
        this.#redis.call(["HGETALL", keys.delivery], keys.delivery),
      ]);
      return { minute, report, deliveries: pairs(deliveries) };
    }));
    return all
      .filter(({ report, deliveries }) =>
        report !== null || deliveries.length > 0
      )
      .map(({ minute, report, deliveries }) => {
        const record = report === null
          ? undefined
          : JSON.parse(report as string) as ReportRecord;
        return {
          minute,
          uniqueIds: record?.state === "reported"
            ? record.uniqueIds
            : undefined,
          deliveries: Object.fromEntries(
            deliveries.map(([sink, json]) => [sink, JSON.parse(json)]),
          ),
        };
      });
  }

  async unreportedWindows(): Promise<number[]> {
    // Windows past retention have lost their ids; they cannot be reported.
    const oldest = this.#clock() - this.#retentionMs;
    await this.#redis.write([
      "ZREMRANGEBYSCORE",
      REDIS_WINDOWS_KEY,
      "-inf",
      `(${oldest}`,
    ]);
    const minutes = await this.#redis.call(
      ["ZRANGE", REDIS_WINDOWS_KEY, "0", "-1"],
      REDIS_WINDOWS_KEY,
    );
    return (minutes as string[]).map(Number).sort((a, b) => a - b);
  }

  async ping(): Promise<void> {
    // A keyless PING would go to every master (the client's command
    // policy); one master answering is what readiness asks.
    await this.#redis.call(["PING"], REDIS_WINDOWS_KEY);
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
    this.#closed ??= this.#ids.drain().then(() => this.#redis.close());
    return this.#closed;
  }
}
