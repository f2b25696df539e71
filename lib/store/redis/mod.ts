/**
 * The Redis store, on one Redis or a Redis Cluster (`store_redis.ts`: the
 * layout and why it is slot-safe). It may import the rest of `lib/store/`.
 *
 * @module
 */
export { createRedisStore, openRedis } from "./store_redis.ts";
