/**
 * The Redis {@link Store}, on one Redis or a Redis Cluster.
 *
 * Layout: per window, a set of ids (`SADD` many ids per script call, batched
 * by group commit; `SCARD` is the exact count), a set of webhook URLs and one
 * of the URLs done, the report record (claimed with a script), the outbox
 * entries of its report (a hash, one field per sink) and what became of each
 * delivery. Every key of a window shares the hash tag `{verve:<minute>}`, so
 * they live in one cluster slot, and every script and multi-key command
 * touches the keys of one window only. Two small indexes are sorted sets of
 * window starts, each a single key in a slot of its own: `verve:windows`
 * (windows with ids and no report yet) and `verve:outbox` (windows with
 * reports waiting for a sink). They are only ever read or changed by
 * single-key commands, never together with a window's keys, so a cluster
 * client routes each command to the master that holds its key.
 *
 * Steps that span an index and a window are ordered so that a failure or a
 * failover between them loses nothing and duplicates nothing: a window
 * enters an index before its keys are written (an index entry without keys
 * is harmless: the claim finds the window reported or empty), and leaves it
 * only after its report or outbox is done (a stale entry is found done and
 * dropped, or ages out after the retention). The claim and the report are
 * one script each on the window's keys, so exactly one instance reports a
 * window whatever happens between the steps.
 *
 * On a cluster a master's writes reach its replica asynchronously; with
 * `waitReplicas`, each write is followed by `WAIT`, and counts only once that
 * many replicas have it (or every replica its master has left, after a
 * failover took one), so a failover that promotes the replica loses no
 * acknowledged id and no report state. How many replicas a master has is
 * read with `ROLE` and trusted for {@link REPLICA_COUNT_TTL_MS}, so a master
 * left without replicas is not asked to `WAIT` for one on every write.
 * Scripts are sent by digest (`EVALSHA`), and in full once per node that
 * does not know them yet.
 *
 * Every Redis error or timeout surfaces as {@link StoreUnavailableError}; the
 * client reconnects by itself (on a cluster, it also finds the new master of
 * a slot after a failover), so the store recovers when Redis returns.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Logger } from "@logtape/logtape";
import { createClient, createCluster } from "@redis/client";
import {
  type CommitObserver,
  GroupCommit,
  type IdOutcome,
} from "../group_commit.ts";
import {
  REDIS_OUTBOX_KEY,
  REDIS_WINDOWS_KEY,
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
  type DeliveryOutcome,
  type NewOutboxEntries,
  type OutboxChange,
  type OutboxEntry,
  type Store,
  StoreUnavailableError,
  type UrlOutcome,
  WindowClosedError,
  type WindowStats,
} from "../store.ts";

/** The part of a Redis client the store uses. */
export interface RedisConnection {
  /**
   * Sends one command, e.g. `["SCARD", key]`; on a cluster, to the master
   * of `key`'s slot (any node without a key).
   */
  sendCommand(args: string[], key?: string): Promise<unknown>;
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
  /**
   * Replicas that must have each write before it counts (Redis `WAIT`);
   * fewer within the time limit fail the write as unavailable. Default: 0.
   */
  waitReplicas?: number;
}

/** A Lua script, sent by its SHA-1 digest. */
interface Script {
  source: string;
  sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash("sha1").update(source).digest("hex") };
}

// Adds ids to the window's set unless the window's report exists.
// KEYS: ids, report. ARGV: ttl ms, id... Returns -1, or 1/0 per id.
const RECORD_IDS = script(`
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local added = {}
for i = 2, #ARGV do added[#added + 1] = redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return added`);

// KEYS: urls, report. ARGV: url, max, ttl ms.
const RECORD_URL = script(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 'known' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'closed' end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'full' end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'recorded'`);

// KEYS: urls-done. ARGV: url, ttl ms.
const MARK_URL_DONE = script(`
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`);

// KEYS: report. ARGV: owner, now, lease ms, ttl ms.
const CLAIM = script(`
local current = redis.call('GET', KEYS[1])
if current then
  local record = cjson.decode(current)
  if record.state == 'reported' then return 'reported' end
  if tonumber(ARGV[2]) - record.claimedAt < tonumber(ARGV[3]) then return 'claimed' end
end
redis.call('SET', KEYS[1], cjson.encode({state = 'claimed', owner = ARGV[1],
  claimedAt = tonumber(ARGV[2])}), 'PX', ARGV[4])
return 'ok'`);

// KEYS: report, ids, outbox. ARGV: owner, unique ids, ttl ms, then pairs of
// sink name and outbox entry JSON.
const COMPLETE = script(`
local current = redis.call('GET', KEYS[1])
if not current then return 'lost' end
local record = cjson.decode(current)
if record.owner ~= ARGV[1] or record.state ~= 'claimed' then return 'lost' end
record.state = 'reported'
record.uniqueIds = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(record), 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 'ok'`);

// Removes an outbox entry if it is unchanged and records its outcome.
// KEYS: outbox, delivery. ARGV: sink, expected JSON, delivery record JSON,
// ttl ms. Returns -1 when the entry changed, else the entries left.
const FINISH_OUTBOX = script(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return redis.call('HLEN', KEYS[1])`);

