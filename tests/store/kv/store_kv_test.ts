import assert from "node:assert/strict";
import {
  checkOutboxContract,
  checkOwedUrls,
  checkQueueId,
  checkReportClaim,
  checkStaleClaimTakeover,
  checkUrlCap,
  checkWindowStats,
} from "../../helpers/store_contract.ts";
import { DatabaseSync } from "node:sqlite";
import {
  createKvStore,
  idLifetime,
  type KvStoreOptions,
} from "../../../lib/store/kv/store_kv.ts";
import { StoreUnavailableError } from "../../../lib/store/store.ts";
import {
  everyNthCommitFails,
  everyNthCommitLost,
  failingCommits,
  gatedCommits,
  readIdLog,
  tempKvPath,
  waitFor,
} from "../../helpers/kv.ts";
import { withinTime } from "../../../lib/time_limit.ts";
import { MAX_IDS_PER_ENTRY } from "../../../lib/store/kv/kv_id_log.ts";
import {
  legacyCounterKey,
  legacyIdKey,
  logEntryKey,
  logHeadKey,
  logOwnerKey,
  windowKey,
} from "../../../lib/store/keys.ts";
import { packIds } from "../../../lib/store/id64.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12, 0);
const NEXT = MINUTE + 60_000;
const OPTIONS: KvStoreOptions = { retentionMs: 3_600_000, retryBaseMs: 1 };

async function memoryStore(options: Partial<KvStoreOptions> = {}) {
  return createKvStore(await Deno.openKv(":memory:"), {
    ...OPTIONS,
    ...options,
  });
}

function count(results: boolean[]): number {
  return results.filter(Boolean).length;
}

Deno.test("recordId() counts hundreds of concurrent duplicates once", async () => {
  await using store = await memoryStore();
  const results = await Promise.all(
    Array.from({ length: 500 }, () => store.recordId(MINUTE, "42")),
  );
  assert.equal(count(results), 1);
  assert.equal(await store.countIds(MINUTE), 1);
  assert.equal(await store.recordId(MINUTE, "42"), false);
});

Deno.test("recordId() counts many distinct ids exactly", async (t) => {
  for (const partitions of [1, 7, 64]) {
    await t.step(`with ${partitions} partitions`, async () => {
      await using store = await memoryStore({ partitions });
      const ids = Array.from({ length: 3000 }, (_, i) => String(i * 7919));
      const results = await Promise.all(
        ids.map((id) => store.recordId(MINUTE, id)),
      );
      assert.equal(count(results), 3000);
      assert.equal(await store.countIds(MINUTE), 3000);
    });
  }
});

Deno.test("recordId() counts duplicates spread over batches once", async () => {
  await using store = await memoryStore({ maxInFlight: 1 });
  const ids = Array.from({ length: 2000 }, (_, i) => String((i * 37) % 300));
  const first = await Promise.all(ids.map((id) => store.recordId(MINUTE, id)));
  assert.equal(count(first), 300);
  const again = await Promise.all(ids.map((id) => store.recordId(MINUTE, id)));
  assert.equal(count(again), 0);
  assert.equal(await store.countIds(MINUTE), 300);
});

Deno.test("recordId() keeps windows apart across a boundary", async () => {
  await using store = await memoryStore();
  const results = await Promise.all([
    ...["1", "2", "3", "1"].map((id) => store.recordId(MINUTE, id)),
    ...["1", "4", "4"].map((id) => store.recordId(NEXT, id)),
  ]);
  assert.deepEqual(results, [true, true, true, false, true, true, false]);
  assert.equal(await store.countIds(MINUTE), 3);
  assert.equal(await store.countIds(NEXT), 2);
  assert.deepEqual(await store.unreportedWindows(), [MINUTE, NEXT]);
});

Deno.test("two stores sharing one KV file count every id exactly once", async () => {
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    partitions: 1,
  });
  await using b = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    partitions: 1,
  });
  const ids = Array.from({ length: 1500 }, (_, i) => String(i % 500));
  const results = await Promise.all(
    ids.flatMap((id, i) => [
      (i % 2 ? a : b).recordId(MINUTE, id),
      (i % 3 ? b : a).recordId(MINUTE, id),
      (i % 5 ? a : b).recordId(NEXT, id),
    ]),
  );
  assert.equal(count(results), 1000);
  assert.equal(await a.countIds(MINUTE), 500);
  assert.equal(await b.countIds(NEXT), 500);
  await a.close();
});

