/**
 * The Redis {@link Store}: per window, a set of ids (`SADD` many ids per
 * script call, batched by group commit; `SCARD` is the exact count), a set of
 * webhook URLs, and a report record claimed with a script. Every key of a
 * window shares one hash tag, so the store works on Redis Cluster too. Every
 * Redis error or timeout surfaces as {@link StoreUnavailableError}; the
 * client reconnects by itself, so the store recovers when Redis returns.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { createClient } from "redis";
import {
  type CommitObserver,
  GroupCommit,
  type IdOutcome,
} from "./group_commit.ts";
import {
  REDIS_OUTBOX_KEY,
  REDIS_WINDOWS_KEY,
  redisWindowKeys,
  type ReportRecord,
} from "./keys.ts";
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

/** The part of a Redis client the store uses. */
export interface RedisConnection {
  /** Sends one command, e.g. `["SCARD", key]`. */
  sendCommand(args: string[]): Promise<unknown>;
  /** Closes the connection. */
  close(): Promise<void>;
}

/** Options of {@link createRedisStore}. */
export interface RedisStoreOptions {
  /** How long per-window keys live, in ms. */
  retentionMs: number;
  /** Distinct webhook URLs accepted per window. Default: 1000. */
  maxUrlsPerWindow?: number;
  /** The time limit of one command, in ms. Default: 1000. */
  timeoutMs?: number;
  /** The most ids in one script call. Default: 500. */
  batchSize?: number;
  /** Batches in flight at once. Default: 4. */
  maxInFlight?: number;
  /** Ids remembered locally per process. Default: 100 000. */
  seenIdsLimit?: number;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
  /** Told about every commit of ids, e.g. for metrics. */
  onCommit?: CommitObserver;
}

// Adds ids to the window's set unless the window's report exists.
// KEYS: ids, report. ARGV: ttl ms, id... Returns -1, or 1/0 per id.
const RECORD_IDS = `
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local added = {}
for i = 2, #ARGV do added[#added + 1] = redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return added`;

// KEYS: urls, report. ARGV: url, max, ttl ms.
const RECORD_URL = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 'known' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'closed' end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'recorded'`;

// KEYS: urls-done. ARGV: url, ttl ms.
const MARK_URL_DONE = `
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

// KEYS: report. ARGV: owner, now, lease ms, ttl ms.
const CLAIM = `
local current = redis.call('GET', KEYS[1])
if current then
  local record = cjson.decode(current)
  if record.state == 'reported' then return 'reported' end
  if tonumber(ARGV[2]) - record.claimedAt < tonumber(ARGV[3]) then return 'claimed' end
end
redis.call('SET', KEYS[1], cjson.encode({state = 'claimed', owner = ARGV[1],
  claimedAt = tonumber(ARGV[2])}), 'PX', ARGV[4])
return 'ok'`;

// KEYS: report, ids, outbox. ARGV: owner, unique ids, ttl ms, then pairs of
// sink name and outbox entry JSON.
const COMPLETE = `
local current = redis.call('GET', KEYS[1])
if not current then return 'lost' end
local record = cjson.decode(current)
if record.owner ~= ARGV[1] or record.state ~= 'claimed' then return 'lost' end
record.state = 'reported'
record.uniqueIds = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(record), 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 'ok'`;

// Removes an outbox entry if it is unchanged and records its outcome.
// KEYS: outbox, delivery. ARGV: sink, expected JSON, delivery record JSON,
// ttl ms. Returns -1 when the entry changed, else the entries left.
const FINISH_OUTBOX = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return redis.call('HLEN', KEYS[1])`;

// Replaces an outbox entry if it is unchanged. KEYS: outbox. ARGV: sink,
// expected JSON, new JSON. Returns 1 when replaced.
const SWAP_OUTBOX = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`;

/**
 * Creates a {@link Store} on a Redis connection. The store owns the
 * connection and closes it in `close()`.
 *
 * @example
 * ```ts
 * const store = createRedisStore(openRedis("redis://127.0.0.1:6379", logger), {
 *   retentionMs: 3_600_000,
 * });
 * ```
 */
export function createRedisStore(
  redis: RedisConnection,
  options: RedisStoreOptions,
): Store {
  return new RedisStore(redis, options);
}

/**
 * Opens a Redis client for `url` (`redis://` or `rediss://`, with user and
 * password if any) that fails commands at once while disconnected, instead
 * of queueing them, and reconnects in the background. Connection errors are
 * logged, at most once per outage.
 */
