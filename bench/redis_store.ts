/**
 * `deno task bench:redis`: the Redis store alone, no HTTP, for sizing a
 * fleet's Redis. Store clients (each a worker thread with a store of its
 * own, 64 callers awaiting `recordId` with new random ids in a loop, as
 * the HTTP bench's connections) drive one `redis-server` directly with the
 * service's own scripts and batch sizes, per number of shards.
 *
 * The clients share this machine's cores with Redis, so they may be the
 * limit rather than Redis: the bench reads Redis's own CPU time (`INFO
 * cpu`) and reports the new ids per second of one Redis core, the rate one
 * master takes at full load. Redis writes an append-only file synced every
 * second (`appendfsync everysec`, Redis's default for `appendonly yes`);
 * `--fsync always` syncs before each answer, as `deno task bench` does.
 *
 * With `--cluster`, the same clients write to a 3-master Redis Cluster
 * (three replicas, each write waiting for its replica) for each shard
 * count, and the table shows each master's share of the commands.
 *
 * Usage: `deno task bench:redis [--seconds S] [--clients N]
 * [--shards 1,12] [--fsync always|everysec] [--cluster] [--out F]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { markdownTable } from "./markdown_table.ts";
import { startRedis } from "../tests/helpers/redis.ts";
import { redisCli, startRedisCluster } from "../tests/helpers/redis_cluster.ts";

import type { Job } from "./redis_store_client.ts";

await main();

/** Runs `clients` workers on `job` at once; the ids they recorded in all. */
async function runClients(clients: number, job: Job): Promise<number> {
  const counts = await Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise<number>((resolve, reject) => {
          const worker = new Worker(
            new URL("./redis_store_client.ts", import.meta.url),
            { type: "module" },
          );
          worker.onmessage = (event: MessageEvent<number>) => {
            resolve(event.data);
            worker.terminate();
          };
          worker.onerror = (event) => {
            event.preventDefault();
            reject(new Error(event.message));
            worker.terminate();
          };
          worker.postMessage(job);
        }),
    ),
  );
  return counts.reduce((a, b) => a + b, 0);
}

/** A number from an `INFO` answer. */
function info(text: string, field: string): number {
  return Number(new RegExp(`^${field}:([\\d.]+)`, "m").exec(text)?.[1] ?? NaN);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "8" },
      clients: { type: "string", default: "2" },
      shards: { type: "string", default: "1,3,12" },
      fsync: { type: "string", default: "everysec" },
      cluster: { type: "boolean", default: false },
      out: { type: "string" },
    },
  });
  const seconds = Number(values.seconds);
  const clients = Number(values.clients);
  const shardCounts = values.shards.split(",").map((value) =>
    value === "auto" ? "auto" as const : Number(value)
  );
  if (
    !(seconds > 0) || !Number.isInteger(clients) || clients < 1 ||
    shardCounts.some((n) =>
      n !== "auto" && (!Number.isInteger(n) || n < 1 || n > 256)
    ) ||
    (values.fsync !== "always" && values.fsync !== "everysec")
  ) {
    console.error(
      "Cannot parse the arguments: --seconds > 0, --clients a whole number, --shards auto or whole numbers 1-256, --fsync always or everysec",
    );
    Deno.exit(2);
  }
  const job = { seconds, callers: 64 };
  const rows: Record<string, string | number>[] = [];
  if (values.cluster) {
    await using cluster = await startRedisCluster();
    const masters = await cluster.masters();
    for (const shards of shardCounts) {
      const stats = () =>
        Promise.all(masters.map(async (port) => {
          const [stats, cpu] = await Promise.all([
            redisCli(port, "info", "stats"),
            redisCli(port, "info", "cpu"),
          ]);
          return {
            commands: info(stats, "total_commands_processed"),
            cpu: info(cpu, "used_cpu_user") + info(cpu, "used_cpu_sys"),
          };
        }));
      const before = await stats();
      const started = performance.now();
      const ids = await runClients(clients, {
        ...job,
        urls: cluster.url.split(","),
        cluster: true,
        shards,
      });
      const elapsed = (performance.now() - started) / 1000;
      const after = await stats();
      const commands = after.map((s, i) => s.commands - before[i]!.commands);
      const total = commands.reduce((a, b) => a + b, 0);
      rows.push({
        shards,
        clients,
        ids_per_s: Math.round(ids / elapsed),
        commands_per_master: commands
          .map((n) => `${Math.round(100 * n / total)} %`).join(", "),
        cpu_per_master: after
          .map((s, i) =>
            `${Math.round(100 * (s.cpu - before[i]!.cpu) / elapsed)} %`
          )
          .join(", "),
      });
      for (const port of masters) await redisCli(port, "flushall");
    }
  } else {
    for (const shards of shardCounts) {
      await using redis = await startRedis({
        appendFsync: values.fsync as "always" | "everysec",
      });
      const cpu = async () => {
        const text = await redisCli(redis.port, "info", "cpu");
        return info(text, "used_cpu_user") + info(text, "used_cpu_sys");
      };
      /** Script calls so far: one per shard a batch touches. */
      const calls = async () =>
        Number(
          /cmdstat_evalsha:calls=(\d+)/.exec(
            await redisCli(redis.port, "info", "commandstats"),
          )?.[1] ?? 0,
        );
      const [cpuBefore, callsBefore] = [await cpu(), await calls()];
      const started = performance.now();
      const ids = await runClients(clients, {
        ...job,
        urls: [redis.url],
        cluster: false,
        shards,
      });
      const elapsed = (performance.now() - started) / 1000;
      const redisCpu = await cpu() - cpuBefore;
      const scripts = await calls() - callsBefore;
      rows.push({
        shards,
        clients,
        ids_per_s: Math.round(ids / elapsed),
        redis_cpu: `${Math.round(100 * redisCpu / elapsed)} %`,
        ids_per_redis_cpu_s: Math.round(ids / redisCpu),
        ids_per_call: Math.round(10 * ids / scripts) / 10,
      });
    }
  }
  const header = Object.keys(rows[0] ?? {});
  console.log(
    markdownTable(header, rows.map((row) => header.map((h) => String(row[h])))),
  );
  if (values.out) {
    await Deno.writeTextFile(values.out, JSON.stringify(rows, null, 2));
  }
}
