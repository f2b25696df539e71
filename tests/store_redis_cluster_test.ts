/**
 * The Redis store on a real Redis Cluster of three masters and three
 * replicas (`tests/helpers/redis_cluster.ts`): the store contract, exact
 * counts across instances with windows on every master, and scripts sent by
 * digest to nodes that have not seen them. The fleet and a master's failover
 * under load are chaos scenarios 7 and 8 (`tests/chaos_test.ts`).
 */
import assert from "node:assert/strict";
import { createRedisStore, openRedis } from "../lib/store/redis/store_redis.ts";
import type { Store } from "../lib/store/store.ts";
import { type CapturedLogs, captureLogs } from "./helpers/logs.ts";
import { REDIS_AVAILABLE } from "./helpers/redis.ts";
import {
  REDIS_CLI_AVAILABLE,
  type RedisCluster,
  startRedisCluster,
} from "./helpers/redis_cluster.ts";
import { skipUnless } from "./helpers/requirements.ts";
import {
  checkOutboxContract,
  checkOwedUrls,
  checkReportClaim,
  checkStaleClaimTakeover,
  checkUrlCap,
  checkWindowStats,
} from "./helpers/store_contract.ts";

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
  maxUrlsPerWindow?: number,
): Store[] {
  return Array.from({ length: count }, () =>
    createRedisStore(
      openRedis(cluster.url.split(","), logs.logger("redis"), {
        cluster: true,
      }),
      {
        retentionMs: 3_600_000,
        waitReplicas: 1,
        // Six nodes share the test machine's cores: give replicas time.
        timeoutMs: 5000,
        // An hour after MINUTE: the windows of the tests are all retained.
        clock: () => MINUTE + 3_600_000,
        ...(maxUrlsPerWindow === undefined ? {} : { maxUrlsPerWindow }),
      },
    ));
}

Deno.test({
  name: "on a Redis Cluster the Redis store keeps the store contract",
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
        const stores = clusterStores(cluster, logs, count, maxUrlsPerWindow);
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

async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await new Deno.Command("redis-cli", {
    args: ["-h", "127.0.0.1", "-p", String(port), ...args],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(stdout);
}

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
    const store = createRedisStore(
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
    await store.close();
  },
});