Deno.test("recordId() retries a commit that throws", async () => {
  const kv = await Deno.openKv(":memory:");
  const failures = { count: 2 };
  await using store = createKvStore(failingCommits(kv, failures), OPTIONS);
  assert.equal(await store.recordId(MINUTE, "5"), true);
  assert.equal(failures.count, 0);
  assert.equal(await store.countIds(MINUTE), 1);
});

Deno.test("recordId() fails, and counts nothing, when commits keep throwing", async () => {
  await using file = await tempKvPath();
  const failures = { count: Infinity };
  await using store = createKvStore(
    failingCommits(await Deno.openKv(file.path), failures),
    { ...OPTIONS, commitAttempts: 3 },
  );
  const results = await Promise.allSettled(
    ["1", "2", "2", "3"].map((id) => store.recordId(MINUTE, id)),
  );
  for (const result of results) {
    assert.equal(result.status, "rejected");
    assert.ok(result.reason instanceof StoreUnavailableError);
    assert.match(result.reason.message, /database is locked/);
  }
  failures.count = 0;
  assert.equal(await store.countIds(MINUTE), 0);
  assert.equal(await store.recordId(MINUTE, "2"), true);
  assert.equal(await store.countIds(MINUTE), 1);
});

Deno.test("claimReport() lets one of many instances claim a window, closes it, and only the owner completes it", async () => {
  await using file = await tempKvPath();
  const stores = await Promise.all(
    [1, 2, 3].map(async () =>
      createKvStore(await Deno.openKv(file.path), OPTIONS)
    ),
  );
  await checkReportClaim(stores);
  for (const store of stores) await store.close();
});

Deno.test("claimReport() lets a stale claim be taken over after its lease", async () => {
  await using store = await memoryStore();
  await checkStaleClaimTakeover(store);
});

Deno.test("recordUrl() dedupes URLs and enforces the per-window cap across instances", async () => {
  await using file = await tempKvPath();
  const [a, b] = await Promise.all(
    [1, 2].map(async () =>
      createKvStore(await Deno.openKv(file.path), {
        ...OPTIONS,
        maxUrlsPerWindow: 5,
      })
    ),
  );
  await checkUrlCap(a!, b!, 5);
  await a!.close();
  await b!.close();
});

Deno.test("windowStats() tells of the windows asked for, and only of those", async () => {
  await using store = await memoryStore();
  await checkWindowStats(store);
});

Deno.test("queueId() tells one waiter shared by many ids of each, once", async () => {
  await using store = await memoryStore();
  await checkQueueId(store);
});

Deno.test("log entries expire after idRetentionMs, the window's other keys after retentionMs", async () => {
  await using file = await tempKvPath();
  const store = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    idRetentionMs: 360_000,
  });
  const before = Date.now();
  await store.recordId(MINUTE, "1");
  await store.recordUrl(MINUTE, "https://example.com/");
  const after = Date.now();
  await store.close();
  // Deno KV keeps each key's expiry in its SQLite file; keys are encoded as
  // tuples, so a log key starts with the bytes of ("verve", "log"), and an
  // entry's key ends with its number, an owner's with `false`, a head's with
  // `true`.
  const db = new DatabaseSync(file.path, { readOnly: true });
  const rows = db.prepare(
    "SELECT hex(k) AS key, expiration_ms AS expires FROM kv",
  ).all() as { key: string; expires: number }[];
  db.close();
  const logPrefix = "02766572766500026C6F6700";
  const isHeadOrOwner = (key: string) => /2[67]$/.test(key);
  const entries = rows.filter((row) =>
    row.key.startsWith(logPrefix) && !isHeadOrOwner(row.key)
  );
  const others = rows.filter((row) =>
    !entries.includes(row) && row.expires >= 0
  );
  assert.equal(entries.length, 1);
  // The URL, the URL count, the window's layout, the partition's head and
  // its owner.
  assert.equal(others.length, 5);
  for (const { expires } of entries) {
    assert.ok(expires >= before + 360_000 && expires <= after + 360_000);
  }
  for (const { expires } of others) {
    assert.ok(expires >= before + 3_600_000 && expires <= after + 3_600_000);
  }
});

