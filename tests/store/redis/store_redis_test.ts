/**
 * The Redis store against a real redis-server.
 */
import assert from "node:assert/strict";
import {
  StoreUnavailableError,
  WindowClosedError,
} from "../../../lib/store/store.ts";
import {
  createRedisStore,
  openRedis,
  windowOfEarlierVersion,
} from "../../../lib/store/redis/mod.ts";
import { runServiceToExit, startService } from "../../helpers/service.ts";
import type { Store } from "../../../lib/store/store.ts";
import { redisShardKeys } from "../../../lib/store/keys.ts";
import { captureLogs } from "../../helpers/logs.ts";
import { withinTime } from "../../../lib/time_limit.ts";
import {
  checkOutboxContract,
  checkOwedUrls,
  checkQueueId,
  checkReportClaim,
  checkStaleClaimTakeover,
  checkUrlCap,
  checkWindowStats,
} from "../../helpers/store_contract.ts";
import {
  type RedisServer,
  skipWithoutRedis,
  startRedis,
} from "../../helpers/redis.ts";

const ignore = skipWithoutRedis();
const MINUTE = Date.UTC(2026, 0, 1, 12, 0);
const NEXT = MINUTE + 60_000;
const RETENTION = 3_600_000;

type Logs = Awaited<ReturnType<typeof captureLogs>>;

function redisStore(
  server: RedisServer,
  logs: Logs,
  options: {
    batchSize?: number;
    maxUrlsPerWindow?: number;
    clock?: () => number;
    gather?: { ms: number; ids: number };
    onCommit?: (ids: number) => void;
  } = {},
): Store {
  return createRedisStore(openRedis([server.url], logs.logger("redis")), {
    retentionMs: RETENTION,
    timeoutMs: 500,
    clock: () => MINUTE + 120_000,
    ...options,
  });
}

/** A plain connection for looking at what the store wrote. */
function inspector(server: RedisServer, logs: Logs) {
  return openRedis([server.url], logs.logger("inspect"));
}

Deno.test({
  name: "Redis recordId() counts hundreds of concurrent duplicates once",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    await using store = redisStore(server, logs);
    const results = await Promise.all(
      Array.from({ length: 300 }, () => store.recordId(MINUTE, "42")),
    );
    assert.equal(results.filter(Boolean).length, 1);
    assert.equal(await store.countIds(MINUTE), 1);
  },
});

Deno.test({
  name:
    "Redis recordId() with gather commits a busy spell's ids together, and at once when enough wait",
  ignore,
  async fn(t) {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const ids = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => String(from + i));
    /** A store whose first commit in `minute` ran, and the commits' sizes. */
    async function gathering(
      gather: { ms: number; ids: number },
      minute: number,
    ) {
      const sizes: number[] = [];
      const store = redisStore(server, logs, {
        gather,
        onCommit: (ids) => sizes.push(ids),
      });
      assert.equal(await store.recordId(minute, "1"), true);
      return { store, sizes };
    }

    await t.step(
      "ids arriving within gather.ms of the last batch wait for one",
      async () => {
        const { store, sizes } = await gathering(
          { ms: 1000, ids: 1000 },
          MINUTE,
        );
        await using _ = store;
        const results: Promise<boolean>[] = [];
        for (let burst = 0; burst < 4; burst++) {
          for (const id of ids(1000 * (burst + 1), 25)) {
            results.push(store.recordId(MINUTE, id));
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        assert.equal((await Promise.all(results)).filter(Boolean).length, 100);
        assert.deepEqual(sizes, [1, 100]);
        assert.equal(await store.countIds(MINUTE), 101);
      },
    );

    await t.step("gather.ids queued start the batch at once", async () => {
      const { store, sizes } = await gathering({ ms: 60_000, ids: 50 }, NEXT);
      await using _ = store;
      const held = ids(5000, 49).map((id) => store.recordId(NEXT, id));
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.deepEqual(sizes, [1]);
      const last = store.recordId(NEXT, "6000");
      // Well before the minute: the 50th id let the batch go.
      const results = await withinTime(
        Promise.all([...held, last]),
        5000,
        () => new Error("the batch waited for gather.ms"),
      );
      assert.equal(results.filter(Boolean).length, 50);
      assert.deepEqual(sizes, [1, 50]);
    });

    await t.step("close() commits a held batch at once", async () => {
      const { store, sizes } = await gathering(
        { ms: 60_000, ids: 1000 },
        NEXT + 60_000,
      );
      const held = ids(7000, 10).map((id) => store.recordId(NEXT + 60_000, id));
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.deepEqual(sizes, [1]);
      await withinTime(
        store.close(),
        5000,
        () => new Error("close() waited for gather.ms"),
      );
      assert.equal((await Promise.all(held)).filter(Boolean).length, 10);
      assert.deepEqual(sizes, [1, 10]);
    });
  },
});

Deno.test({
  name:
    "Redis recordId() counts many distinct ids exactly, across batches and windows",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    await using store = redisStore(server, logs, { batchSize: 7 });
    const calls = [];
    for (let i = 0; i < 1000; i++) {
      calls.push(store.recordId(i % 3 === 0 ? NEXT : MINUTE, String(i % 700)));
    }
    const results = await Promise.all(calls);
    const minuteIds = new Set<number>();
    const nextIds = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      (i % 3 === 0 ? nextIds : minuteIds).add(i % 700);
    }
    assert.equal(results.filter(Boolean).length, minuteIds.size + nextIds.size);
    assert.equal(await store.countIds(MINUTE), minuteIds.size);
    assert.equal(await store.countIds(NEXT), nextIds.size);
    assert.deepEqual(await store.unreportedWindows(), [MINUTE, NEXT]);
  },
});