// Replaces an outbox entry if it is unchanged. KEYS: outbox. ARGV: sink,
// expected JSON, new JSON. Returns 1 when replaced.
const SWAP_OUTBOX = script(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`);

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
 * Opens a Redis client that fails commands at once while disconnected,
 * instead of queueing them, and reconnects in the background: to `urls[0]`
 * (`redis://` or `rediss://`, with user and password if any), or with
 * `cluster`, to the Redis Cluster that the seed nodes `urls` belong to, with
 * the first URL's credentials and TLS for every node (`timeoutMs`, default
 * 1000, bounds each command there, and a command past it makes the client
 * look for a slot's new master). Connection errors are logged, at most once
 * per outage.
 */
export function openRedis(
  urls: string[],
  logger: Logger,
  options: { cluster?: boolean; timeoutMs?: number } = {},
): RedisConnection {
  const connectTimeoutMs = 2000;
  const socket = {
    connectTimeout: connectTimeoutMs,
    reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 2000),
  };
  let down = false;
  let everReady = false;
  const onError = (error: Error) => {
    if (down) return;
    down = true;
    logger.warn("Redis is unreachable: {error}", { error: error.message });
  };
  const onReady = () => {
    everReady = true;
    if (down) logger.info("Redis is reachable again");
    down = false;
  };
  const first = new URL(urls[0]!);

  if (options.cluster) {
    const create = () => {
      const cluster = createCluster({
        rootNodes: urls.map((url) => ({ url })),
        defaults: {
          disableOfflineQueue: true,
          ...(first.username
            ? { username: decodeURIComponent(first.username) }
            : {}),
          ...(first.password
            ? { password: decodeURIComponent(first.password) }
            : {}),
          socket: {
            ...socket,
            ...(first.protocol === "rediss:" ? { tls: true } : {}),
          },
        },
      });
      cluster.on("error", onError);
      cluster.on("node-error", onError);
      cluster.on("node-ready", onReady);
      return cluster;
    };
    let cluster = create();
    /** Whether `cluster` knows the slots and has its connections. */
    let ready = false;
    /** A connection attempt under way; the first may fail, so may others. */
    let connecting: Promise<void> | undefined;
    /**
     * Connects within twice the connect timeout. A master that does not
     * answer keeps the client connecting for as long as it is away (its
     * replica may take over meanwhile), so past the limit the client is
     * dropped and the next command starts a fresh one.
     */
    const connect = () =>
      connecting ??= (async () => {
        const attempt = cluster.connect();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const connected = await Promise.race([
          attempt.then(() => true),
          new Promise<boolean>((resolve) =>
            timer = setTimeout(() => resolve(false), 2 * connectTimeoutMs)
          ),
        ]).catch((error: Error) => {
          onError(error);
          return false;
        });
        clearTimeout(timer);
        if (connected) {
          ready = true;
          onReady();
          return;
        }
        attempt.catch(() => {
          // The client is dropped: its attempt ends with it.
        });
        cluster.destroy();
        cluster = create();
      })().finally(() => connecting = undefined);
    void connect();
    let lastDiscovery = 0;
    /**
     * Asks the cluster for its slots again. The client does so by itself on
     * `MOVED`, but a master that died answers nothing (or not at all, when
     * its host is gone), so after a failover its slots would stay with it.
     */
    const rediscover = () => {
      const now = Date.now();
      if (now - lastDiscovery < 500) return;
      lastDiscovery = now;
      const slots = (cluster as unknown as {
        _slots?: { rediscover?(startWith: unknown): Promise<void> };
      })._slots;
      const anyNode = cluster.masters[0]?.client ?? cluster.replicas[0]?.client;
      if (!slots?.rediscover || !anyNode) return;
      slots.rediscover(anyNode).catch(() => {
        // Tried again after the next failure.
      });
    };
    const commandTimeoutMs = options.timeoutMs ?? 1000;
    return {
      async sendCommand(args, key) {
        if (!ready) await connect();
        if (!ready) throw new Error("no node of the Redis Cluster answers");
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          return await Promise.race([
            cluster.sendCommand(key, false, args),
            new Promise<never>((_, reject) =>
              timer = setTimeout(
                () =>
                  reject(new Error(`timed out after ${commandTimeoutMs} ms`)),
                commandTimeoutMs,
              )
            ),
          ]);
        } catch (error) {
          rediscover();
          throw error;
        } finally {
          clearTimeout(timer);
        }
      },
      async close() {
        await connecting;
        if (ready && cluster.isOpen) await cluster.close();
        else cluster.destroy();
      },
    };
  }

  const client = createClient({
    url: urls[0]!,
    disableOfflineQueue: true,
    socket,
  });
  client.on("error", onError);
  client.on("ready", onReady);
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