Deno.test("idLifetime() keeps ids for their window plus five minutes, within the retention, and commits within half the margin", () => {
  for (
    const [windowMs, retentionMs, idRetentionMs] of [
      [60_000, 3_600_000, 360_000],
      [3_600_000, 7_200_000, 7_200_000],
      [600_000, 86_400_000, 1_200_000],
      [2000, 4000, 4000],
    ]
  ) {
    const lifetime = idLifetime(windowMs!, retentionMs!);
    assert.equal(lifetime.idRetentionMs, idRetentionMs);
    // A commit runs before the window's end plus the wait, well before any
    // key of the window (set at its start at the earliest) expires.
    assert.equal(lifetime.maxCommitWaitMs, (idRetentionMs! - windowMs!) / 2);
    assert.ok(windowMs! + lifetime.maxCommitWaitMs < lifetime.idRetentionMs);
  }
});

Deno.test("recordId() refuses a commit past its deadline, and counts nothing", async () => {
  const kv = await Deno.openKv(":memory:");
  const failures = { count: 1000 };
  await using store = createKvStore(failingCommits(kv, failures), {
    ...OPTIONS,
    retryBaseMs: 20,
    commitAttempts: 20,
    maxCommitWaitMs: 50,
    clock: () => MINUTE + 1000,
  });
  await assert.rejects(
    store.recordId(MINUTE, "1"),
    StoreUnavailableError,
    "deadline",
  );
  // Refused at the deadline, not after all 20 attempts (a minute or more
  // of backoff): the layout's commit and a few of the ids' were tried.
  const attempts = 1000 - failures.count;
  assert.ok(attempts >= 1 && attempts < 20, `${attempts} attempts`);
  failures.count = 0;
  assert.equal(await store.countIds(MINUTE), 0);
  assert.equal(await store.recordId(MINUTE, "2"), true);
  assert.equal(await store.countIds(MINUTE), 1);
});

Deno.test("recordId() refuses an id asked for too late in its window's life, so no commit can miss an expired entry", async () => {
  const lifetime = idLifetime(60_000, 3_600_000);
  const clock = { now: MINUTE + 60_000 };
  await using store = await memoryStore({
    ...lifetime,
    clock: () => clock.now,
  });
  assert.equal(await store.recordId(MINUTE, "1"), true);
  // A request for the window that arrives (or reaches the store, after a
  // slow URL) once its first entries have less than the wait left to live.
  clock.now = MINUTE + lifetime.idRetentionMs - lifetime.maxCommitWaitMs + 1;
  await assert.rejects(
    store.recordId(MINUTE, "2"),
    StoreUnavailableError,
    "deadline",
  );
  assert.equal(await store.countIds(MINUTE), 1);
  // Ids already in the log are still answered; the next window is open.
  assert.equal(await store.recordId(MINUTE, "1"), false);
  assert.equal(await store.recordId(NEXT + 60_000, "2"), true);
});

Deno.test("close() waits for queued ids to commit", async () => {
  await using file = await tempKvPath();
  const store = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    maxInFlight: 1,
  });
  const pending = Array.from(
    { length: 300 },
    (_, i) => store.recordId(MINUTE, String(i)),
  );
  await store.close();
  assert.equal(count(await Promise.all(pending)), 300);
  await using reopened = createKvStore(await Deno.openKv(file.path), OPTIONS);
  assert.equal(await reopened.countIds(MINUTE), 300);
});

Deno.test("createKvStore() rejects impossible options", async () => {
  const kv = await Deno.openKv(":memory:");
  for (
    const bad of [
      { partitions: 0 },
      { partitions: 1.5 },
      { maxIdsPerWindow: 0 },
      { maxInFlight: 0 },
      { retentionMs: 0 },
    ]
  ) {
    const [[name, value]] = Object.entries(bad) as [[string, number]];
    assert.throws(() => createKvStore(kv, { ...OPTIONS, ...bad }), {
      name: "RangeError",
      message:
        `Cannot create KV store: ${name} must be a whole number of at least 1, got ${value}`,
    });
  }
  kv.close();
});

Deno.test("recordId() stays exact under duplicates, two stores, a window boundary and failing commits", async (t) => {
  await t.step("ids of both windows at once", () => exactUnderFaults(false));
  await t.step(
    "the next window opened ahead while its first ids arrive",
    () => exactUnderFaults(true),
  );
});

/**
 * Records random ids of two windows through two stores on one file whose
 * every third commit throws, and checks each stored id was answered new
 * exactly once. `ahead`: in the first window's last seconds, its ids first,
 * so the stores open the next window ahead as its ids arrive.
 */
