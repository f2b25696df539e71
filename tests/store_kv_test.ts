import assert from "node:assert/strict";
import {
  checkOutboxContract,
  checkReportClaim,
  checkStaleClaimTakeover,
  checkUrlCap,
  checkWindowStats,
} from "./helpers/store_contract.ts";
import { DatabaseSync } from "node:sqlite";
import {
  batchSizeFor,
  createKvStore,
  idLifetime,
  type KvStoreOptions,
} from "../lib/store_kv.ts";
import { StoreUnavailableError } from "../lib/store.ts";
import {
  everyNthCommitFails,
  failingCommits,
  tempKvPath,
} from "./helpers/kv.ts";

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
  const store = await memoryStore();
  const results = await Promise.all(
    Array.from({ length: 500 }, () => store.recordId(MINUTE, "42")),
  );
  assert.equal(count(results), 1);
  assert.equal(await store.countIds(MINUTE), 1);
  assert.equal(await store.recordId(MINUTE, "42"), false);
  await store.close();
});

Deno.test("recordId() counts many distinct ids exactly", async (t) => {
  for (const batchSize of [1, 9, 99]) {
    await t.step(`with batches of ${batchSize}`, async () => {
      const store = await memoryStore({ batchSize, counterShards: 7 });
      const ids = Array.from({ length: 3000 }, (_, i) => String(i * 7919));
      const results = await Promise.all(
        ids.map((id) => store.recordId(MINUTE, id)),
      );
      assert.equal(count(results), 3000);
      assert.equal(await store.countIds(MINUTE), 3000);
      await store.close();
    });
  }
});

Deno.test("recordId() counts duplicates spread over batches once", async () => {
  const store = await memoryStore({ batchSize: 10, seenIdsLimit: 0 });
  const ids = Array.from({ length: 2000 }, (_, i) => String((i * 37) % 300));
  const first = await Promise.all(ids.map((id) => store.recordId(MINUTE, id)));
  assert.equal(count(first), 300);
  const again = await Promise.all(ids.map((id) => store.recordId(MINUTE, id)));
  assert.equal(count(again), 0);
  assert.equal(await store.countIds(MINUTE), 300);
  await store.close();
});

Deno.test("recordId() keeps windows apart across a boundary", async () => {
  const store = await memoryStore();
  const results = await Promise.all([
    ...["1", "2", "3", "1"].map((id) => store.recordId(MINUTE, id)),
    ...["1", "4", "4"].map((id) => store.recordId(NEXT, id)),
  ]);
  assert.deepEqual(results, [true, true, true, false, true, true, false]);
  assert.equal(await store.countIds(MINUTE), 3);
  assert.equal(await store.countIds(NEXT), 2);
  assert.deepEqual(await store.unreportedWindows(), [MINUTE, NEXT]);
  await store.close();
});

Deno.test("two stores sharing one KV file count every id exactly once", async () => {
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    batchSize: 20,
  });
  const b = createKvStore(await Deno.openKv(file.path), {
    ...OPTIONS,
    batchSize: 20,
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
  await b.close();
});

Deno.test("recordId() retries a commit that throws", async () => {
  const kv = await Deno.openKv(":memory:");
  const failures = { count: 2 };
  const store = createKvStore(failingCommits(kv, failures), OPTIONS);
  assert.equal(await store.recordId(MINUTE, "5"), true);
  assert.equal(failures.count, 0);
  assert.equal(await store.countIds(MINUTE), 1);
  await store.close();
});