Deno.test({
  name: "two Redis stores count every id exactly once",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const stores = [redisStore(server, logs), redisStore(server, logs)];
    const results = await Promise.all(
      Array.from(
        { length: 900 },
        (_, i) => stores[i % 2]!.recordId(MINUTE, String(i % 250)),
      ),
    );
    assert.equal(results.filter(Boolean).length, 250);
    assert.equal(await stores[0]!.countIds(MINUTE), 250);
    for (const store of stores) await store.close();
  },
});

Deno.test({
  name:
    "Redis claimReport() lets one of many instances claim a window, closes it, and only the owner completes it",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const stores = [0, 1, 2].map(() => redisStore(server, logs));
    await checkReportClaim(stores);
    for (const store of stores) await store.close();
  },
});

Deno.test({
  name: "Redis claimReport() lets a stale claim be taken over after its lease",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    await using store = redisStore(server, logs);
    await checkStaleClaimTakeover(store);
  },
});

Deno.test({
  name:
    "Redis recordUrl() dedupes URLs and enforces the per-window cap across instances",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const [a, b] = [0, 1].map(() =>
      redisStore(server, logs, { maxUrlsPerWindow: 5 })
    );
    await checkUrlCap(a!, b!, 5);
    await a!.close();
    await b!.close();
  },
});

Deno.test({
  name: "Redis windowStats() tells of the windows asked for, and only of those",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    await using store = redisStore(server, logs);
    await checkWindowStats(store);
  },
});

Deno.test({
  name:
    "Redis keys of a window share its hash tag, its shard's keys the shard's, and all expire after retention",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    await using store = redisStore(server, logs);
    await store.recordId(MINUTE, "1");
    await store.recordUrl(MINUTE, "https://example.com/");
    await store.claimReport(MINUTE, "r", MINUTE + 62_000, 60_000);
    const redis = inspector(server, logs);
    const keys = (await redis.sendCommand(["KEYS", "*"]) as string[]).sort();
    const tag = `{verve:${MINUTE}}`;
    const [shard] = redisShardKeys(MINUTE, 1);
    assert.match(shard!.ids, /^\{verve:shard:0\.\d+\}:\d+:ids$/);
    assert.deepEqual(keys, [
      "verve:windows",
      `${tag}:report`,
      `${tag}:shards`,
      `${tag}:urls`,
      shard!.closed,
      shard!.ids,
    ]);
    for (const key of keys.filter((k) => k !== "verve:windows")) {
      const ttl = Number(await redis.sendCommand(["PTTL", key]));
      assert.ok(ttl > 0 && ttl <= RETENTION, `${key} ttl ${ttl}`);
    }
    await redis.close();
  },
});

Deno.test({
  name: "Redis unreportedWindows() forgets windows past retention",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const clock = { now: MINUTE + 60_000 };
    await using store = redisStore(server, logs, { clock: () => clock.now });
    await store.recordId(MINUTE, "1");
    await store.recordId(NEXT, "2");
    assert.deepEqual(await store.unreportedWindows(), [MINUTE, NEXT]);
    clock.now = NEXT + RETENTION - 1;
    assert.deepEqual(await store.unreportedWindows(), [NEXT]);
  },
});