/** How long a master's count of connected replicas (`ROLE`) is trusted. */
export const REPLICA_COUNT_TTL_MS = 1000;

/** The hash tag of a key, which places it on a node, or the key itself. */
function hashTag(key: string): string {
  const open = key.indexOf("{");
  const close = open < 0 ? -1 : key.indexOf("}", open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

class RedisStore implements Store {
  readonly #redis: RedisConnection;
  readonly #retentionMs: number;
  readonly #maxUrls: number;
  readonly #timeoutMs: number;
  readonly #waitReplicas: number;
  readonly #clock: () => number;
  readonly #ids: GroupCommit;
  #closed: Promise<void> | undefined;
  /** Windows this process already put in the index of unreported windows. */
  readonly #indexed = new Set<number>();
  /** Connected replicas of the master of each hash tag, and when read. */
  readonly #replicaCounts = new Map<string, { count: number; at: number }>();

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
    this.#waitReplicas = options.waitReplicas ?? 0;
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
      await this.#write([
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
    const added = await this.#run(RECORD_IDS, [keys.ids, keys.report], [
      String(this.#retentionMs),
      ...ids,
    ]);
    if (added === -1) return ids.map(() => new WindowClosedError(minute));
    return (added as number[]).map((n) => n === 1 ? "recorded" : "known");
  }

  async recordUrl(minute: number, url: string): Promise<UrlOutcome> {
    const keys = redisWindowKeys(minute);
    const outcome = await this.#run(RECORD_URL, [keys.urls, keys.report], [
      url,
      String(this.#maxUrls),
      String(this.#retentionMs),
    ]);
    if (outcome === "closed") throw new WindowClosedError(minute);
    return outcome as UrlOutcome;
  }

  async countIds(minute: number): Promise<number> {
    const { ids } = redisWindowKeys(minute);
    return Number(await this.#call(["SCARD", ids], ids));
  }

  async listUrls(minute: number): Promise<string[]> {
    const { urls } = redisWindowKeys(minute);
    return await this.#call(["SMEMBERS", urls], urls) as string[];
  }

  async listOwedUrls(minute: number): Promise<string[]> {
    const keys = redisWindowKeys(minute);
    return await this.#call(
      ["SDIFF", keys.urls, keys.urlsDone],
      keys.urls,
    ) as string[];
  }

  async markUrlDone(minute: number, url: string): Promise<void> {
    await this.#run(MARK_URL_DONE, [redisWindowKeys(minute).urlsDone], [
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
    const outcome = await this.#run(CLAIM, [redisWindowKeys(minute).report], [
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
      JSON.stringify(newOutboxEntry(outbox!)),
    ]);
    if (entries.length > 0) {
      // Indexed first: an entry must never exist without its index.
      await this.#write([
        "ZADD",
        REDIS_OUTBOX_KEY,
        String(minute),
        String(minute),
      ]);
    }
    const outcome = await this.#run(
      COMPLETE,
      [keys.report, keys.ids, keys.outbox],
      [owner, String(uniqueIds), String(this.#retentionMs), ...entries],
    );
    if (outcome !== "ok") {
      throw new StoreUnavailableError(
        `Cannot complete report of ${
          new Date(minute).toISOString()
        }: not claimed by ${owner}`,
      );
    }
    await this.#write(["ZREM", REDIS_WINDOWS_KEY, String(minute)]);
  }

  async listOutbox(): Promise<OutboxEntry[]> {
    const minutes = await this.#call(
      ["ZRANGE", REDIS_OUTBOX_KEY, "0", "-1"],
      REDIS_OUTBOX_KEY,
    );
    const entries: OutboxEntry[] = [];
    for (const minute of (minutes as string[]).map(Number)) {
      const { outbox } = redisWindowKeys(minute);
      const entriesOfMinute = pairs(
        await this.#call(["HGETALL", outbox], outbox),
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
    const swapped = await this.#run(
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
    const left = await this.#run(FINISH_OUTBOX, [keys.outbox, keys.delivery], [
      entry.sink,
      entry.version,
      JSON.stringify(record),
      String(this.#retentionMs),
    ]);
    // The window's reports all left: nothing can enter its outbox again.
    if (left === 0) {
      await this.#write(["ZREM", REDIS_OUTBOX_KEY, String(entry.minute)]);
    }
  }

  async windowStats(minutes: number[]): Promise<WindowStats[]> {
    const all = await Promise.all(minutes.map(async (minute) => {
      const keys = redisWindowKeys(minute);
      const [report, deliveries] = await Promise.all([
        this.#call(["GET", keys.report], keys.report),
        this.#call(["HGETALL", keys.delivery], keys.delivery),
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
    await this.#write([
      "ZREMRANGEBYSCORE",
      REDIS_WINDOWS_KEY,
      "-inf",
      `(${oldest}`,
    ]);
    const minutes = await this.#call(
      ["ZRANGE", REDIS_WINDOWS_KEY, "0", "-1"],
      REDIS_WINDOWS_KEY,
    );
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

  /**
   * Runs `script` on `keys` (all of one window, so one slot) by its digest,
   * and in full where the node does not know it yet; then waits for the
   * replicas. The first key routes the call.
   */
  async #run(
    { source, sha }: Script,
    keys: string[],
    args: string[],
  ): Promise<unknown> {
    const rest = [String(keys.length), ...keys, ...args];
    let result: unknown;
    try {
      result = await this.#call(["EVALSHA", sha, ...rest], keys[0]);
    } catch (error) {
      const cause = (error as Error).cause;
      if (!(cause instanceof Error && cause.message.startsWith("NOSCRIPT"))) {
        throw error;
      }
      result = await this.#call(["EVAL", source, ...rest], keys[0]);
    }
    await this.#replicated(keys[0]!);
    return result;
  }

  /** Sends a single-key write (its key is `args[1]`), then waits for the replicas. */
  async #write(args: string[]): Promise<unknown> {
    const result = await this.#call(args, args[1]);
    await this.#replicated(args[1]!);
    return result;
  }

  /**
   * With `waitReplicas`, waits until that many replicas have the writes made
   * so far on `key`'s connection (Redis `WAIT`), within half the time limit;
   * fewer when `key`'s master has fewer replicas connected, and none (no
   * `WAIT` at all) when it has none.
   */
  async #replicated(key: string): Promise<void> {
    if (this.#waitReplicas === 0) return;
    const needed = Math.min(this.#waitReplicas, await this.#replicaCount(key));
    if (needed === 0) return;
    const acknowledged = Number(
      await this.#call(
        [
          "WAIT",
          String(needed),
          String(Math.max(1, Math.floor(this.#timeoutMs / 2))),
        ],
        key,
      ),
    );
    if (acknowledged >= needed) return;
    // A replica may have gone since the count was read: all the master has
    // now must have the write.
    const left = await this.#replicaCount(key, { fresh: true });
    if (acknowledged < Math.min(this.#waitReplicas, left)) {
      throw new StoreUnavailableError(
        `Redis write reached ${acknowledged} of ${this.#waitReplicas} replicas in time`,
      );
    }
  }

  /**
   * How many replicas `key`'s master has connected, from `ROLE`, read again
   * once {@link REPLICA_COUNT_TTL_MS} passed or when `fresh`.
   */
  async #replicaCount(
    key: string,
    options: { fresh?: boolean } = {},
  ): Promise<number> {
    const tag = hashTag(key);
    const now = performance.now();
    const known = this.#replicaCounts.get(tag);
    if (!options.fresh && known && now - known.at < REPLICA_COUNT_TTL_MS) {
      return known.count;
    }
    const role = await this.#call(["ROLE"], key) as unknown[];
    const count = Array.isArray(role[2]) ? role[2].length : 0;
    if (this.#replicaCounts.size >= 64) {
      // Tags come and go with their windows: drop the ones read long ago.
      for (const [old, { at }] of this.#replicaCounts) {
        if (now - at >= REPLICA_COUNT_TTL_MS) this.#replicaCounts.delete(old);
      }
    }
    this.#replicaCounts.set(tag, { count, at: now });
    return count;
  }

  /**
   * Sends a command, routed by `key` on a cluster, within the time limit;
   * any failure is unavailability.
   */
  async #call(args: string[], key?: string): Promise<unknown> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`timed out after ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    try {
      return await Promise.race([this.#redis.sendCommand(args, key), timeout]);
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
