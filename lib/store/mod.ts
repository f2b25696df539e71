/**
 * The shared store: the `Store` interface every backend keeps (ids, webhook
 * URLs, report claims, the outbox and delivery records), the key layout of
 * every backend (`keys.ts`), group commit and the first-seen filter, the
 * buffered wrapper for `ACK_MODE=buffered`, and the backends: `kv/` (Deno
 * KV: a per-window log of new ids) and `redis/` (one Redis or a Redis
 * Cluster). It may import `lib/minute.ts` and `lib/backoff.ts`, never HTTP,
 * reports or telemetry (observers are passed in).
 *
 * @module
 */
export { createBufferedStore } from "./buffered_store.ts";
export type { Store } from "./store.ts";
export { createKvStore, idLifetime, withTimeLimit } from "./kv/mod.ts";
export {
  createRedisStore,
  openRedis,
  type RedisConnection,
  windowOfEarlierVersion,
} from "./redis/mod.ts";
