/**
 * The KV store on a remote Deno KV: Deno's own client speaking KV Connect to
 * a real endpoint on loopback (`tests/helpers/kv_connect.ts`), with the time
 * limit the service puts on remote calls. The store contract, exact counts
 * across instances, the server limits, and the three ways a remote database
 * fails: answering `5xx`, never answering, and going away.
 */
import assert from "node:assert/strict";
import { withTimeLimit } from "../../../lib/store/kv/kv_time_limit.ts";
import type { MinuteReport } from "../../../lib/report/sink.ts";
import { type Store, StoreUnavailableError } from "../../../lib/store/store.ts";
import {
  createKvStore,
  type KvStoreOptions,
} from "../../../lib/store/kv/store_kv.ts";
import { MAX_IDS_PER_ENTRY } from "../../../lib/store/kv/kv_id_log.ts";
import {
  KV_CONNECT_LIMITS,
  type KvConnectServer,
  remoteFaults,
  startKvConnect,
} from "../../helpers/kv_connect.ts";
import { waitFor } from "../../helpers/kv.ts";
import {
  checkOutboxContract,
  checkOwedUrls,
  checkQueueId,
  checkReportClaim,
  checkStaleClaimTakeover,
  checkUrlCap,
  checkWindowStats,
} from "../../helpers/store_contract.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12, 0);
const NEXT = MINUTE + 60_000;
const OPTIONS: KvStoreOptions = { retentionMs: 3_600_000, retryBaseMs: 1 };
/** URLs the limits test records: more than a page of a listing. */
const URLS = 150;
/** The time limit of the fault test's calls. */
const TIME_LIMIT_MS = 500;

/**
 * Opens `count` clients of `server`, each with a time limit on its calls as
 * the service sets (the service's default unless given).
 */
async function remoteKvs(
  server: KvConnectServer,
  count: number,
  timeLimitMs = 2000,
): Promise<Deno.Kv[]> {
  Deno.env.set("DENO_KV_ACCESS_TOKEN", server.token);
  return await Promise.all(
    Array.from(
      { length: count },
      async () => withTimeLimit(await Deno.openKv(server.url), timeLimitMs),
    ),
  );
}

async function remoteStores(
  server: KvConnectServer,
  count: number,
  options: Partial<KvStoreOptions> = {},
  timeLimitMs?: number,
) {
  return (await remoteKvs(server, count, timeLimitMs)).map((kv) =>
    createKvStore(kv, { ...OPTIONS, ...options })
  );
}

Deno.test("over KV Connect the KV store keeps the store contract", async (t) => {
  /** Runs `check` on `count` stores of a fresh endpoint. */
  const step = (
    name: string,
    count: number,
    check: (stores: Store[]) => Promise<void>,
    options: Partial<KvStoreOptions> = {},
  ) =>
    t.step(name, async () => {
      await using server = await startKvConnect();
      const stores = await remoteStores(server, count, options);
      await check(stores);
      for (const store of stores) await store.close();
      assert.deepEqual(server.stats.refused, []);
    });
  await step("report claim", 3, (stores) => checkReportClaim(stores));
  await step("stale claim takeover", 1, ([a]) => checkStaleClaimTakeover(a!));
  await step("URL cap", 2, ([a, b]) => checkUrlCap(a!, b!, 5), {
    maxUrlsPerWindow: 5,
  });
  await step("window stats", 1, ([a]) => checkWindowStats(a!));
  await step("outbox", 2, ([a, b]) => checkOutboxContract(a!, b!));
  await step("owed webhook URLs", 2, ([a, b]) => checkOwedUrls(a!, b!));
  await step("queued ids", 1, ([a]) => checkQueueId(a!));
});

Deno.test("over KV Connect three instances count every id exactly once, with 20 ms to the database", async (t) => {
  for (const depth of [1, 2]) {
    await t.step(`with ${depth} commits in flight per partition`, async () => {
      await using server = await startKvConnect();
      server.faults.latencyMs = 20;
      const stores = await remoteStores(server, 3, {
        depth,
        commitSpacingMs: 0,
        partitions: 4,
      });
      const ids = Array.from(
        { length: 6000 },
        (_, i) => String((i % 2000) * 7919),
      );
      const results = await Promise.all(
        ids.map((id, i) => stores[i % 3]!.recordId(MINUTE, id)),
      );
      assert.equal(results.filter(Boolean).length, 2000);
      for (const store of stores) {
        assert.equal(await store.countIds(MINUTE), 2000);
      }
      for (const store of stores) await store.close();
    });
  }
});