async function exactUnderFaults(ahead: boolean): Promise<void> {
  await using file = await tempKvPath();
  // Every third commit of each store throws once and is not retried, so some
  // batches fail outright while others succeed around them.
  const stores = await Promise.all([0, 1].map(async () => {
    const flaky = everyNthCommitFails(await Deno.openKv(file.path), 3);
    return createKvStore(flaky, {
      ...OPTIONS,
      partitions: 3,
      commitAttempts: 1,
      ...(ahead ? { clock: () => NEXT - 2000 } : {}),
    });
  }));
  const calls: {
    minute: number;
    id: string;
    outcome: Promise<PromiseSettledResult<boolean>>;
  }[] = [];
  let seed = 7;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 300; i++) {
      const minute = random() < 0.5 || (ahead && round < 2) ? MINUTE : NEXT;
      const id = String(Math.floor(random() * 200));
      const store = stores[i % 2]!;
      const outcome = store.recordId(minute, id).then(
        (value) => ({ status: "fulfilled", value }) as const,
        (reason) => ({ status: "rejected", reason }) as const,
      );
      calls.push({ minute, id, outcome });
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  const settled = await Promise.all(calls.map((c) => c.outcome));

  const kv = await Deno.openKv(file.path);
  const failed = settled.filter((s) => s.status === "rejected");
  assert.ok(failed.length > 0, "no commit failed: the test proves nothing");
  for (const s of failed) {
    assert.ok(
      s.status === "rejected" && s.reason instanceof StoreUnavailableError,
    );
  }
  for (const minute of [MINUTE, NEXT]) {
    const log = (await readIdLog(kv, minute)).map(({ id }) => id);
    const stored = new Set(log);
    assert.equal(stored.size, log.length, "an id is in the log twice");
    const winners = new Set<string>();
    for (const [i, call] of calls.entries()) {
      const result = settled[i]!;
      if (call.minute !== minute || result.status !== "fulfilled") continue;
      // No ok without a committed record.
      assert.ok(stored.has(call.id), `id ${call.id} not stored`);
      if (result.value) {
        assert.ok(!winners.has(call.id), `id ${call.id} recorded twice`);
        winners.add(call.id);
      }
    }
    // Every stored id was recorded by exactly one call, and counted once.
    assert.deepEqual([...winners].sort(), [...stored].sort());
    assert.equal(await stores[0]!.countIds(minute), stored.size);
  }
  kv.close();
  for (const store of stores) await store.close();
}

Deno.test("the KV outbox keeps reports per sink until removed, one lease at a time", async () => {
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), OPTIONS);
  await using b = createKvStore(await Deno.openKv(file.path), OPTIONS);
  await checkOutboxContract(a, b);
  await a.close();
});

Deno.test("recordId() answers each id new exactly once across three instances on one KV file", async (t) => {
  for (const depth of [1, 4]) {
    await t.step(`with ${depth} commits in flight per partition`, async () => {
      await checkThreeInstances(depth);
    });
  }
});

async function checkThreeInstances(depth: number): Promise<void> {
  await using file = await tempKvPath();
  let conflicts = 0;
  const stores = await Promise.all(
    [0, 1, 2].map(async () =>
      createKvStore(await Deno.openKv(file.path), {
        ...OPTIONS,
        depth,
        commitSpacingMs: 0,
        onConflict: () => conflicts++,
      })
    ),
  );
  let seed = 99;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const pool = Array.from(
    { length: 5000 },
    () => String(Math.floor(random() * 2 ** 52) - 2 ** 51),
  );
  const calls: Promise<boolean>[] = [];
  const asked: string[] = [];
  for (let i = 0; i < 50_000; i++) {
    const id = pool[Math.floor(random() * pool.length)]!;
    asked.push(id);
    calls.push(stores[Math.floor(random() * 3)]!.recordId(MINUTE, id));
    // Let commits run between bursts, so later calls meet committed ids.
    if (i % 500 === 499) await new Promise((r) => setTimeout(r, 0));
  }
  const results = await Promise.all(calls); // none rejected
  assert.ok(conflicts > 0, "no commit met another's: the test proves nothing");
  const distinct = new Set(asked);
  const newOnce = new Map<string, number>();
  results.forEach((isNew, i) => {
    if (isNew) newOnce.set(asked[i]!, (newOnce.get(asked[i]!) ?? 0) + 1);
  });
  assert.equal(count(results), distinct.size);
  assert.equal(newOnce.size, distinct.size);
  assert.ok([...newOnce.values()].every((n) => n === 1));
  for (const store of stores) {
    assert.equal(await store.countIds(MINUTE), distinct.size);
  }
  const kv = await Deno.openKv(file.path);
  assert.deepEqual(
    (await readIdLog(kv, MINUTE)).map(({ id }) => id).sort(),
    [...distinct].sort(),
  );
  kv.close();
  for (const store of stores) await store.close();
}