export function openRedis(url: string, logger: Logger): RedisConnection {
  const connectTimeoutMs = 2000;
  let down = false;
  let everReady = false;
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: connectTimeoutMs,
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 2000),
    },
  });
  client.on("error", (error: Error) => {
    if (down) return;
    down = true;
    logger.warn("Redis is unreachable: {error}", { error: error.message });
  });
  client.on("ready", () => {
    everReady = true;
    if (down) logger.info("Redis is reachable again");
    down = false;
  });
  client.connect().catch(() => {
    // Reported through the error event; the client keeps reconnecting.
  });

  /** Waiters for the first connection, ended early by `close()`. */
  const waiting = new Set<() => void>();

  /** Until the first connection, waits for it (up to the connect timeout). */
  function firstConnection(): Promise<void> {
    if (everReady) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        client.off("ready", done);
        waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, connectTimeoutMs);
      client.on("ready", done);
      waiting.add(done);
    });
  }

  return {
    async sendCommand(args) {
      await firstConnection();
      return await client.sendCommand(args);
    },
    async close() {
      for (const done of waiting) done();
      if (client.isReady) await client.close();
      else client.destroy();
    },
  };
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
  readonly #redis: RedisConnection;
  readonly #retentionMs: number;
  readonly #maxUrls: number;
  readonly #timeoutMs: number;
  readonly #clock: () => number;
  readonly #ids: GroupCommit;
  #closed: Promise<void> | undefined;
  /** Windows this process already put in the index of unreported windows. */
  readonly #indexed = new Set<number>();

  constructor(redis: RedisConnection, options: RedisStoreOptions) {
    if (!(options.retentionMs >= 1)) {
      throw new RangeError(
        `Cannot create Redis store: retentionMs must be at least 1, got ${options.retentionMs}`,
      );
    }
    this.#redis = redis;
    this.#retentionMs = Math.round(options.retentionMs);
    this.#maxUrls = options.maxUrlsPerWindow ?? 1000;
    this.#timeoutMs = options.timeoutMs ?? 1000;
    this.#clock = options.clock ?? Date.now;
    this.#ids = new GroupCommit({
      commit: (minute, ids) => this.#commitIds(minute, ids),
      batchSize: options.batchSize ?? 500,
      maxInFlight: options.maxInFlight ?? 4,
      seenIdsLimit: options.seenIdsLimit ?? 100_000,
      ...(options.onCommit ? { onCommit: options.onCommit } : {}),
    });
  }

  recordId(minute: number, id: string): Promise<boolean> {
    return this.#ids.record(minute, id);
  }

  knows(minute: number, id: string): boolean {
    return this.#ids.knows(minute, id);
  }

  async #commitIds(minute: number, ids: string[]): Promise<IdOutcome[]> {
    if (!this.#indexed.has(minute)) {
      await this.#call([
        "ZADD",
        REDIS_WINDOWS_KEY,
        "NX",
        String(minute),
        String(minute),
      ]);
      for (const m of this.#indexed) if (m < minute) this.#indexed.delete(m);
      this.#indexed.add(minute);
    }
    const keys = redisWindowKeys(minute);
    const added = await this.#call([
      "EVAL",
      RECORD_IDS,
      "2",
      keys.ids,
      keys.report,
      String(this.#retentionMs),
      ...ids,
    ]);
    if (added === -1) return ids.map(() => new WindowClosedError(minute));
    return (added as number[]).map((n) => n === 1 ? "recorded" : "known");
  }

  async recordUrl(minute: number, url: string): Promise<UrlOutcome> {
    const keys = redisWindowKeys(minute);
    const outcome = await this.#call([
      "EVAL",
      RECORD_URL,
      "2",
      keys.urls,
      keys.report,
      url,
      String(this.#maxUrls),
      String(this.#retentionMs),
    ]);
    if (outcome === "closed") throw new WindowClosedError(minute);
    return outcome as UrlOutcome;
  }

  async countIds(minute: number): Promise<number> {
    return Number(await this.#call(["SCARD", redisWindowKeys(minute).ids]));
  }

  async listUrls(minute: number): Promise<string[]> {
    return await this.#call([
      "SMEMBERS",
      redisWindowKeys(minute).urls,
    ]) as string[];
  }

  async listOwedUrls(minute: number): Promise<string[]> {
    const keys = redisWindowKeys(minute);
    return await this.#call(["SDIFF", keys.urls, keys.urlsDone]) as string[];
  }

  async markUrlDone(minute: number, url: string): Promise<void> {
    await this.#call([
      "EVAL",
      MARK_URL_DONE,
      "1",
      redisWindowKeys(minute).urlsDone,
      url,
      String(this.#retentionMs),
    ]);
  }

  async claimReport(
    minute: number,
    owner: string,
    now: number,
    leaseMs: number,
  ): Promise<ClaimOutcome> {
    const outcome = await this.#call([
      "EVAL",
      CLAIM,
      "1",
      redisWindowKeys(minute).report,
      owner,
      String(now),
      String(leaseMs),
      String(this.#retentionMs),
    ]);
    if (outcome === "ok") return { claimed: true };
    return { claimed: false, reason: outcome as "reported" | "claimed" };
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
      JSON.stringify({
        report: outbox!.report,
        attempts: 0,
        createdAt: outbox!.now,
        notBefore: outbox!.now,
      }),
    ]);
    if (entries.length > 0) {
      // Indexed first: an entry must never exist without its index.
      await this.#call([
        "ZADD",
        REDIS_OUTBOX_KEY,
        String(minute),
        String(minute),
      ]);
    }
    const outcome = await this.#call([
      "EVAL",
      COMPLETE,
      "3",
      keys.report,
      keys.ids,
      keys.outbox,
      owner,
      String(uniqueIds),
      String(this.#retentionMs),
      ...entries,
    ]);
    if (outcome !== "ok") {
      throw new StoreUnavailableError(
        `Cannot complete report of ${
          new Date(minute).toISOString()
        }: not claimed by ${owner}`,
      );
    }
    await this.#call(["ZREM", REDIS_WINDOWS_KEY, String(minute)]);
  }

  async listOutbox(): Promise<OutboxEntry[]> {
    const minutes = await this.#call(["ZRANGE", REDIS_OUTBOX_KEY, "0", "-1"]);
    const entries: OutboxEntry[] = [];
    for (const minute of (minutes as string[]).map(Number)) {
      const entriesOfMinute = pairs(
        await this.#call(["HGETALL", redisWindowKeys(minute).outbox]),
      );
      for (const [sink, json] of entriesOfMinute) {
        entries.push({ ...JSON.parse(json), minute, sink, version: json });
      }
    }
    return entries;
  }

  async leaseOutbox(entry: OutboxEntry, until: number): Promise<boolean> {
    return await this.#swapOutbox(entry, { notBefore: until });
  }

  async retryOutbox(entry: OutboxEntry, notBefore: number): Promise<void> {
    await this.#swapOutbox(entry, { attempts: entry.attempts + 1, notBefore });
  }

  async #swapOutbox(
    entry: OutboxEntry,
    change: Partial<Pick<OutboxEntry, "attempts" | "notBefore">>,
  ): Promise<boolean> {
    const { report, attempts, createdAt, notBefore } = { ...entry, ...change };
    const json = JSON.stringify({ report, attempts, createdAt, notBefore });
    const swapped = await this.#call([
      "EVAL",
      SWAP_OUTBOX,
      "1",
      redisWindowKeys(entry.minute).outbox,
      entry.sink,
      entry.version,
      json,
    ]);
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
    const record: DeliveryRecord = {
      state: outcome,
      at,
      attempts: entry.attempts,
    };
    const left = await this.#call([
      "EVAL",
      FINISH_OUTBOX,
      "2",
      keys.outbox,
      keys.delivery,
      entry.sink,
      entry.version,
      JSON.stringify(record),
      String(this.#retentionMs),
    ]);
    // The window's reports all left: nothing can enter its outbox again.
    if (left === 0) {
      await this.#call(["ZREM", REDIS_OUTBOX_KEY, String(entry.minute)]);
    }
  }

  async windowStats(minutes: number[]): Promise<WindowStats[]> {
    const all = await Promise.all(minutes.map(async (minute) => {
      const keys = redisWindowKeys(minute);
      const [report, deliveries] = await Promise.all([
        this.#call(["GET", keys.report]),
        this.#call(["HGETALL", keys.delivery]),
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
    await this.#call([
      "ZREMRANGEBYSCORE",
      REDIS_WINDOWS_KEY,
      "-inf",
      `(${oldest}`,
    ]);
    const minutes = await this.#call(["ZRANGE", REDIS_WINDOWS_KEY, "0", "-1"]);
    return (minutes as string[]).map(Number).sort((a, b) => a - b);
  }

  async ping(): Promise<void> {
    await this.#call(["PING"]);
  }

  queuedIds(): number {
    return this.#ids.queued;
  }

  close(): Promise<void> {
    this.#closed ??= this.#ids.drain().then(() => this.#redis.close());
    return this.#closed;
  }

  /** Sends a command within the time limit; any failure is unavailability. */
  async #call(args: string[]): Promise<unknown> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`timed out after ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    try {
      return await Promise.race([this.#redis.sendCommand(args), timeout]);
    } catch (error) {
      throw new StoreUnavailableError(
        `Redis ${args[0]} failed: ${(error as Error).message}`,
        { cause: error },
      );
    } finally {
      clearTimeout(timer);
    }
  }
}
