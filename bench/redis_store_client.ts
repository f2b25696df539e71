/**
 * One store client of `bench/redis_store.ts`, run as a worker thread: it
 * takes a {@link Job}, records new ids with a Redis store of its own for
 * the job's seconds, and posts how many it recorded.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createRedisStore } from "../lib/store/redis/store_redis.ts";
import { openRedis } from "../lib/store/redis/open_redis.ts";

/** What the main thread asks a worker to do. */
export interface Job {
  urls: string[];
  cluster: boolean;
  shards: number | "auto";
  seconds: number;
  callers: number;
}

/** A random id as `bench/ids.lua` makes them: up to 18 digits. */
function randomId(): string {
  const high = 1 + Math.floor(Math.random() * 999_999_999);
  const low = Math.floor(Math.random() * 1_000_000_000);
  return `${high}${String(low).padStart(9, "0")}`;
}

/** In a worker: records new ids for `job.seconds`; how many it recorded. */
async function work(job: Job): Promise<number> {
  const store = createRedisStore(
    openRedis(job.urls, getLogger(["bench"]), {
      cluster: job.cluster,
      timeoutMs: 5000,
    }),
    {
      retentionMs: 3_600_000,
      shards: job.shards,
      timeoutMs: 5000,
      waitReplicas: job.cluster ? 1 : 0,
    },
  );
  const minute = Math.floor(Date.now() / 60_000) * 60_000;
  const until = performance.now() + job.seconds * 1000;
  let recorded = 0;
  await Promise.all(
    Array.from({ length: job.callers }, async () => {
      while (performance.now() < until) {
        if (await store.recordId(minute, randomId())) recorded++;
      }
    }),
  );
  await store.close();
  return recorded;
}

/** This module's global scope: a worker's. */
const scope = self as unknown as {
  onmessage: (event: MessageEvent<Job>) => void;
  postMessage(message: number): void;
  close(): void;
};
scope.onmessage = async (event) => {
  scope.postMessage(await work(event.data));
  scope.close();
};