Deno.test("recordId() after a restart mid-window answers earlier ids as repeats and counts them once", async () => {
  await using file = await tempKvPath();
  const first = createKvStore(await Deno.openKv(file.path), OPTIONS);
  const before = Array.from({ length: 2000 }, (_, i) => String(i));
  assert.equal(
    count(await Promise.all(before.map((id) => first.recordId(MINUTE, id)))),
    2000,
  );
  await first.close();
  // A new process, with another partition setting: the window keeps its own.
  await using restarted = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    partitions: 9,
  });
  const after = Array.from({ length: 3000 }, (_, i) => String(i + 1000));
  const results = await Promise.all(
    after.map((id) => restarted.recordId(MINUTE, id)),
  );
  assert.equal(results.filter((isNew) => !isNew).length, 1000);
  assert.ok(results.slice(0, 1000).every((isNew) => !isNew));
  assert.ok(results.slice(1000).every((isNew) => isNew));
  assert.equal(await restarted.countIds(MINUTE), 4000);
  assert.equal(restarted.knows(MINUTE, "0"), true);
});

Deno.test("recordId() keeps the partitions of the instance that opened the window", async () => {
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    partitions: 3,
  });
  await using b = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    partitions: 5,
  });
  assert.equal(await a.recordId(MINUTE, "1"), true);
  const ids = Array.from({ length: 3000 }, (_, i) => String(i % 1000));
  const results = await Promise.all(
    ids.map((id, i) => (i % 2 ? a : b).recordId(MINUTE, id)),
  );
  assert.equal(count(results), 999);
  assert.equal(await b.countIds(MINUTE), 1000);
  const kv = await Deno.openKv(file.path);
  assert.deepEqual((await kv.get(windowKey(MINUTE))).value, { partitions: 3 });
  assert.equal(
    new Set((await readIdLog(kv, MINUTE)).map(({ id }) => id)).size,
    1000,
  );
  kv.close();
  await a.close();
});

Deno.test("recordId() in a window's last seconds opens the next window ahead, claimed, and another instance still commits there", async () => {
  await using file = await tempKvPath();
  const now = NEXT - 4000;
  const a = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    partitions: 2,
    clock: () => now,
  });
  assert.equal(await a.recordId(MINUTE, "1"), true);
  await a.close();
  const kv = await Deno.openKv(file.path);
  assert.deepEqual((await kv.get(windowKey(NEXT))).value, { partitions: 2 });
  for (const partition of [0, 1]) {
    const head = await kv.get<Deno.KvU64>(logHeadKey(NEXT, partition));
    assert.equal(head.value?.value, 0n);
    assert.equal(
      typeof (await kv.get(logOwnerKey(NEXT, partition))).value,
      "string",
    );
  }
  // The claims' owner is gone: another instance takes its partitions over.
  // Earlier in the window, it opens nothing ahead.
  const b = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    clock: () => NEXT + 30_000,
  });
  const ids = Array.from({ length: 500 }, (_, i) => String(i % 250));
  const results = await Promise.all(ids.map((id) => b.recordId(NEXT, id)));
  assert.equal(count(results), 250);
  assert.equal(await b.countIds(NEXT), 250);
  await b.close();
  assert.equal((await kv.get(windowKey(NEXT + 60_000))).versionstamp, null);
  kv.close();
});

Deno.test("recordId() goes on in a window whose claim was written but answered with an error", async () => {
  // The second window's layout is the 2nd commit (the ahead opening starts
  // before the first window's first commit), its claim the 4th.
  const lossy = everyNthCommitLost(await Deno.openKv(":memory:"), 4);
  await using store = createKvStore(lossy.kv, {
    ...OPTIONS,
    partitions: 1,
    commitAttempts: 1,
    clock: () => NEXT - 1000,
  });
  assert.equal(await store.recordId(MINUTE, "1"), true);
  await waitFor(() => lossy.lost > 0);
  assert.equal(lossy.lost, 1);
  const ids = Array.from({ length: 300 }, (_, i) => String(i % 100));
  const results = await Promise.all(ids.map((id) => store.recordId(NEXT, id)));
  assert.equal(count(results), 100);
  assert.equal(await store.countIds(NEXT), 100);
});

