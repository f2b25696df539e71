/**
 * The KV engine and the store alone, with no HTTP and no load generator: the
 * ceiling that the service's new-id workloads work against.
 *
 * 1. The engine: the store's atomic operations committed straight to a KV
 *    file, per batch size and commits in flight, in both layouts side by
 *    side. `log`: the store's layout, an owner's commit (checks of the
 *    partition's owner, of the entry and of the window's report, the count
 *    added to the head, and one entry with the batch's ids packed 8 bytes
 *    each; each commit in flight on a partition of its own). `per-id`: the layout of earlier versions, a check and a set per
 *    id and one counter `sum`. Ids are random 63-bit numbers, as in
 *    `deno task bench`'s workload b, or sequential for contrast: random ids
 *    land on random B-tree pages, sequential ones on the same few.
 * 2. The store (queue, partitions, in-memory id table) fed by 64 callers, as
 *    many as the HTTP bench's connections, each awaiting `recordId` in a
 *    loop, per number of partitions.
 * 3. The store at a fixed rate (default 10 000 ids/s, as workload d; ids
 *    leave in bursts on a 1 ms timer): latency of each `recordId` call.
 * 4. A restart mid-window: a window's log holds 1M ids, and a new store on
 *    the file answers 1000 new ids, reading every partition's log first.
 *
 * The KV files go to a fresh temp directory, on the same file system as the
 * HTTP bench's, unless `--dir` names another (e.g. a tmpfs, to see what the
 * disk costs).
 *
 * Usage: `deno task bench:kv [--seconds S] [--rate N] [--dir D] [--out F]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { markdownTable } from "./markdown_table.ts";
import { getLogger } from "@logtape/logtape";
import { createBufferedStore } from "../lib/store/buffered_store.ts";
import { type Id64, packIds, splitId } from "../lib/store/id64.ts";
import {
  legacyCounterKey,
  legacyIdKey,
  logEntryKey,
  logHeadKey,
  logOwnerKey,
  reportKey,
} from "../lib/store/keys.ts";
import type { Store } from "../lib/store/store.ts";
import { createKvStore } from "../lib/store/kv/store_kv.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    rate: { type: "string", default: "10000" },
    dir: { type: "string" },
    out: { type: "string" },
  },
});
const seconds = Number(values.seconds);
const rate = Number(values.rate);
if (!(seconds > 0) || !(rate > 0)) {
  console.error("Cannot parse --seconds or --rate: need positive numbers");
  Deno.exit(2);
}
const dir = await Deno.makeTempDir({
  prefix: "verve-kv-engine-",
  ...(values.dir ? { dir: values.dir } : {}),
});
const RETENTION_MS = 3_600_000;
const SEEN = new Uint8Array(0);

/** A random id as `bench/ids.lua` makes them: up to 18 digits. */
function randomId(): string {
  const high = 1 + Math.floor(Math.random() * 999_999_999);
  const low = Math.floor(Math.random() * 1_000_000_000);
  return `${high}${String(low).padStart(9, "0")}`;
}

let sequence = 0;
function sequentialId(): string {
  return String(sequence++);
}

interface EngineRow {
  layout: "log" | "per-id";
  ids: "random" | "sequential";
  batch: number;
  in_flight: number;
  ids_per_s: number;
  commit_ms: number;
}

async function engine(
  layout: EngineRow["layout"],
  ids: EngineRow["ids"],
  batch: number,
  inFlight: number,
): Promise<EngineRow> {
  const kv = await Deno.openKv(
    `${dir}/engine-${layout}-${ids}-${batch}-${inFlight}.kv`,
  );
  const nextId = ids === "random" ? randomId : sequentialId;
  const minute = Date.now();
  let recorded = 0;
  let commits = 0;
  let commitMs = 0;
  const until = performance.now() + seconds * 1000;
  const build = layout === "log" ? logCommit : perIdCommit;
  async function committer(partition: number) {
    const head = { seq: 0, versionstamp: null as string | null };
    while (performance.now() < until) {
      const op = build(kv, minute, partition, head, batch, nextId);
      const started = performance.now();
      const result = await op.commit();
      commitMs += performance.now() - started;
      commits++;
      if (result.ok) {
        recorded += batch;
        head.seq++;
        // The owner key's versionstamp: the first commit wrote it.
        head.versionstamp ??= result.versionstamp;
      }
    }
  }
  await Promise.all(Array.from({ length: inFlight }, (_, i) => committer(i)));
  kv.close();
  return {
    layout,
    ids,
    batch,
    in_flight: inFlight,
    ids_per_s: Math.round(recorded / seconds),
    commit_ms: round(commitMs / commits),
  };
}

/**
 * The store's commit, as in `kv_id_log.ts`: the first takes the partition
 * (checks its head, writes it and the owner), the next ones commit as its
 * owner (check the owner key and that the entry is new, add to the head);
 * each writes one entry.
 */
function logCommit(
  kv: Deno.Kv,
  minute: number,
  partition: number,
  head: { seq: number; versionstamp: string | null },
  batch: number,
  nextId: () => string,
): Deno.AtomicOperation {
  const ids: Id64[] = Array.from(
    { length: batch },
    () => splitId(nextId(), { lo: 0, hi: 0 }),
  );
  const seq = head.seq + 1;
  const op = kv.atomic().check({ key: reportKey(minute), versionstamp: null });
  if (head.versionstamp === null) {
    op.check({ key: logHeadKey(minute, partition), versionstamp: null })
      .set(logHeadKey(minute, partition), new Deno.KvU64(BigInt(batch)))
      .set(logOwnerKey(minute, partition), "bench");
  } else {
    op.check({
      key: logOwnerKey(minute, partition),
      versionstamp: head.versionstamp,
    })
      .check({ key: logEntryKey(minute, partition, seq), versionstamp: null })
      .sum(logHeadKey(minute, partition), BigInt(batch));
  }
  return op.set(logEntryKey(minute, partition, seq), packIds(ids), {
    expireIn: RETENTION_MS,
  });
}

