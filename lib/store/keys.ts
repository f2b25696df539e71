/**
 * The key schemas of the store backends. Every key the service writes is
 * built here, so the layout can be read (and changed) in one place. Every key
 * carries the window start, so keys of different windows never collide, even
 * while an expired key is still visible (local KV expires keys lazily, up to
 * about a minute late).
 *
 * Deno KV:
 *
 * | key | value | lifetime |
 * | --- | --- | --- |
 * | `verve/window/<minute>` | {@link WindowLayout}: the window's partitions | deleted once reported |
 * | `verve/log/<minute>/<partition>/true` | the partition's head: its ids so far, a `Deno.KvU64` ({@link LogHead} in earlier versions) | deleted once reported |
 * | `verve/log/<minute>/<partition>/false` | the partition's owner: the instance that may append without reading first | deleted once reported |
 * | `verve/log/<minute>/<partition>/<seq>` | the ids new in commit `seq`, packed 8 bytes each | `expireIn` the window plus 5 minutes (`idLifetime`) |
 * | `verve/url/<minute>/<sha256>` | the URL | `expireIn` retention |
 * | `verve/urls/<minute>` | number of URLs | `expireIn` retention |
 * | `verve/url-done/<minute>/<sha256>` | `true`: the report reached the URL, or never can | `expireIn` retention |
 * | `verve/report/<minute>` | {@link ReportRecord} | `expireIn` retention |
 * | `verve/outbox/<minute>/<sink>` | report waiting for a sink | until delivered or dropped |
 * | `verve/delivery/<minute>/<sink>` | what became of the report | `expireIn` retention |
 * | `verve/clock/<instance>` | {@link ClockBeacon}: the instance's clock at its last check | `expireIn` a minute; deleted at shutdown |
 *
 * A partition's owner and head sort after its entries (`false` and `true`
 * sort after numbers, in that order), so one range read from an entry
 * onwards returns the entries after it, then the owner and the head. The
 * head's count is the sum of the ids in the partition's entries: a read
 * whose entries add up to less has missed one that landed behind it.
 *
 * A commit appends an entry and adds its ids to the head. An instance that
 * does not own the partition checks the head it read and takes the
 * partition (writes the owner); the owner checks only the owner key, which
 * its own commits leave alone, so it can have several commits in flight,
 * while another instance's takeover fails every one of them. Sums clear a
 * key's expiry in Deno KV, so a head lives until its window is reported.
 *
 * Earlier versions kept one key per id, `verve/id/<minute>/<id>`, and the
 * window's count in shards, `verve/count/<minute>/<shard>` (deleted once
 * reported); the store still reads them (see `kv/per_id_layout.ts`).
 *
 * Redis: the keys of one window share the hash tag `{verve:<minute>}`, so
 * they live in one Redis Cluster slot and one script can use them all. Its
 * ids are spread over shards (`REDIS_SHARDS`, fixed per window by its first
 * writer): an id's shard is `partitionOf()` of the id, and each shard's
 * keys have a hash tag of their own, `{verve:shard:<s>.<n>}`, whose slot
 * lies in the shard's share of the slot range ({@link shardTags}), so a
 * window's writes reach every master of a cluster alike.
 *
 * | key | type | lifetime |
 * | --- | --- | --- |
 * | `{verve:<minute>}:shards` | the window's shard count | retention |
 * | `{verve:shard:<s>.<n>}:<minute>:ids` | set of the shard's ids | retention; deleted once reported |
 * | `{verve:shard:<s>.<n>}:<minute>:closed` | marker: no id enters the shard | retention |
 * | `{verve:<minute>}:urls` | set of URLs | retention |
 * | `{verve:<minute>}:urls-done` | set of URLs the report reached, or never can | retention |
 * | `{verve:<minute>}:report` | {@link ReportRecord} as JSON | retention |
 * | `{verve:<minute>}:outbox` | hash: sink → report waiting for it | until delivered or dropped |
 * | `{verve:<minute>}:delivery` | hash: sink → what became of the report | retention |
 * | `verve:windows` | sorted set of windows with unreported ids | pruned past retention |
 * | `verve:outbox` | sorted set of windows with reports in the outbox | until emptied |
 *
 * Earlier versions kept a window's ids in one set in the window's own slot,
 * `{verve:<minute>}:ids`, closed by the report record; the store still
 * counts it (see `store_redis.ts`).
 *
 * @module
 */

import { shardTags } from "./redis/slots.ts";