Deno.test("recordId() opens the next window ahead in the last tenth of a short window", async () => {
  const windowMs = 1000;
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    windowMs,
    clock: () => MINUTE + 950,
  });
  assert.equal(await a.recordId(MINUTE, "1"), true);
  await a.close();
  const kv = await Deno.openKv(file.path);
  assert.notEqual((await kv.get(windowKey(MINUTE + windowMs))).value, null);
  assert.equal((await kv.get(windowKey(NEXT))).value, null);
  // 200 ms before the end: not yet.
  const later = MINUTE + 5 * windowMs;
  const b = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    windowMs,
    clock: () => later + 800,
  });
  assert.equal(await b.recordId(later, "1"), true);
  await b.close();
  assert.equal((await kv.get(windowKey(later + windowMs))).value, null);
  kv.close();
});

Deno.test("recordId() stays exact when two stores open the next window ahead at once, and one's claims lose", async () => {
  await using file = await tempKvPath();
  let conflicts = 0;
  const stores = await Promise.all(
    [0, 1].map(async () =>
      createKvStore(await Deno.openKv(file.path), {
        ...OPTIONS,
        partitions: 2,
        clock: () => NEXT - 1000,
        onConflict: () => conflicts++,
      })
    ),
  );
  await Promise.all(stores.map((store, i) => store.recordId(MINUTE, `${i}`)));
  await waitFor(() => conflicts >= 2);
  assert.equal(conflicts, 2);
  const ids = Array.from({ length: 900 }, (_, i) => String(i % 300));
  const results = await Promise.all(
    ids.map((id, i) => stores[i % 2]!.recordId(NEXT, id)),
  );
  assert.equal(count(results), 300);
  for (const store of stores) assert.equal(await store.countIds(NEXT), 300);
  for (const store of stores) await store.close();
});

Deno.test("recordId() commits thousands of ids at once, up to a full log entry", async () => {
  const sizes: number[] = [];
  await using store = await memoryStore({
    partitions: 1,
    onCommit: (ids) => sizes.push(ids),
  });
  const ids = Array.from({ length: 20_000 }, (_, i) => String(i * 104729));
  assert.equal(
    count(await Promise.all(ids.map((id) => store.recordId(MINUTE, id)))),
    20_000,
  );
  assert.equal(await store.countIds(MINUTE), 20_000);
  assert.equal(Math.max(...sizes), MAX_IDS_PER_ENTRY);
  assert.ok(sizes.length <= 4, `${sizes.length} commits`);
});