/** The per-id layout's commit: a check and a set per id, one counter sum. */
function perIdCommit(
  kv: Deno.Kv,
  minute: number,
  partition: number,
  head: { seq: number },
  batch: number,
  nextId: () => string,
): Deno.AtomicOperation {
  const op = kv.atomic().check({ key: reportKey(minute), versionstamp: null });
  for (let i = 0; i < batch; i++) {
    const key = legacyIdKey(minute, nextId());
    op.check({ key, versionstamp: null });
    op.set(key, SEEN, { expireIn: RETENTION_MS });
  }
  return op.sum(
    legacyCounterKey(minute, (head.seq + partition) % 16),
    BigInt(batch),
  );
}

async function openStore(
  name: string,
  buffered: boolean,
  partitions = 4,
): Promise<Store> {
  const kvStore = createKvStore(await Deno.openKv(`${dir}/${name}.kv`), {
    retentionMs: RETENTION_MS,
    partitions,
  });
  if (!buffered) return kvStore;
  return createBufferedStore(kvStore, {
    logger: getLogger(["bench"]),
    maxPending: 2000,
  });
}

interface StoreRow {
  mode: "durable" | "buffered";
  partitions: number;
  callers: number;
  ids_per_s: number;
}

async function storeLoop(
  buffered: boolean,
  partitions: number,
  callers: number,
): Promise<StoreRow> {
  const store = await openStore(
    `loop-${buffered}-${partitions}`,
    buffered,
    partitions,
  );
  const minute = Date.now();
  let recorded = 0;
  const until = performance.now() + seconds * 1000;
  async function caller() {
    while (performance.now() < until) {
      await store.recordId(minute, randomId());
      recorded++;
    }
  }
  await Promise.all(Array.from({ length: callers }, caller));
  await store.close();
  return {
    mode: buffered ? "buffered" : "durable",
    partitions,
    callers,
    ids_per_s: Math.round(recorded / seconds),
  };
}

interface RateRow {
  mode: "durable" | "buffered";
  rate: number;
  ids: number;
  failed: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

async function storeAtRate(buffered: boolean): Promise<RateRow> {
  const store = await openStore(`rate-${buffered}`, buffered);
  const minute = Date.now();
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  let failed = 0;
  const total = Math.round(rate * seconds);
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(
      total,
      Math.floor((performance.now() - start) * rate / 1000),
    );
    for (; sent < due; sent++) {
      const called = performance.now();
      pending.push(
        store.recordId(minute, randomId()).then(
          () => void latencies.push(performance.now() - called),
          () => void failed++,
        ),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(pending);
  await store.close();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    round(
      latencies[
        Math.min(latencies.length - 1, Math.floor(q * latencies.length))
      ] ?? 0,
    );
  return {
    mode: buffered ? "buffered" : "durable",
    rate,
    ids: latencies.length,
    failed,
    p50_ms: at(0.5),
    p99_ms: at(0.99),
    max_ms: round(latencies.at(-1) ?? 0),
  };
}

interface LoadRow {
  ids_in_log: number;
  partitions: number;
  load_ms: number;
}

async function restartLoad(ids: number, partitions: number): Promise<LoadRow> {
  const path = `${dir}/load-${partitions}.kv`;
  const options = { retentionMs: RETENTION_MS, partitions };
  const writer = createKvStore(await Deno.openKv(path), options);
  const minute = Date.now();
  for (let written = 0; written < ids;) {
    const chunk = Math.min(32_768, ids - written);
    await Promise.all(
      Array.from({ length: chunk }, () => writer.recordId(minute, randomId())),
    );
    written += chunk;
  }
  await writer.close();
  const reader = createKvStore(await Deno.openKv(path), options);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 1000 }, () => reader.recordId(minute, randomId())),
  );
  const loadMs = performance.now() - started;
  await reader.close();
  return { ids_in_log: ids, partitions, load_ms: Math.round(loadMs) };
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

function table(rows: object[]): void {
  console.log(markdownTable(
    Object.keys(rows[0]!),
    rows.map((row) => Object.values(row).map(String)),
  ));
  console.log("");
}

const engineRows: EngineRow[] = [];
for (
  const [layout, ids, batch, inFlight] of [
    ["per-id", "random", 32, 1],
    ["log", "random", 32, 1],
    ["per-id", "random", 99, 4],
    ["log", "random", 99, 4],
    ["log", "random", 1000, 1],
    ["log", "random", 1000, 4],
    ["log", "random", 8192, 1],
    ["per-id", "sequential", 99, 4],
    ["log", "sequential", 99, 4],
  ] as const
) {
  engineRows.push(await engine(layout, ids, batch, inFlight));
}
table(engineRows);

const storeRows: StoreRow[] = [];
for (const partitions of [1, 4, 16]) {
  for (const buffered of [false, true]) {
    storeRows.push(await storeLoop(buffered, partitions, 64));
  }
}
table(storeRows);

const rateRows = [await storeAtRate(false), await storeAtRate(true)];
table(rateRows);

const loadRows = [
  await restartLoad(1_000_000, 1),
  await restartLoad(1_000_000, 4),
];
table(loadRows);

await Deno.remove(dir, { recursive: true });
if (values.out) {
  await Deno.writeTextFile(
    values.out,
    JSON.stringify(
      {
        engine: engineRows,
        store: storeRows,
        fixed_rate: rateRows,
        restart: loadRows,
      },
      null,
      2,
    ) + "\n",
  );
}