Deno.test({
  name:
    "Redis down: commands fail fast as unavailable, and the store recovers when it returns",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    await using store = redisStore(server, logs);
    assert.equal(await store.recordId(MINUTE, "1"), true);
    await server.stop();
    await assert.rejects(store.recordId(MINUTE, "2"), StoreUnavailableError);
    await assert.rejects(store.countIds(MINUTE), StoreUnavailableError);
    await server.start();
    // The client reconnects by itself.
    let recorded: boolean | undefined;
    for (let i = 0; i < 100 && recorded === undefined; i++) {
      try {
        recorded = await store.recordId(MINUTE, "2");
      } catch (error) {
        assert.ok(error instanceof StoreUnavailableError);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.equal(recorded, true);
    assert.equal(await store.countIds(MINUTE), 1); // the server lost "1" with its memory
    const warnings = logs.of("redis").filter((r) => r.level === "warning");
    assert.ok(warnings.length >= 1);
  },
});

Deno.test({
  name: "Redis store authenticates with the password in REDIS_URL",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis({ password: "s3cret/pass" });
    const store = redisStore(server, logs);
    assert.equal(await store.recordId(MINUTE, "1"), true);
    assert.equal(await store.countIds(MINUTE), 1);
    await store.close();

    const wrong = createRedisStore(
      openRedis(
        [`redis://:wrong@127.0.0.1:${server.port}`],
        logs.logger("wrong"),
      ),
      { retentionMs: RETENTION, timeoutMs: 500 },
    );
    await assert.rejects(wrong.countIds(MINUTE), StoreUnavailableError);
    await wrong.close();
    // After a refused login the client waits before its next attempt (at
    // most 2 s) with a timer that closing it cannot cancel.
    await new Promise((resolve) => setTimeout(resolve, 2100));
  },
});

Deno.test({
  name:
    "the Redis outbox keeps reports per sink until removed, one lease at a time",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const a = redisStore(server, logs);
    await using b = redisStore(server, logs);
    await checkOutboxContract(a, b);
    await a.close();
  },
});

Deno.test({
  name: "Redis close() may be called twice, and commits what is queued first",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const store = redisStore(server, logs);
    const recorded = Promise.all(
      ["1", "2", "2"].map((id) => store.recordId(MINUTE, id)),
    );
    assert.equal(store.queuedIds(), 2);
    await Promise.all([store.close(), store.close()]);
    await store.close();
    assert.deepEqual(await recorded, [true, true, false]);
    assert.equal(store.queuedIds(), 0);
    await using again = redisStore(server, logs);
    assert.equal(await again.countIds(MINUTE), 2);
  },
});

Deno.test({
  name:
    "the Redis store keeps which webhook URLs a report is done with, across instances",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const a = redisStore(server, logs);
    await using b = redisStore(server, logs);
    await checkOwedUrls(a, b);
    await a.close();
  },
});

Deno.test({
  name:
    "Redis with waitReplicas waits for the replicas its master has, and none at all once it has none",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using master = await startRedis();
    await using replica = await startRedis({ replicaOf: master.port });
    const redis = inspector(master, logs);
    /** The master's connected replicas, from ROLE. */
    const replicas = async () =>
      ((await redis.sendCommand(["ROLE"]) as unknown[])[2] as unknown[]).length;
    /** `WAIT` commands the master ran since the last reset. */
    const waits = async () => {
      const info = await redis.sendCommand(["INFO", "commandstats"]) as string;
      return Number(/cmdstat_wait:calls=(\d+)/.exec(info)?.[1] ?? 0);
    };
    /** Waits for `test`, checking every 50 ms, for at most 10 s. */
    const until = async (test: () => Promise<boolean>, what: string) => {
      for (let i = 0; i < 200; i++) {
        if (await test()) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`never ${what}`);
    };
    await until(async () => await replicas() === 1, "a replica connected");
    const store = createRedisStore(
      openRedis([master.url], logs.logger("redis")),
      {
        retentionMs: RETENTION,
        timeoutMs: 1000,
        waitReplicas: 1,
        clock: () => MINUTE + 120_000,
      },
    );
    let id = 0;
    const record = async (count: number) => {
      for (let i = 0; i < count; i++) {
        assert.equal(await store.recordId(MINUTE, String(id++)), true);
      }
    };
    await record(5);
    // Each commit waited for the replica, which has every id.
    assert.ok(await waits() >= 5);
    const copy = inspector(replica, logs);
    const [shard] = redisShardKeys(MINUTE, 1);
    assert.equal(await copy.sendCommand(["SCARD", shard!.ids], shard!.ids), 5);
    await copy.close();

    await replica.stop();
    await until(async () => await replicas() === 0, "the replica gone");
    await redis.sendCommand(["CONFIG", "RESETSTAT"]);
    await record(20);
    // At most the first write asked for the replica it had: the others knew
    // the master has none, and did not wait out WAIT's time limit each.
    assert.ok(await waits() <= 1, `${await waits()} WAITs`);

    await replica.start();
    await until(async () => await replicas() === 1, "the replica back");
    await redis.sendCommand(["CONFIG", "RESETSTAT"]);
    // Within REPLICA_COUNT_TTL_MS the store sees the replica again.
    await until(async () => {
      await record(1);
      return await waits() > 0;
    }, "waited for the replica again");
    assert.equal(await store.countIds(MINUTE), id);
    await store.close();
    await redis.close();
  },
});