Deno.test("recordId() with gather commits a busy spell's ids together, and at once when enough wait", async (t) => {
  /** A store on a file whose first commit ran, and the commits' sizes. */
  async function gathering(gather: { ms: number; ids: number }) {
    const file = await tempKvPath();
    const sizes: number[] = [];
    const store = createKvStore(await Deno.openKv(file.path), {
      ...OPTIONS,
      gather,
      onCommit: (ids) => sizes.push(ids),
    });
    assert.equal(await store.recordId(MINUTE, "1"), true);
    return {
      store,
      sizes,
      async [Symbol.asyncDispose]() {
        await store.close();
        await file[Symbol.asyncDispose]();
      },
    };
  }
  const ids = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => String(from + i));

  await t.step(
    "ids arriving within gather.ms of the last commit wait for one",
    async () => {
      await using g = await gathering({ ms: 1000, ids: 1000 });
      const results: Promise<boolean>[] = [];
      for (let burst = 0; burst < 4; burst++) {
        for (const id of ids(1000 * (burst + 1), 25)) {
          results.push(g.store.recordId(MINUTE, id));
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(count(await Promise.all(results)), 100);
      assert.deepEqual(g.sizes, [1, 100]);
      assert.equal(await g.store.countIds(MINUTE), 101);
    },
  );

  await t.step("gather.ids waiting start the commit at once", async () => {
    await using g = await gathering({ ms: 60_000, ids: 50 });
    const held = ids(1000, 49).map((id) => g.store.recordId(MINUTE, id));
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.deepEqual(g.sizes, [1]);
    const last = g.store.recordId(MINUTE, "2000");
    // Well before the minute: the 50th id let the commit go.
    const results = await withinTime(
      Promise.all([...held, last]),
      5000,
      () => new Error("the commit waited for gather.ms"),
    );
    assert.equal(count(results), 50);
    assert.deepEqual(g.sizes, [1, 50]);
  });

  await t.step("close() commits held ids at once", async () => {
    await using file = await tempKvPath();
    let committed = 0;
    const store = createKvStore(await Deno.openKv(file.path), {
      ...OPTIONS,
      partitions: 4,
      gather: { ms: 60_000, ids: 1000 },
      onCommit: (ids) => committed += ids,
    });
    // Each partition's first commit goes at once, the rest are held.
    const held = ids(1000, 40).map((id) => store.recordId(MINUTE, id));
    await waitFor(() => committed > 0);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(committed < 40, `${committed} committed`);
    await withinTime(
      store.close(),
      5000,
      () => new Error("close() waited for gather.ms"),
    );
    assert.equal(count(await Promise.all(held)), 40);
    await using reopened = createKvStore(await Deno.openKv(file.path), OPTIONS);
    assert.equal(await reopened.countIds(MINUTE), 40);
  });
});

Deno.test("recordId() refuses new ids past maxIdsPerWindow, and still answers known ones", async () => {
  const full: number[] = [];
  await using store = await memoryStore({
    maxIdsPerWindow: 1000,
    onFull: (minute) => full.push(minute),
  });
  const ids = Array.from({ length: 1000 }, (_, i) => String(i));
  assert.equal(
    count(await Promise.all(ids.map((id) => store.recordId(MINUTE, id)))),
    1000,
  );
  await assert.rejects(
    store.recordId(MINUTE, "5000"),
    StoreUnavailableError,
    "KV_MAX_WINDOW_IDS",
  );
  assert.deepEqual(full, [MINUTE]);
  assert.equal(await store.recordId(MINUTE, "7"), false);
  assert.equal(await store.countIds(MINUTE), 1000);
  assert.equal(await store.recordId(NEXT, "5000"), true);
});

Deno.test("a KV file in the per-id layout of earlier versions is read, not miscounted", async () => {
  await using file = await tempKvPath();
  const kv = await Deno.openKv(file.path);
  // What an earlier version left: an open window with ids 1-3 counted in
  // two shards, and an older window never reported.
  const older = MINUTE - 60_000;
  const op = kv.atomic();
  for (const id of ["1", "2", "3"]) {
    op.set(legacyIdKey(MINUTE, id), new Uint8Array());
  }
  op.set(legacyCounterKey(MINUTE, 0), new Deno.KvU64(2n));
  op.set(legacyCounterKey(MINUTE, 5), new Deno.KvU64(1n));
  op.set(legacyIdKey(older, "9"), new Uint8Array());
  op.set(legacyCounterKey(older, 1), new Deno.KvU64(1n));
  assert.ok((await op.commit()).ok);
  kv.close();

  await using store = createKvStore(await Deno.openKv(file.path), OPTIONS);
  assert.deepEqual(await store.unreportedWindows(), [older, MINUTE]);
  assert.equal(await store.countIds(older), 1);
  const results = await Promise.all(
    ["1", "2", "3", "4", "4"].map((id) => store.recordId(MINUTE, id)),
  );
  assert.deepEqual(results, [false, false, false, true, false]);
  assert.equal(await store.countIds(MINUTE), 4);
  for (const minute of [older, MINUTE]) {
    assert.deepEqual(await store.claimReport(minute, "me", NEXT, 60_000), {
      claimed: true,
    });
    await store.completeReport(minute, "me", 0);
    assert.equal(await store.countIds(minute), 0);
  }
  assert.deepEqual(await store.unreportedWindows(), []);
});

Deno.test("the KV store keeps which webhook URLs a report is done with, across instances", async () => {
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), OPTIONS);
  await using b = createKvStore(await Deno.openKv(file.path), OPTIONS);
  await checkOwedUrls(a, b);
  await a.close();
});

Deno.test("recordId() commits every partition at once: as many commits run together as there are partitions", async () => {
  for (const partitions of [1, 8]) {
    const gated = gatedCommits(await Deno.openKv(":memory:"));
    await using store = createKvStore(gated.kv, { ...OPTIONS, partitions });
    // The window's layout is written first; then the ids' commits.
    await store.recordId(MINUTE, "0");
    const before = gated.commits;
    const release = gated.hold();
    const ids = Array.from({ length: 400 }, (_, i) => String(i * 7919 + 1));
    const recorded = Promise.all(ids.map((id) => store.recordId(MINUTE, id)));
    // Give every partition's commit the chance to start.
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(gated.commits - before, Math.max(1, partitions));
    release();
    assert.equal(count(await recorded), ids.length);
  }
});

