/**
 * The Redis store on a real Redis Cluster of three masters and three
 * replicas (`tests/helpers/redis_cluster.ts`): the store contract, exact
 * counts across instances with windows on every master, a window's shards
 * on every master (and its writes, sent through the service), exact counts
 * while instances write to a window being reported, and scripts sent by
 * digest to nodes that have not seen them. The fleet and a master's failover
 * under load are chaos scenarios 7 and 8 (`tests/chaos_test.ts`).
 */
import assert from "node:assert/strict";
import { createRedisStore, openRedis } from "../../../lib/store/redis/mod.ts";
import type { Store } from "../../../lib/store/store.ts";
import { type CapturedLogs, captureLogs } from "../../helpers/logs.ts";
import { REDIS_AVAILABLE } from "../../helpers/redis.ts";
import {
  REDIS_CLI_AVAILABLE,
  redisCli,
  type RedisCluster,
  startRedisCluster,
} from "../../helpers/redis_cluster.ts";
import { skipUnless } from "../../helpers/requirements.ts";
import { startService } from "../../helpers/service.ts";
import { createReporter } from "../../../lib/report/reporter.ts";
import { redisShardKeys } from "../../../lib/store/keys.ts";
import { hashSlot } from "../../../lib/store/redis/slots.ts";
import { WindowClosedError } from "../../../lib/store/store.ts";
import {
  checkOutboxContract,
  checkOwedUrls,
  checkQueueId,
  checkReportClaim,
  checkStaleClaimTakeover,
  checkUrlCap,
  checkWindowStats,
} from "../../helpers/store_contract.ts";

const ignore = skipUnless(
  REDIS_AVAILABLE && REDIS_CLI_AVAILABLE,
  "redis-server and redis-cli",
  "redis-server",
);
const MINUTE = Date.UTC(2026, 0, 1, 12, 0);

function clusterStores(
  cluster: RedisCluster,
  logs: CapturedLogs,
  count: number,
  options: { maxUrlsPerWindow?: number; clock?: () => number } = {},
): Store[] {
  return Array.from({ length: count }, () =>
    createRedisStore(
      openRedis(cluster.url.split(","), logs.logger("redis"), {
        cluster: true,
      }),
      {
        retentionMs: 3_600_000,
        shards: 12,
        waitReplicas: 1,
        // Six nodes share the test machine's cores: give replicas time.
        timeoutMs: 5000,
        // An hour after MINUTE: the windows of the tests are all retained.
        clock: options.clock ?? (() => MINUTE + 3_600_000),
        ...(options.maxUrlsPerWindow === undefined
          ? {}
          : { maxUrlsPerWindow: options.maxUrlsPerWindow }),
      },
    ));
}

Deno.test({
  name:
    "on a Redis Cluster the Redis store keeps the store contract with a window in 12 shards",
  ignore,
  async fn(t) {
    await using logs = await captureLogs();
    await using cluster = await startRedisCluster();
    const step = (
      name: string,
      count: number,
      check: (stores: Store[]) => Promise<void>,
      maxUrlsPerWindow?: number,
    ) =>
      t.step(name, async () => {
        const stores = clusterStores(cluster, logs, count, {
          ...(maxUrlsPerWindow === undefined ? {} : { maxUrlsPerWindow }),
        });
        try {
          await check(stores);
        } finally {
          for (const store of stores) await store.close();
        }
        await flushAll(cluster);
      });
    await step("report claim", 3, (stores) => checkReportClaim(stores));
    await step("stale claim takeover", 1, ([a]) => checkStaleClaimTakeover(a!));
    await step("URL cap", 2, ([a, b]) => checkUrlCap(a!, b!, 5), 5);
    await step("window stats", 1, ([a]) => checkWindowStats(a!));
    await step("outbox", 2, ([a, b]) => checkOutboxContract(a!, b!));
    await step("owed webhook URLs", 2, ([a, b]) => checkOwedUrls(a!, b!));
    await step("queued ids", 1, ([a]) => checkQueueId(a!));
  },
});

Deno.test({
  name:
    "on a Redis Cluster three instances count every id once, in windows on every master, and report each once",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using cluster = await startRedisCluster();
    const stores = clusterStores(cluster, logs, 3);
    // Sixty windows: their hash tags spread over the three masters.
    const windows = Array.from({ length: 60 }, (_, i) => MINUTE + i * 60_000);
    const results = await Promise.all(
      windows.flatMap((minute, w) =>
        Array.from(
          { length: 30 },
          (_, i) => stores[(w + i) % 3]!.recordId(minute, String(i % 10)),
        )
      ),
    );
    assert.equal(results.filter(Boolean).length, 60 * 10);
    for (const minute of windows) {
      assert.equal(await stores[minute % 3]!.countIds(minute), 10);
    }
    assert.deepEqual(await stores[1]!.unreportedWindows(), windows);
    const claims = await Promise.all(
      windows.flatMap((minute) =>
        stores.map((store, i) => store.claimReport(minute, `r${i}`, 0, 60_000))
      ),
    );
    assert.equal(claims.filter((claim) => claim.claimed).length, 60);
    // The masters hold windows of their own: no slot holds them all.
    const holding = await Promise.all(
      (await cluster.masters()).map(async (port) =>
        Number(
          (await redisCli(port, "dbsize")).trim(),
        )
      ),
    );
    assert.ok(holding.filter((keys) => keys > 0).length === 3, `${holding}`);
    for (const store of stores) await store.close();
  },
});