Deno.test("recordId() fails, and counts nothing, when commits keep throwing", async () => {
  await using file = await tempKvPath();
  const failures = { count: Infinity };
  const store = createKvStore(
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
  await store.close();
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
  const store = await memoryStore();
  await checkStaleClaimTakeover(store);
  await store.close();
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
  const store = await memoryStore();
  await checkWindowStats(store);
  await store.close();
});

Deno.test("id keys expire after idRetentionMs, the window's other keys after retentionMs", async () => {
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
  // tuples, so an id key starts with the bytes of ("verve", "id").
  const db = new DatabaseSync(file.path, { readOnly: true });
  const rows = db.prepare(
    "SELECT hex(k) AS key, expiration_ms AS expires FROM kv",
  ).all() as { key: string; expires: number }[];
  db.close();
  const idPrefix = "0276657276650002696400";
  const ids = rows.filter((row) => row.key.startsWith(idPrefix));
  const others = rows.filter((row) =>
    !row.key.startsWith(idPrefix) && row.expires >= 0
  );
  assert.equal(ids.length, 1);
  assert.ok(others.length >= 2); // the URL and the URL count
  for (const { expires } of ids) {
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
  const failures = { count: Infinity };
  const store = createKvStore(failingCommits(kv, failures), {
    ...OPTIONS,
    retryBaseMs: 20,
    commitAttempts: 20,
    maxCommitWaitMs: 50,
  });
  const started = performance.now();
  await assert.rejects(
    store.recordId(MINUTE, "1"),
    StoreUnavailableError,
    "deadline",
  );
  // Refused at the deadline, not after all 20 attempts (a minute or more).
  assert.ok(performance.now() - started < 10_000);
  failures.count = 0;
  assert.equal(await store.countIds(MINUTE), 0);
  assert.equal(await store.recordId(MINUTE, "2"), true);
  assert.equal(await store.countIds(MINUTE), 1);
  await store.close();
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
  const reopened = createKvStore(await Deno.openKv(file.path), OPTIONS);
  assert.equal(await reopened.countIds(MINUTE), 300);
  await reopened.close();
});

Deno.test("createKvStore() rejects impossible options", async () => {
  const kv = await Deno.openKv(":memory:");
  assert.throws(
    () => createKvStore(kv, { ...OPTIONS, batchSize: 100 }),
    RangeError,
  );
  assert.throws(
    () => createKvStore(kv, { ...OPTIONS, counterShards: 0 }),
    RangeError,
  );
  assert.throws(() => createKvStore(kv, { retentionMs: 0 }), RangeError);
  kv.close();
});

Deno.test("batchSizeFor() fits a batch and the report check into the backend's limit", () => {
  assert.equal(batchSizeFor("./data/verve.kv"), 99);
  assert.equal(batchSizeFor(":memory:"), 99);
  assert.equal(batchSizeFor("https://kv.example.com/connect"), 9);
  assert.equal(batchSizeFor("HTTP://localhost:4512"), 9);
  assert.equal(batchSizeFor(undefined), 9);
});

Deno.test("recordId() stays exact under duplicates, two stores, a window boundary and failing commits", async () => {
  await using file = await tempKvPath();
  // Every third commit of each store throws once and is not retried, so some
  // batches fail outright while others succeed around them.
  const stores = await Promise.all([0, 1].map(async () => {
    const flaky = everyNthCommitFails(await Deno.openKv(file.path), 3);
    return createKvStore(flaky, {
      ...OPTIONS,
      batchSize: 7,
      commitAttempts: 1,
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
      const minute = random() < 0.5 ? MINUTE : NEXT;
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
    const winners = new Set<string>();
    for (const [i, call] of calls.entries()) {
      const result = settled[i]!;
      if (call.minute !== minute || result.status !== "fulfilled") continue;
      // No ok without a committed record.
      const entry = await kv.get(["verve", "id", minute, call.id]);
      assert.notEqual(entry.versionstamp, null, `id ${call.id} not stored`);
      if (result.value) {
        assert.ok(!winners.has(call.id), `id ${call.id} recorded twice`);
        winners.add(call.id);
      }
    }
    const stored = new Set<string>();
    for await (const entry of kv.list({ prefix: ["verve", "id", minute] })) {
      stored.add(String(entry.key[3]));
    }
    // Every stored id was recorded by exactly one call, and counted once.
    assert.deepEqual([...winners].sort(), [...stored].sort());
    assert.equal(await stores[0]!.countIds(minute), stored.size);
  }
  kv.close();
  for (const store of stores) await store.close();
});

Deno.test("the KV outbox keeps reports per sink until removed, one lease at a time", async () => {
  await using file = await tempKvPath();
  const a = createKvStore(await Deno.openKv(file.path), OPTIONS);
  const b = createKvStore(await Deno.openKv(file.path), OPTIONS);
  await checkOutboxContract(a, b);
  await a.close();
  await b.close();
});