/** A store with `shards` shards per window it starts. */
function shardedStore(server: RedisServer, logs: Logs, shards: number): Store {
  return createRedisStore(openRedis([server.url], logs.logger("redis")), {
    retentionMs: RETENTION,
    timeoutMs: 500,
    shards,
    clock: () => MINUTE + 120_000,
  });
}

Deno.test({
  name: "the Redis store keeps the store contract with a window in 4 shards",
  ignore,
  async fn(t) {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const redis = inspector(server, logs);
    const step = (
      name: string,
      count: number,
      check: (stores: Store[]) => Promise<void>,
    ) =>
      t.step(name, async () => {
        const stores = Array.from(
          { length: count },
          () => shardedStore(server, logs, 4),
        );
        try {
          await check(stores);
        } finally {
          for (const store of stores) await store.close();
        }
        await redis.sendCommand(["FLUSHALL"]);
      });
    await step("report claim", 3, (stores) => checkReportClaim(stores));
    await step("stale claim takeover", 1, ([a]) => checkStaleClaimTakeover(a!));
    await step("window stats", 1, ([a]) => checkWindowStats(a!));
    await step("outbox", 2, ([a, b]) => checkOutboxContract(a!, b!));
    await step("owed webhook URLs", 2, ([a, b]) => checkOwedUrls(a!, b!));
    await step("queued ids", 1, ([a]) => checkQueueId(a!));
    await redis.close();
  },
});

Deno.test({
  name:
    "Redis spreads a window's ids over its shards, in the number its first writer set, and the claim closes every shard",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const first = shardedStore(server, logs, 4);
    await using second = shardedStore(server, logs, 7);
    const ids = Array.from({ length: 400 }, (_, i) => String(i * 7919 - 1000));
    await first.recordId(MINUTE, "0");
    const answers = await Promise.all(
      ids.map((id, i) => (i % 2 ? first : second).recordId(MINUTE, id)),
    );
    assert.equal(answers.filter(Boolean).length, 400);
    const redis = inspector(server, logs);
    assert.equal(
      await redis.sendCommand(["GET", `{verve:${MINUTE}}:shards`]),
      "4",
    );
    const sizes = await Promise.all(
      redisShardKeys(MINUTE, 4).map(async (shard) =>
        Number(await redis.sendCommand(["SCARD", shard.ids]))
      ),
    );
    // Each shard holds a share; together, every id once.
    assert.ok(sizes.every((size) => size > 50), `${sizes}`);
    assert.equal(sizes.reduce((a, b) => a + b), 401);
    assert.equal(await second.countIds(MINUTE), 401);

    assert.deepEqual(
      await second.claimReport(MINUTE, "r", NEXT + 2000, 60_000),
      { claimed: true },
    );
    for (const shard of redisShardKeys(MINUTE, 4)) {
      assert.equal(await redis.sendCommand(["EXISTS", shard.closed]), 1);
    }
    // A new id fails on every shard, from either instance; known ids stay repeats.
    const late = Array.from({ length: 40 }, (_, i) => String(10_000 + i));
    for (const store of [first, second]) {
      const outcomes = await Promise.allSettled(
        late.map((id) => store.recordId(MINUTE, id)),
      );
      assert.ok(
        outcomes.every((outcome) =>
          outcome.status === "rejected" &&
          outcome.reason instanceof WindowClosedError
        ),
      );
    }
    assert.equal(await first.recordId(MINUTE, ids[1]!), false);
    assert.equal(await first.countIds(MINUTE), 401);
    await second.completeReport(MINUTE, "r", 401);
    // The shards' ids are gone; their markers stay until retention.
    for (const shard of redisShardKeys(MINUTE, 4)) {
      assert.equal(await redis.sendCommand(["EXISTS", shard.ids]), 0);
      assert.equal(await redis.sendCommand(["EXISTS", shard.closed]), 1);
    }
    await redis.close();
    await first.close();
  },
});

