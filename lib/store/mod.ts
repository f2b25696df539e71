/**
 * The shared store: the `Store` interface every backend keeps (ids, webhook
 * URLs, report claims, the outbox and delivery records), the key layout of
 * every backend (`keys.ts`), the buffered wrapper
 * for `ACK_MODE=buffered`, the fleet's clock read through the store
 * (`fleet_clock.ts`, `clock_probe.ts`), and the backends: `kv/` (Deno KV: a
 * per-window log of new ids, batched per partition) and `redis/` (one Redis
 * or a Redis Cluster, batched by its group commit). It may import the
 * top-level modules of `lib/`, never HTTP, reports or telemetry (observers
 * are passed in).
 *
 * @module
 */
export { createBufferedStore } from "./buffered_store.ts";
export type { Store } from "./store.ts";
export { FleetClock } from "./fleet_clock.ts";
export type { ClockProbe, ClockReading } from "./clock_probe.ts";
export {
  createKvClockProbe,
  createKvStore,
  idLifetime,
  withTimeLimit,
} from "./kv/mod.ts";
export {
  createRedisClockProbe,
  createRedisStore,
  openRedis,
  type RedisConnection,
  windowOfEarlierVersion,
} from "./redis/mod.ts";
