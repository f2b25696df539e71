/**
 * Redis Cluster hash slots, the hash tags that spread a window's shards
 * over them, and the grouping of a batch's ids by shard. A cluster places a key by the CRC16 of its hash tag (the part
 * between the first `{` and the next `}`) modulo 16384, and `redis-cli
 * --cluster create` gives each master an equal, contiguous range of slots.
 * Shard `s` of `count` gets a tag whose slot lies in the middle of the
 * `s`-th of `count` equal ranges, so with a count that is a multiple of the masters, every
 * master holds the same number of a window's shards.
 *
 * @module
 */

import { partitionOf } from "../id64.ts";

/** The number of hash slots of a Redis Cluster. */
export const SLOTS = 16_384;

const utf8 = new TextEncoder();

/** CRC16-CCITT (XMODEM), as Redis Cluster computes it, over UTF-8 bytes. */
function crc16(text: string): number {
  let crc = 0;
  for (const byte of utf8.encode(text)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/**
 * The positions in `ids` of the ids of each of `count` shards, by shard;
 * an id's shard is `partitionOf()` the id.
 */
export function byShard(
  ids: readonly string[],
  count: number,
): Map<number, number[]> {
  const shards = new Map<number, number[]>();
  ids.forEach((id, at) => {
    const shard = count === 1 ? 0 : partitionOf(id, count);
    const positions = shards.get(shard);
    if (positions) positions.push(at);
    else shards.set(shard, [at]);
  });
  return shards;
}

/** The hash tag of a key, which places it on a node, or the key itself. */
export function hashTag(key: string): string {
  const open = key.indexOf("{");
  const close = open < 0 ? -1 : key.indexOf("}", open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

/**
 * The hash slot of a key, as `CLUSTER KEYSLOT` answers.
 *
 * @example
 * ```ts
 * hashSlot("123456789"); // 12739, CRC16/XMODEM's check value
 * ```
 */
export function hashSlot(key: string): number {
  return crc16(hashTag(key)) % SLOTS;
}

/** Computed tags, by prefix and count. */
const known = new Map<string, readonly string[]>();

/**
 * The hash tags of `count` shards: shard `s` has the first tag
 * `<prefix>:<s>.<n>` (n = 0, 1, …) whose slot lies in the middle half of
 * `[floor(s·16384/count), floor((s+1)·16384/count))`, clear of its edges,
 * where `redis-cli --cluster create` may round a master's range by a slot.
 * Every instance computes the same tags; they are computed once per count.
 *
 * @param count The shards, 1 to 16384.
 * @param prefix What every tag starts with.
 */
export function shardTags(count: number, prefix: string): readonly string[] {
  if (!Number.isInteger(count) || count < 1 || count > SLOTS) {
    throw new RangeError(
      `Cannot spread shards over slots: count must be a whole number from 1 to ${SLOTS}, got ${count}`,
    );
  }
  const cacheKey = `${prefix}\n${count}`;
  const cached = known.get(cacheKey);
  if (cached) return cached;
  const tags = Array.from({ length: count }, (_, shard) => {
    const start = Math.floor(shard * SLOTS / count);
    const end = Math.floor((shard + 1) * SLOTS / count);
    const margin = Math.floor((end - start) / 4);
    const [low, high] = [start + margin, end - margin];
    for (let n = 0;; n++) {
      const tag = `${prefix}:${shard}.${n}`;
      const slot = hashSlot(`{${tag}}`);
      if (slot >= low && slot < high) return tag;
    }
  });
  known.set(cacheKey, tags);
  return tags;
}
