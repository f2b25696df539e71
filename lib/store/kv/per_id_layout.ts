/**
 * The per-id layout of earlier versions on Deno KV: one key per id,
 * `verve/id/<minute>/<id>`, and the window's count in shards,
 * `verve/count/<minute>/<shard>` (deleted once reported). A window in that
 * layout is still counted, reported and caught up: the store adds its
 * shards to the count and drops them with the report, and the id log loads
 * its ids as known. Nothing writes it any more; once every window an
 * earlier version wrote is reported (or past `RETENTION_WINDOWS`), it is
 * gone from the database.
 *
 * @module
 */
import {
  allLegacyCountersPrefix,
  idOfLegacyIdKey,
  legacyCounterPrefix,
  legacyIdPrefix,
  minuteOfKey,
} from "../keys.ts";

/** Runs a KV call with the store's retries. */
export type WithRetries = <T>(call: () => Promise<T>) => Promise<T>;

/** The window's count shards in the per-id layout; none for a window of this version. */
export function perIdCounters(
  kv: Deno.Kv,
  minute: number,
  withRetries: WithRetries,
): Promise<Deno.KvEntry<Deno.KvU64>[]> {
  return withRetries(() =>
    Array.fromAsync(
      kv.list<Deno.KvU64>({ prefix: legacyCounterPrefix(minute) }),
    )
  );
}

/** The window's count in the per-id layout: the sum of its shards. */
export async function perIdCount(
  kv: Deno.Kv,
  minute: number,
  withRetries: WithRetries,
): Promise<number> {
  let total = 0;
  for (const shard of await perIdCounters(kv, minute, withRetries)) {
    total += Number(shard.value.value);
  }
  return total;
}

/** The windows with a count in the per-id layout, i.e. not yet reported. */
export async function perIdWindows(kv: Deno.Kv): Promise<number[]> {
  const minutes: number[] = [];
  for await (const entry of kv.list({ prefix: allLegacyCountersPrefix() })) {
    minutes.push(minuteOfKey(entry.key));
  }
  return minutes;
}

/**
 * The ids the window holds in the per-id layout, when it has a count
 * there; none otherwise (a window of this version is not read for them).
 */
export async function perIdIds(
  kv: Deno.Kv,
  minute: number,
  withRetries: WithRetries,
): Promise<string[]> {
  const [shard] = await withRetries(() =>
    Array.fromAsync(
      kv.list({ prefix: legacyCounterPrefix(minute) }, { limit: 1 }),
    )
  );
  if (shard === undefined) return [];
  const keys = await withRetries(() =>
    Array.fromAsync(kv.list({ prefix: legacyIdPrefix(minute) }))
  );
  return keys.map(({ key }) => idOfLegacyIdKey(key));
}
