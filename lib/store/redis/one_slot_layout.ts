/**
 * The one-slot layout of earlier versions, which kept a window's ids in one
 * set in the window's own slot, `{verve:<minute>}:ids`, closed by the
 * report record: finding instances that still write it, and moving a
 * window's ids from it into the window's shards. Windows in that layout
 * alone are counted and closed by the store as any window (`countIds` adds
 * the set, the claim closes it, the report deletes it).
 *
 * @module
 */
import { redisShardKeys, redisWindowKeys } from "../keys.ts";
import { RedisCommands } from "./commands.ts";
import type { RedisConnection } from "./connection.ts";
import { ADD_IDS } from "./scripts.ts";
import { byShard } from "./slots.ts";

/** Ids moved from a one-slot set into shards per script call. */
const MOVE_CHUNK = 1000;

/** How long {@link windowOfEarlierVersion} watches for writes, in ms. */
export const EARLIER_VERSION_WATCH_MS = 2000;

/**
 * A window that instances of an earlier version are writing now: the
 * window open at `now`, or the one before, has a one-slot set of ids that
 * is written to while it is watched for `watchMs` (each write of the
 * earlier version sets the set's expiry again, so its time to live goes
 * up). A set left by instances that have stopped is not a writer: the new
 * version counts and reports it.
 *
 * @param options.timeoutMs The time limit of each command, in ms.
 * @param options.watchMs How long to watch a set that exists, in ms.
 * @returns The window's start, or `undefined` when there is none.
 */
export async function windowOfEarlierVersion(
  redis: RedisConnection,
  options: {
    now: number;
    windowMs: number;
    timeoutMs: number;
    watchMs?: number;
  },
): Promise<number | undefined> {
  const { now, windowMs, timeoutMs } = options;
  const watchMs = options.watchMs ?? EARLIER_VERSION_WATCH_MS;
  const open = Math.floor(now / windowMs) * windowMs;
  // Reads only: nothing to wait for replicas for.
  const commands = new RedisCommands(redis, { timeoutMs, waitReplicas: 0 });
  /** The set's time to live and size, `undefined` when it does not exist. */
  const read = async (key: string) => {
    const [ttl, size] = await Promise.all([
      commands.call(["PTTL", key], key),
      commands.call(["SCARD", key], key),
    ]);
    return Number(ttl) < 0
      ? undefined
      : { ttl: Number(ttl), size: Number(size) };
  };
  const watched: { minute: number; key: string; ttl: number; size: number }[] =
    [];
  for (const minute of [open, open - windowMs]) {
    const key = redisWindowKeys(minute).oneSlotIds;
    const first = await read(key);
    if (first) watched.push({ minute, key, ...first });
  }
  const started = performance.now();
  while (watched.length > 0 && performance.now() - started < watchMs) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const set of watched) {
      const later = await read(set.key);
      if (later && (later.ttl > set.ttl || later.size > set.size)) {
        return set.minute;
      }
      if (later) set.ttl = later.ttl;
    }
  }
  return undefined;
}

/**
 * Moves the ids of a window's one-slot set (written by an earlier
 * version) into its `count` shards, so that an id in both counts once,
 * then deletes the set. Runs before any shard closes; a takeover after a
 * crash in between moves the same ids again, harmlessly.
 */
export async function moveOneSlotIds(
  redis: RedisCommands,
  minute: number,
  options: { count: number; retentionMs: number },
): Promise<void> {
  const { count, retentionMs } = options;
  const { oneSlotIds } = redisWindowKeys(minute);
  const shards = redisShardKeys(minute, count);
  let cursor = "0";
  do {
    const [next, ids] = await redis.call(
      ["SSCAN", oneSlotIds, cursor, "COUNT", String(MOVE_CHUNK)],
      oneSlotIds,
    ) as [string, string[]];
    cursor = next;
    // Settled, not raced: no call may still run once this one gave up (a
    // takeover would find a shard set it deleted come back).
    const moves = await Promise.allSettled(
      [...byShard(ids, count)].map(([shard, positions]) =>
        redis.run(ADD_IDS, [shards[shard]!.ids], [
          String(retentionMs),
          ...positions.map((at) => ids[at]!),
        ])
      ),
    );
    const failed = moves.find((move) => move.status === "rejected");
    if (failed) throw failed.reason;
  } while (cursor !== "0");
  // Every id is in its shard now; the claim keeps the set from growing.
  await redis.write(["DEL", oneSlotIds]);
}
