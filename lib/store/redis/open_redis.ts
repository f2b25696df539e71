/**
 * Opening the Redis connection the settings ask for: one server, or a
 * Redis Cluster.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { openClusterConnection } from "./cluster_connection.ts";
import { connectionEvents, type RedisConnection } from "./connection.ts";
import { openServerConnection } from "./server_connection.ts";

/** Options of {@link openRedis}. */
export interface OpenRedisOptions {
  /**
   * `urls` are seed nodes of a Redis Cluster.
   * @default {false}
   */
  cluster?: boolean;
  /**
   * The time limit of one command, in ms; past it, on a cluster, the client
   * looks for the slot's new master.
   * @default {1000}
   */
  timeoutMs?: number;
}

/**
 * Opens a Redis client that fails commands at once while disconnected,
 * instead of queueing them, and reconnects in the background: to `urls[0]`
 * (`redis://` or `rediss://`, with user and password if any), or with
 * `cluster`, to the Redis Cluster that the seed nodes `urls` belong to, with
 * the first URL's credentials and TLS for every node. Connection errors are
 * logged, at most once per outage.
 *
 * @example
 * ```ts
 * const redis = openRedis(["redis://127.0.0.1:6379"], logger);
 * await redis.sendCommand(["PING"]); // "PONG"
 * ```
 */
export function openRedis(
  urls: string[],
  logger: Logger,
  options: OpenRedisOptions = {},
): RedisConnection {
  const events = connectionEvents(logger);
  return options.cluster
    ? openClusterConnection(urls, events, {
      timeoutMs: options.timeoutMs ?? 1000,
    })
    : openServerConnection(urls[0]!, events, {
      timeoutMs: options.timeoutMs ?? 1000,
    });
}