/** Empties every master, and forgets the scripts, between contract steps. */
async function flushAll(cluster: RedisCluster): Promise<void> {
  for (const port of await cluster.masters()) {
    await redisCli(port, "flushall");
    await redisCli(port, "script", "flush");
  }
}

Deno.test({
  name:
    "on a Redis Cluster a store opened while a master is down answers within its time limit, and works once the replica took over",
  ignore,
  // A client dropped mid-connect leaves its last reconnect sleep (at most
  // 2 s) to run out after the test; then it stops.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using logs = await captureLogs();
    await using cluster = await startRedisCluster();
    const [master] = await cluster.masters();
    await cluster.nodes.find((node) => node.port === master)!.kill();
    // Opened mid-failover: a client that waited for the dead master would
    // never finish connecting.
    await using store = createRedisStore(
      openRedis(cluster.url.split(","), logs.logger("redis"), {
        cluster: true,
        timeoutMs: 1000,
      }),
      { retentionMs: 3_600_000, timeoutMs: 1000, waitReplicas: 1 },
    );
    let recorded = false;
    for (let attempt = 0; attempt < 60 && !recorded; attempt++) {
      const started = performance.now();
      try {
        recorded = await store.recordId(MINUTE + attempt, "1");
      } catch (error) {
        assert.ok(error instanceof Error, String(error));
        // Refused, not hung: the time limit and a commit's own waiting.
        assert.ok(performance.now() - started < 10_000);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    assert.ok(recorded, "the store never worked after the failover");
  },
});

Deno.test({
  name:
    "on a Redis Cluster a window's 12 shards sit 4 on each master, and three instances writing while it is reported count every id answered ok",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using cluster = await startRedisCluster();
    const masters = await cluster.masters();
    const keys = redisShardKeys(MINUTE, 12);
    const perMaster = new Map(masters.map((port) => [port, 0]));
    for (const shard of keys) {
      // The service's slot of a key is the cluster's.
      assert.equal(
        Number(await redisCli(masters[0]!, "cluster", "keyslot", shard.ids)),
        hashSlot(shard.ids),
      );
      const master = await cluster.masterOf(shard.ids);
      perMaster.set(master, perMaster.get(master)! + 1);
    }
    assert.deepEqual([...perMaster.values()], [4, 4, 4]);

    const now = { ms: MINUTE + 30_000 };
    const stores = clusterStores(cluster, logs, 3, { clock: () => now.ms });
    const acked = new Set<string>();
    const closedAt: number[] = [];
    let next = 0;
    /** Records new ids until every shard has refused one. */
    const write = async (store: Store) => {
      let refused = 0;
      while (refused < 24) {
        const id = String(next++ * 7_919);
        try {
          if (await store.recordId(MINUTE, id)) acked.add(id);
        } catch (error) {
          assert.ok(error instanceof WindowClosedError, String(error));
          refused++;
          closedAt.push(acked.size);
        }
      }
    };
    const writers = stores.map((store) =>
      Array.from({ length: 8 }, () => write(store))
    ).flat();
    while (acked.size < 600) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    now.ms = MINUTE + 62_000;
    const reporter = createReporter({
      store: stores[1]!,
      sinks: [],
      logger: logs.logger("reporter"),
      clock: () => now.ms,
    });
    const reports = await reporter.reportDue();
    await Promise.all(writers);
    assert.equal(reports.length, 1);
    // Every id answered ok is in the count, and the count has nothing else.
    assert.equal(reports[0]!.unique_ids, acked.size);
    assert.ok(closedAt.length >= 24 * 24);
    // Reported once: the others find it done.
    for (const store of stores) {
      assert.deepEqual(
        await store.claimReport(MINUTE, "late", now.ms, 60_000),
        { claimed: false, reason: "reported" },
      );
    }
    for (const store of stores) await store.close();
  },
});

Deno.test({
  name:
    "on a Redis Cluster of three masters, every master takes at least a quarter of the commands of a window of new ids sent through the service",
  ignore,
  async fn() {
    await using cluster = await startRedisCluster();
    const masters = await cluster.masters();
    await using service = await startService({
      STORE: "redis",
      REDIS_CLUSTER: "true",
      REDIS_URL: cluster.url,
      REDIS_TIMEOUT_MS: "5000",
    });
    const processed = () =>
      Promise.all(masters.map(async (port) => {
        const info = await redisCli(port, "info", "stats");
        return Number(/total_commands_processed:(\d+)/.exec(info)![1]);
      }));
    const before = await processed();
    let next = Date.now() * 100;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = 0; i < 150; i++) {
        const answer = await fetch(
          `${service.url}/api/verve/accept?id=${next++}`,
        );
        assert.equal(await answer.text(), "ok");
      }
    }));
    const after = await processed();
    const shares = after.map((count, i) => count - before[i]!);
    const total = shares.reduce((a, b) => a + b);
    for (const share of shares) {
      assert.ok(share >= total / 4, `commands per master: ${shares}`);
    }
  },
});