Deno.test({
  name:
    "Redis counts windows of the earlier one-slot layout, an id in both layouts once, and finds an earlier version writing",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const redis = inspector(server, logs);
    // What an earlier version writes for a window: its index entry and one
    // set of ids in the window's own slot.
    const writeOneSlot = async (minute: number, ids: string[]) => {
      await redis.sendCommand([
        "ZADD",
        "verve:windows",
        String(minute),
        String(minute),
      ]);
      await redis.sendCommand(["SADD", `{verve:${minute}}:ids`, ...ids]);
      await redis.sendCommand([
        "PEXPIRE",
        `{verve:${minute}}:ids`,
        String(RETENTION),
      ]);
    };
    const now = NEXT + 30_000;
    const earlier = () =>
      windowOfEarlierVersion(redis, {
        now,
        windowMs: 60_000,
        timeoutMs: 500,
        watchMs: 400,
      });
    assert.equal(await earlier(), undefined);
    await writeOneSlot(MINUTE, ["1", "2", "3"]);
    // A set left behind is no writer; one written to while watched is.
    assert.equal(await earlier(), undefined);
    const writing = setInterval(() => writeOneSlot(MINUTE, ["1"]), 50);
    try {
      assert.equal(await earlier(), MINUTE);
    } finally {
      clearInterval(writing);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));

    await using store = shardedStore(server, logs, 4);
    // A window written by the earlier version alone.
    assert.deepEqual(await store.unreportedWindows(), [MINUTE]);
    assert.equal(await store.countIds(MINUTE), 3);
    await store.claimReport(MINUTE, "r", NEXT + 2000, 60_000);
    await assert.rejects(store.recordId(MINUTE, "4"), WindowClosedError);
    assert.equal(await store.countIds(MINUTE), 3);
    await store.completeReport(MINUTE, "r", 3);
    assert.equal(
      await redis.sendCommand(["EXISTS", `{verve:${MINUTE}}:ids`]),
      0,
    );

    // A window written by both versions: "3" is in both, and counts once.
    await writeOneSlot(NEXT, ["1", "2", "3"]);
    for (const id of ["3", "4", "5"]) await store.recordId(NEXT, id);
    assert.deepEqual(
      await store.claimReport(NEXT, "r", NEXT + 62_000, 60_000),
      { claimed: true },
    );
    assert.equal(await store.countIds(NEXT), 5);
    await store.completeReport(NEXT, "r", 5);
    assert.deepEqual(await store.unreportedWindows(), []);
    await redis.close();
  },
});

Deno.test({
  name:
    "the service refuses to start while an earlier version writes the one-slot layout to its Redis, and starts once it stopped",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const redis = inspector(server, logs);
    const open = Math.floor(Date.now() / 60_000) * 60_000;
    const key = `{verve:${open}}:ids`;
    // An instance of the earlier version, writing as its script does.
    let next = 0;
    const write = () =>
      redis.sendCommand(["SADD", key, String(next++)]).then(() =>
        redis.sendCommand(["PEXPIRE", key, String(RETENTION)])
      );
    await write();
    const writing = setInterval(write, 50);
    let refused;
    try {
      refused = await runServiceToExit({
        STORE: "redis",
        REDIS_URL: server.url,
        HOST: "127.0.0.1",
        PORT: "0",
      });
    } finally {
      clearInterval(writing);
    }
    assert.equal(refused.code, 2);
    const refusal = refused.lines.find((line) => line.level === "FATAL");
    assert.match(refusal?.message ?? "", /earlier version .* one-slot layout/);
    assert.match(refusal?.message ?? "", /docs\/deployment\.md#upgrading/);

    // Once it stopped, the set it left does not keep the service from starting.
    await new Promise((resolve) => setTimeout(resolve, 100));
    await using service = await startService({
      STORE: "redis",
      REDIS_URL: server.url,
    });
    const answer = await fetch(`${service.url}/api/verve/accept?id=7`);
    assert.equal(await answer.text(), "ok");
    await redis.close();
  },
});
