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
import { withinTime } from "../../time_limit.ts";
import { partitionOf } from "../id64.ts";
import { redisShardKeys, redisWindowKeys } from "../keys.ts";
import { StoreUnavailableError } from "../store.ts";
import type { RedisCommands } from "./commands.ts";
import type { RedisConnection } from "./connection.ts";
import { ADD_IDS } from "./scripts.ts";

/** Ids moved from a one-slot set into shards per script call. */
const MOVE_CHUNK = 1000;

/**
 * A window that instances of an earlier version are writing now: its ids
 * sit in the one-slot set of the window that is open at `now`, or of the
 * one before it (such a set is deleted when its window is reported).
 *
 * @param options.timeoutMs The time limit of each command, in ms.
 * @returns The window's start, or `undefined` when there is none.
 */
export async function windowOfEarlierVersion(
  redis: RedisConnection,
  options: { now: number; windowMs: number; timeoutMs: number },
): Promise<number | undefined> {
  const { now, windowMs, timeoutMs } = options;
  const open = Math.floor(now / windowMs) * windowMs;
  for (const minute of [open, open - windowMs]) {
    const key = redisWindowKeys(minute).oneSlotIds;
    const exists = await withinTime(
      redis.sendCommand(["EXISTS", key], key),
      timeoutMs,
      () =>
        new StoreUnavailableError(
          `Redis EXISTS timed out after ${timeoutMs} ms`,
        ),
    );
    if (Number(exists) === 1) return minute;
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
    const byShard = new Map<number, string[]>();
    for (const id of ids) {
      const shard = partitionOf(id, count);
      const moved = byShard.get(shard);
      if (moved) moved.push(id);
      else byShard.set(shard, [id]);
    }
    await Promise.all(
      [...byShard].map(([shard, moved]) =>
        redis.run(ADD_IDS, [shards[shard]!.ids], [
          String(retentionMs),
          ...moved,
        ])
      ),
    );
  } while (cursor !== "0");
  // Every id is in its shard now; the claim keeps the set from growing.
  await redis.write(["DEL", oneSlotIds]);
}
