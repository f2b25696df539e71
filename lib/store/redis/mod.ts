/**
 * The Redis store, on one Redis or a Redis Cluster: the store and why it is
 * exact and slot-safe (`store_redis.ts`), its batches of ids
 * (`group_commit.ts`, with the first-seen filter `seen_ids.ts`), its commands with their time
 * limit and replication wait (`commands.ts`), its Lua scripts
 * (`scripts.ts`), hash slots and the shards' tags (`slots.ts`), the
 * one-slot layout of earlier versions (`one_slot_layout.ts`), the server's
 * clock (`redis_clock.ts`), and the
 * connections to one server or a cluster (`connection.ts`,
 * `server_connection.ts`, `cluster_connection.ts`, opened by
 * `open_redis.ts`). It may import the rest of `lib/store/` and
 * `lib/time_limit.ts`.
 *
 * @module
 */
export { createRedisStore, MAX_SHARDS } from "./store_redis.ts";
export { windowOfEarlierVersion } from "./one_slot_layout.ts";
export { openRedis } from "./open_redis.ts";
export { createRedisClockProbe } from "./redis_clock.ts";
export type { RedisConnection } from "./connection.ts";