const ROOT = "verve";

/** The record that claims a window's report, then holds its result. */
export interface ReportRecord {
  /** `claimed` while the reporter computes the count, then `reported`. */
  state: "claimed" | "reported";
  /** The instance that claimed the report. */
  owner: string;
  /** When the claim was made, in epoch milliseconds. */
  claimedAt: number;
  /** The window's unique id count, once reported. */
  uniqueIds?: number;
}

/** One instance's clock, as it last wrote it for the others to compare. */
export interface ClockBeacon {
  /** The instance's own clock when it wrote this, in epoch ms. */
  at: number;
}

/** How a window's id log is laid out, fixed by the first instance to write. */
export interface WindowLayout {
  /** The number of partitions of the window's log. */
  partitions: number;
}

/** The head of one partition of a window's id log, as earlier versions wrote it. */
export interface LogHead {
  /** The `seq` of the partition's last entry; entries count from 1. */
  seq: number;
  /** The ids in the partition's entries, in all. */
  count: number;
}

/** The key of a window's {@link WindowLayout}; present until it is reported. */
export function windowKey(minute: number): Deno.KvKey {
  return [ROOT, "window", minute];
}

/** The prefix of the layouts of every window not yet reported. */
export function allWindowsPrefix(): Deno.KvKey {
  return [ROOT, "window"];
}

/** The key of one partition's head. */
export function logHeadKey(minute: number, partition: number): Deno.KvKey {
  return [ROOT, "log", minute, partition, true];
}

/** The key of one partition's owner. */
export function logOwnerKey(minute: number, partition: number): Deno.KvKey {
  return [ROOT, "log", minute, partition, false];
}

/**
 * The ids a partition's head counts, in either form: a `Deno.KvU64`, or an
 * earlier version's {@link LogHead}; 0 for no head.
 */
export function countOfHead(value: Deno.KvU64 | LogHead | null): number {
  if (value === null) return 0;
  return value instanceof Deno.KvU64 ? Number(value.value) : value.count;
}

/** The key of one entry of a partition's log. */
export function logEntryKey(
  minute: number,
  partition: number,
  seq: number,
): Deno.KvKey {
  return [ROOT, "log", minute, partition, seq];
}

/** The first key past a partition's log: the end of its range reads. */
export function logEnd(minute: number, partition: number): Deno.KvKey {
  return [ROOT, "log", minute, partition + 1];
}

/** The key of an id in the earlier per-id layout. */
export function legacyIdKey(minute: number, id: string): Deno.KvKey {
  return [ROOT, "id", minute, id];
}

/** The prefix of a window's ids in the earlier per-id layout. */
export function legacyIdPrefix(minute: number): Deno.KvKey {
  return [ROOT, "id", minute];
}

/** One shard of a window's count in the earlier per-id layout. */
export function legacyCounterKey(minute: number, shard: number): Deno.KvKey {
  return [ROOT, "count", minute, shard];
}

/** The prefix of a window's count shards in the earlier per-id layout. */
export function legacyCounterPrefix(minute: number): Deno.KvKey {
  return [ROOT, "count", minute];
}

/** The prefix of every count shard in the earlier per-id layout. */
export function allLegacyCountersPrefix(): Deno.KvKey {
  return [ROOT, "count"];
}

/** The key holding one webhook URL of a window, by the URL's SHA-256. */
export function urlKey(minute: number, urlHash: string): Deno.KvKey {
  return [ROOT, "url", minute, urlHash];
}

/** The prefix of all webhook URLs of one window. */
export function urlPrefix(minute: number): Deno.KvKey {
  return [ROOT, "url", minute];
}

/** The key marking that a window's report is done with one webhook URL. */
export function urlDoneKey(minute: number, urlHash: string): Deno.KvKey {
  return [ROOT, "url-done", minute, urlHash];
}

/** The prefix of the webhook URLs a window's report is done with. */
export function urlDonePrefix(minute: number): Deno.KvKey {
  return [ROOT, "url-done", minute];
}

/**
 * The window start that a per-window key (`verve/<kind>/<minute>/…`, every
 * Deno KV key above but the clocks) carries.
 *
 * @throws {TypeError} when the key has no window start where it should.
 */
export function minuteOfKey(key: Deno.KvKey): number {
  return keyPart(key, 2, "number");
}

/** The sink an outbox or delivery key (`verve/…/<minute>/<sink>`) names. */
export function sinkOfKey(key: Deno.KvKey): string {
  return keyPart(key, 3, "string");
}