Deno.test("recordId() runs up to depth commits at once in a partition it owns, and one at a time until it owns it", async () => {
  await using file = await tempKvPath();
  const owner = gatedCommits(await Deno.openKv(file.path));
  // Held commits: the depth whatever the commits' time.
  const depth = { depth: 3, commitSpacingMs: 0 };
  await using a = createKvStore(owner.kv, { ...OPTIONS, ...depth });
  // The layout, then the commit that takes the partition.
  await a.recordId(MINUTE, "0");
  let release = owner.hold();
  let before = owner.commits;
  const ids = Array.from({ length: 400 }, (_, i) => String(i * 7919 + 1));
  let recorded = Promise.all(ids.map((id) => a.recordId(MINUTE, id)));
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(owner.commits - before, 3);
  release();
  assert.equal(count(await recorded), ids.length);

  // Another instance must read what the owner wrote before its first
  // commit there counts: one commit at a time, whatever its depth.
  const other = gatedCommits(await Deno.openKv(file.path));
  await using b = createKvStore(other.kv, { ...OPTIONS, ...depth });
  release = other.hold();
  before = other.commits;
  const more = Array.from({ length: 400 }, (_, i) => String(-i - 1));
  recorded = Promise.all(more.map((id) => b.recordId(MINUTE, id)));
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(other.commits - before, 1);
  release();
  assert.equal(count(await recorded), more.length);
  // b took the partition: a's next commit fails its check, a reads b's
  // entries, and b's ids are repeats there.
  assert.equal(
    count(await Promise.all(more.map((id) => a.recordId(MINUTE, id)))),
    0,
  );
  assert.equal(await a.countIds(MINUTE), 801);
});

Deno.test("recordId() counts once an owner's commits that were written but answered with an error", async () => {
  await using file = await tempKvPath();
  const lossy = everyNthCommitLost(await Deno.openKv(file.path), 7);
  await using store = createKvStore(lossy.kv, {
    ...OPTIONS,
    depth: 4,
    commitSpacingMs: 0,
  });
  const ids = Array.from({ length: 20_000 }, (_, i) => String(i % 5000));
  const answers: Promise<boolean>[] = [];
  for (let i = 0; i < ids.length; i++) {
    answers.push(store.recordId(MINUTE, ids[i]!));
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 0));
  }
  // A retry finds its own entry written: a repeat, not a second sum.
  await Promise.all(answers);
  assert.ok(lossy.lost > 10, `only ${lossy.lost} commits lost their answer`);
  assert.equal(await store.countIds(MINUTE), 5000);
  const kv = await Deno.openKv(file.path);
  const logged = (await readIdLog(kv, MINUTE)).map(({ id }) => id);
  kv.close();
  assert.equal(logged.length, 5000);
  assert.equal(new Set(logged).size, 5000);
});

Deno.test("recordId() goes on with a window whose heads an earlier version wrote as { seq, count }", async () => {
  const kv = await Deno.openKv(":memory:");
  const earlier = Array.from({ length: 300 }, (_, i) => ({ lo: i, hi: 0 }));
  await kv.atomic()
    .set(windowKey(MINUTE), { partitions: 1 })
    .set(logEntryKey(MINUTE, 0, 1), packIds(earlier.slice(0, 100)))
    .set(logEntryKey(MINUTE, 0, 2), packIds(earlier.slice(100)))
    .set(logHeadKey(MINUTE, 0), { seq: 2, count: 300 })
    .commit();
  await using store = createKvStore(kv, { ...OPTIONS, depth: 2 });
  assert.equal(await store.countIds(MINUTE), 300);
  const ids = Array.from({ length: 500 }, (_, i) => String(i));
  const results = await Promise.all(
    ids.map((id) => store.recordId(MINUTE, id)),
  );
  assert.equal(count(results), 200);
  assert.equal(await store.countIds(MINUTE), 500);
  const head = await kv.get(logHeadKey(MINUTE, 0));
  assert.ok(head.value instanceof Deno.KvU64);
});

Deno.test("the KV store keys a URL by the SHA-256 of its text, so keys written by earlier versions still match", async () => {
  const kv = await Deno.openKv(":memory:");
  await using store = createKvStore(kv, OPTIONS);
  const url = "https://example.com/hook";
  assert.equal(await store.recordUrl(MINUTE, url), "recorded");
  await store.markUrlDone(MINUTE, url);
  // sha256("https://example.com/hook"), computed with sha256sum.
  const hash =
    "19f1352238b915338c91b6a9fdd2dd4be99a13c18e95bbfbf1443ee01fb616b6";
  const keys = [];
  for await (const entry of kv.list({ prefix: ["verve"] })) {
    if (entry.key[1] === "url" || entry.key[1] === "url-done") {
      keys.push(entry.key);
    }
  }
  assert.deepEqual(keys, [
    ["verve", "url", MINUTE, hash],
    ["verve", "url-done", MINUTE, hash],
  ]);
});
