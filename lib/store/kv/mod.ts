/**
 * The Deno KV store: each window's new ids as a partitioned log
 * (`kv_id_log.ts`), the in-memory table of ids an instance knows
 * (`id_table.ts`, `id64.ts`), the store built on it (`store_kv.ts`), and
 * the time limit on a remote database's calls (`kv_time_limit.ts`), the
 * instances' clock readings (`kv_clock.ts`), and the per-id layout of
 * earlier versions, still counted (`per_id_layout.ts`). It may
 * import the rest of `lib/store/`, `lib/minute.ts` and `lib/backoff.ts`.
 *
 * @module
 */
export { createKvStore, idLifetime } from "./store_kv.ts";
export { withTimeLimit } from "./kv_time_limit.ts";
export { createKvClockProbe } from "./kv_clock.ts";