/** The URL's hash a URL key (`verve/url…/<minute>/<sha256>`) carries. */
export function urlHashOfKey(key: Deno.KvKey): string {
  return keyPart(key, 3, "string");
}

/** The `seq` of a log entry's key (`verve/log/<minute>/<partition>/<seq>`). */
export function seqOfLogEntryKey(key: Deno.KvKey): number {
  return keyPart(key, 4, "number");
}

/** The id of an earlier version's per-id key (`verve/id/<minute>/<id>`). */
export function idOfLegacyIdKey(key: Deno.KvKey): string {
  return keyPart(key, 3, "string");
}

/** The instance a clock key (`verve/clock/<instance>`) names. */
export function instanceOfClockKey(key: Deno.KvKey): string {
  return keyPart(key, 2, "string");
}

function keyPart(key: Deno.KvKey, index: number, type: "number"): number;
function keyPart(key: Deno.KvKey, index: number, type: "string"): string;
function keyPart(
  key: Deno.KvKey,
  index: number,
  type: "number" | "string",
): number | string {
  const part = key[index];
  if (typeof part === "number" && type === "number") return part;
  if (typeof part === "string" && type === "string") return part;
  throw new TypeError(
    `Cannot read part ${index} of key ${
      key.map(String).join("/")
    }: not a ${type}`,
  );
}

/** The key of one instance's {@link ClockBeacon}. */
export function clockKey(instance: string): Deno.KvKey {
  return [ROOT, "clock", instance];
}

/** The prefix of every instance's {@link ClockBeacon}. */
export function clockPrefix(): Deno.KvKey {
  return [ROOT, "clock"];
}

/** The key holding how many distinct URLs a window has. */
export function urlCountKey(minute: number): Deno.KvKey {
  return [ROOT, "urls", minute];
}

/** The key of a report waiting in the outbox for one sink. */
export function outboxKey(minute: number, sink: string): Deno.KvKey {
  return [ROOT, "outbox", minute, sink];
}

/** The prefix of every outbox entry. */
export function outboxPrefix(): Deno.KvKey {
  return [ROOT, "outbox"];
}

/** The key recording what became of a window's report for one sink. */
export function deliveryKey(minute: number, sink: string): Deno.KvKey {
  return [ROOT, "delivery", minute, sink];
}

/** The prefix of the delivery records of one window. */
export function deliveryPrefix(minute: number): Deno.KvKey {
  return [ROOT, "delivery", minute];
}

/** The key of a window's {@link ReportRecord}. */
export function reportKey(minute: number): Deno.KvKey {
  return [ROOT, "report", minute];
}

/** The Redis keys of one window, sharing one hash tag. */
export interface RedisWindowKeys {
  /** The window's shard count. */
  shards: string;
  /** The window's ids in the one-slot layout of earlier versions. */
  oneSlotIds: string;
  urls: string;
  urlsDone: string;
  report: string;
  outbox: string;
  delivery: string;
}

/** The Redis keys of the window starting at `minute`. */
export function redisWindowKeys(minute: number): RedisWindowKeys {
  const tag = `{${ROOT}:${minute}}`;
  return {
    shards: `${tag}:shards`,
    oneSlotIds: `${tag}:ids`,
    urls: `${tag}:urls`,
    urlsDone: `${tag}:urls-done`,
    report: `${tag}:report`,
    outbox: `${tag}:outbox`,
    delivery: `${tag}:delivery`,
  };
}

/** The Redis keys of one shard of a window, sharing the shard's hash tag. */
export interface RedisShardKeys {
  /** The shard's ids. */
  ids: string;
  /** Present once the shard is closed for its report. */
  closed: string;
}

/**
 * The Redis keys of every shard of the window starting at `minute`, when
 * the window has `count` shards.
 */
export function redisShardKeys(
  minute: number,
  count: number,
): RedisShardKeys[] {
  return shardTags(count, `${ROOT}:shard`).map((tag) => ({
    ids: `{${tag}}:${minute}:ids`,
    closed: `{${tag}}:${minute}:closed`,
  }));
}

/** The Redis sorted set of windows that have ids and no report yet. */
export const REDIS_WINDOWS_KEY = `${ROOT}:windows`;

/** The Redis sorted set of windows with reports in the outbox. */
export const REDIS_OUTBOX_KEY = `${ROOT}:outbox`;