Deno.test("over KV Connect a window's first id commits two round trips after it arrives, a later one in one", async () => {
  await using server = await startKvConnect();
  const [store] = await remoteStores(server, 1);
  // Long enough that requests sent together are served together.
  server.faults.latencyMs = 20;
  // The layout and the ids of the earlier per-id layout at once, then the
  // commit.
  let before = server.stats.rounds;
  assert.equal(await store!.recordId(MINUTE, "1"), true);
  assert.equal(server.stats.rounds - before, 2);
  before = server.stats.rounds;
  assert.equal(await store!.recordId(MINUTE, "2"), true);
  assert.equal(server.stats.rounds - before, 1);
  await store!.close();
});

Deno.test("over KV Connect a window opened ahead in the last seconds of the one before commits its first id in one round trip", async (t) => {
  for (const [openAheadMs, rounds] of [[5000, 1], [0, 2]] as const) {
    await t.step(`${openAheadMs} ms ahead: ${rounds}`, async () => {
      await using server = await startKvConnect();
      let now = NEXT - 3000;
      const [store] = await remoteStores(server, 1, {
        openAheadMs,
        clock: () => now,
      });
      server.faults.latencyMs = 20;
      assert.equal(await store!.recordId(MINUTE, "1"), true);
      // The layout and the commit, then, ahead, the next window's layout
      // and the claim of its partition.
      const writes = openAheadMs > 0 ? 4 : 2;
      await waitFor(() =>
        server.stats.atomicWrites >= writes && server.stats.serving === 0
      );
      assert.equal(server.stats.atomicWrites, writes);
      now = NEXT + 1000;
      const before = server.stats.rounds;
      assert.equal(await store!.recordId(NEXT, "2"), true);
      assert.equal(server.stats.rounds - before, rounds);
      assert.equal(await store!.countIds(NEXT), 1);
      await store!.close();
    });
  }
});

Deno.test("over KV Connect the id log's commits run one to a connection while one is idle, and all on one without more", async (t) => {
  /** Records 3000 ids, 500 at a time, through a store given `connections`. */
  async function load(connections: number) {
    await using server = await startKvConnect();
    server.faults.latencyMs = 20;
    const [kv, ...more] = await remoteKvs(server, connections);
    const store = createKvStore(kv!, {
      ...OPTIONS,
      partitions: 4,
      depth: 2,
      ...(connections > 1 ? { connections: [kv!, ...more] } : {}),
    });
    const ids = Array.from({ length: 3000 }, (_, i) => String(i * 104729));
    for (let i = 0; i < ids.length; i += 500) {
      const wave = ids.slice(i, i + 500);
      const results = await Promise.all(
        wave.map((id) => store.recordId(MINUTE, id)),
      );
      assert.ok(results.every(Boolean));
    }
    const seen = structuredClone(server.stats.perConnection);
    assert.equal(await store.countIds(MINUTE), ids.length);
    await store.close();
    return seen;
  }
  await t.step("eight connections for eight commits in flight", async () => {
    const seen = await load(8);
    assert.equal(seen.most, 1);
    assert.ok(seen.connections.size > 4, `${seen.connections.size} used`);
  });
  await t.step("one connection", async () => {
    const seen = await load(1);
    assert.ok(seen.most > 1, `${seen.most} at once`);
    assert.equal(seen.connections.size, 1);
  });
});

Deno.test("over KV Connect an owner keeps more commits in flight the longer they take, up to its depth", async () => {
  await using server = await startKvConnect();
  const [kv, ...more] = await remoteKvs(server, 4);
  const store = createKvStore(kv!, {
    ...OPTIONS,
    partitions: 1,
    depth: 4,
    connections: [kv!, ...more],
  });
  let next = 0;
  const recorded: Promise<boolean>[] = [];
  /** Records an id every 2 ms for `ms`. */
  async function feed(ms: number): Promise<void> {
    for (const end = performance.now() + ms; performance.now() < end;) {
      recorded.push(store.recordId(MINUTE, String(++next)));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }
  /**
   * Feeds ids for `ms` to let the average settle, then for `ms` more: the
   * most commits at once in the second part.
   */
  async function stream(ms: number): Promise<number> {
    await feed(ms);
    server.stats.mostAtOnce = 0;
    await feed(ms);
    assert.ok((await Promise.all(recorded.splice(0))).every(Boolean));
    return server.stats.mostAtOnce;
  }
  // Commits of 5 ms: one at a time starts one every 5 ms.
  server.faults.latencyMs = 5;
  assert.equal(await stream(300), 1);
  // Commits of 70 ms: one starts every 20 ms at most, so four in flight.
  server.faults.latencyMs = 70;
  assert.equal(await stream(1500), 4);
  // Near again: back to one once the average has come down.
  server.faults.latencyMs = 5;
  assert.equal(await stream(300), 1);
  assert.equal(await store.countIds(MINUTE), next);
  await store.close();
});

Deno.test("every write the KV store makes stays within the KV Connect limits, at the largest settings", async () => {
  await using server = await startKvConnect();
  const [store, other] = await remoteStores(server, 2, {
    partitions: 1,
    maxUrlsPerWindow: URLS,
  });
  // Ids: full log entries, several per window.
  const ids = Array.from({ length: 20_000 }, (_, i) => String(i * 104729));
  const results = await Promise.all(
    ids.map((id) => store!.recordId(MINUTE, id)),
  );
  assert.equal(results.filter(Boolean).length, ids.length);
  // The most partitions: their heads are read in chunks.
  const [partitioned] = await remoteStores(server, 1, { partitions: 256 });
  await Promise.all(ids.map((id) => partitioned!.recordId(NEXT, id)));
  assert.equal(await partitioned!.countIds(NEXT), ids.length);
  await partitioned!.close();
  // URLs: past a page of a listing, from two instances, each near the
  // longest allowed (the cap itself bounds no single write).
  for (let i = 0; i < URLS; i++) {
    await (i % 2 ? store : other)!.recordUrl(
      MINUTE,
      `https://hooks.example.com/${"x".repeat(1900)}/${i}`,
    );
  }
  // The report, with an outbox entry for every sink there is.
  const claim = await store!.claimReport(MINUTE, "a", Date.now(), 60_000);
  assert.ok(claim.claimed);
  const count = await other!.countIds(MINUTE);
  assert.equal(count, ids.length);
  const report: MinuteReport = {
    minute: new Date(MINUTE).toISOString(),
    unique_ids: count,
    window_ms: 60_000,
    reported_at: new Date().toISOString(),
  };
  await store!.completeReport(MINUTE, "a", count, {
    report,
    sinks: ["log", "webhook", "kafka-rest", "kafka"],
    now: Date.now(),
  });
  assert.equal((await store!.listOwedUrls(MINUTE)).length, URLS);
  assert.equal((await other!.listOutbox()).length, 4);
  await store!.close();
  await other!.close();

  const { largest, largestRead, refused } = server.stats;
  assert.deepEqual(refused, []);
  assert.ok(largest.checks <= KV_CONNECT_LIMITS.checks, `${largest.checks}`);
  assert.ok(largest.mutations <= KV_CONNECT_LIMITS.mutations);
  assert.ok(largest.mutationBytes <= KV_CONNECT_LIMITS.mutationBytes);
  assert.ok(largestRead.ranges <= KV_CONNECT_LIMITS.readRanges);
  assert.ok(largestRead.limit <= KV_CONNECT_LIMITS.readEntries);
  // A full log entry went over the wire: the limits were really tried.
  assert.ok(
    largest.mutationBytes >= MAX_IDS_PER_ENTRY * 8,
    `${largest.mutationBytes}`,
  );
});

Deno.test("the endpoint refuses what a KV Connect server refuses", async () => {
  await using server = await startKvConnect();
  const [kv] = await remoteKvs(server, 1);
  const op = kv!.atomic();
  for (let i = 0; i <= KV_CONNECT_LIMITS.checks; i++) {
    op.check({ key: ["k", i], versionstamp: null });
  }
  await assert.rejects(() => op.commit());
  const big = kv!.atomic();
  for (let i = 0; i < 20; i++) big.set(["big", i], new Uint8Array(60_000));
  // Deno's client refuses this one itself, before it reaches the server.
  await assert.rejects(() => big.commit());
  assert.deepEqual(server.stats.refused, ["Too many checks"]);
  // A wrong access token gets nowhere.
  Deno.env.set("DENO_KV_ACCESS_TOKEN", "wrong");
  await assert.rejects(() => Deno.openKv(server.url), /401/);
  kv!.close();
});

Deno.test({
  name:
    "a remote KV that answers 5xx, never answers, or is gone gets 503 within the time limit, and recovers",
  // A call past its time limit is left to the client, which retries it
  // until the database answers: it may end after the test.
  sanitizeOps: false,
}, async (t) => {
  await using server = await startKvConnect();
  const [store] = await remoteStores(server, 1, {}, TIME_LIMIT_MS);
  let next = 0;
  /** Records a new id; returns how long the answer took, or throws. */
  const record = async () => {
    const started = performance.now();
    await store!.recordId(NEXT, String(++next));
    return performance.now() - started;
  };
  assert.ok(await record() >= 0);
  for (const { name, begin, end } of remoteFaults(server)) {
    await t.step(name, async () => {
      await begin();
      const started = performance.now();
      await assert.rejects(record, StoreUnavailableError);
      const waited = performance.now() - started;
      // Bounded: the time limit, not the client's endless retries.
      assert.ok(waited < TIME_LIMIT_MS * 4, `${waited} ms`);
      await end();
      // Back: the store answers again (the id may have landed meanwhile).
      let recovered = false;
      for (let attempt = 0; attempt < 50 && !recovered; attempt++) {
        recovered = await record().then(() => true, () => false);
        if (!recovered) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(recovered, `the store did not recover from ${name}`);
    });
  }
  await store!.close();
});

Deno.test("the endpoint keeps Deno KV's meaning through Deno's own client", async () => {
  await using server = await startKvConnect();
  const [kv] = await remoteKvs(server, 1);
  // Values of every encoding come back as they went in.
  await kv!.set(["v", "bytes"], new Uint8Array([0, 1, 255]));
  await kv!.set(["v", "object"], { a: [1, "two"], b: null });
  await kv!.set(["v", "u64"], new Deno.KvU64(7n));
  assert.deepEqual(
    (await kv!.getMany([["v", "bytes"], ["v", "object"], ["v", "u64"]]))
      .map((entry) => entry.value),
    [
      new Uint8Array([0, 1, 255]),
      { a: [1, "two"], b: null },
      new Deno.KvU64(7n),
    ],
  );
  // Sum, min and max of 64-bit values.
  await kv!.atomic().sum(["v", "u64"], 5n).commit();
  await kv!.atomic().max(["v", "max"], 3n).max(["v", "max"], 9n).commit();
  await kv!.atomic().min(["v", "min"], 3n).commit();
  await kv!.atomic().min(["v", "min"], 2n).commit();
  assert.deepEqual(
    (await kv!.getMany([["v", "u64"], ["v", "max"], ["v", "min"]]))
      .map((entry) => entry.value),
    [new Deno.KvU64(12n), new Deno.KvU64(9n), new Deno.KvU64(2n)],
  );
  // Checks by versionstamp: a stale one fails the whole operation.
  const current = await kv!.get(["v", "bytes"]);
  const stale = await kv!.atomic().check({
    ...current,
    versionstamp: "0".repeat(20),
  })
    .set(["v", "never"], 1).commit();
  assert.equal(stale.ok, false);
  assert.equal((await kv!.get(["v", "never"])).versionstamp, null);
  const fresh = await kv!.atomic().check(current).delete(["v", "bytes"])
    .commit();
  assert.ok(fresh.ok);
  assert.equal((await kv!.get(["v", "bytes"])).versionstamp, null);
  // Ranges in key order, either way, with limits, and past a page.
  for (let i = 0; i < 250; i++) await kv!.set(["r", i], i);
  const keys = async (options: Deno.KvListOptions) => {
    const found: number[] = [];
    for await (const entry of kv!.list<number>({ prefix: ["r"] }, options)) {
      found.push(entry.value);
    }
    return found;
  };
  assert.deepEqual(await keys({ limit: 3 }), [0, 1, 2]);
  assert.deepEqual(await keys({ limit: 3, reverse: true }), [249, 248, 247]);
  assert.equal((await keys({})).length, 250);
  assert.deepEqual(server.stats.refused, []);
  kv!.close();
});
