/**
 * A connection to a Redis Cluster: commands go to the master of their key's
 * slot. Connecting and every command are bounded in time, and a command
 * that fails or runs out of time makes the client ask the cluster for its
 * slots again, so a failover is followed even when the old master's host
 * vanished without closing its connections.
 *
 * @module
 */
import { createCluster } from "@redis/client";
import { withinTime } from "../../time_limit.ts";
import {
  CONNECT_TIMEOUT_MS,
  type ConnectionEvents,
  PROTOCOL_OPTIONS,
  type RedisConnection,
  SOCKET_OPTIONS,
} from "./connection.ts";

/** The shortest time between two slot discoveries, in ms. */
const REDISCOVER_INTERVAL_MS = 500;

/**
 * Opens a client of the cluster that the seed nodes `urls` belong to, with
 * the first URL's credentials and TLS for every node.
 *
 * @param options.timeoutMs The time limit of one command, in ms.
 */
export function openClusterConnection(
  urls: string[],
  events: ConnectionEvents,
  options: { timeoutMs: number },
): RedisConnection {
  const first = new URL(urls[0]!);
  const create = () => {
    const cluster = createCluster({
      RESP: PROTOCOL_OPTIONS.RESP,
      commandOptions: { timeout: options.timeoutMs },
      rootNodes: urls.map((url) => ({ url })),
      defaults: {
        disableOfflineQueue: true,
        maintNotifications: PROTOCOL_OPTIONS.maintNotifications,
        ...(first.username
          ? { username: decodeURIComponent(first.username) }
          : {}),
        ...(first.password
          ? { password: decodeURIComponent(first.password) }
          : {}),
        socket: {
          ...SOCKET_OPTIONS,
          ...(first.protocol === "rediss:" ? { tls: true } : {}),
        },
      },
    });
    cluster.on("error", events.onError);
    cluster.on("node-error", events.onError);
    cluster.on("node-ready", events.onReady);
    return cluster;
  };
  let cluster = create();
  /** Whether `cluster` knows the slots and has its connections. */
  let ready = false;
  /** A connection attempt under way; the first may fail, so may others. */
  let connecting: Promise<void> | undefined;

  /**
   * Connects within twice the connect timeout. A master that does not
   * answer keeps the client connecting for as long as it is away (its
   * replica may take over meanwhile), so past the limit the client is
   * dropped and the next command starts a fresh one.
   */
  const connect = () =>
    connecting ??= (async () => {
      const attempt = cluster.connect();
      const connected = await withinTime(
        attempt.then(() => true),
        2 * CONNECT_TIMEOUT_MS,
        () => new Error("connecting timed out"),
      ).catch((error: Error) => {
        events.onError(error);
        return false;
      });
      if (connected) {
        ready = true;
        events.onReady();
        return;
      }
      attempt.catch(() => {
        // The client is dropped: its attempt ends with it.
      });
      cluster.destroy();
      cluster = create();
    })().finally(() => connecting = undefined);
  void connect();

  let lastDiscovery = 0;
  /**
   * Asks the cluster for its slots again. The client does so by itself on
   * `MOVED`, but a master that died answers nothing (or not at all, when
   * its host is gone), so after a failover its slots would stay with it.
   */
  const rediscover = () => {
    const now = Date.now();
    if (now - lastDiscovery < REDISCOVER_INTERVAL_MS) return;
    lastDiscovery = now;
    const slots = (cluster as unknown as {
      _slots?: { rediscover?(startWith: unknown): Promise<void> };
    })._slots;
    const anyNode = cluster.masters[0]?.client ?? cluster.replicas[0]?.client;
    if (!slots?.rediscover || !anyNode) return;
    slots.rediscover(anyNode).catch(() => {
      // Tried again after the next failure.
    });
  };

  return {
    async sendCommand(args, key) {
      if (!ready) await connect();
      if (!ready) throw new Error("no node of the Redis Cluster answers");
      try {
        return await withinTime(
          key !== undefined && !args.includes(key)
            // A keyless command meant for `key`'s master (`WAIT`, `ROLE`),
            // on the connection its writes took: by itself the client
            // routes keyless commands by their command policy, not by the
            // key (`WAIT` to every master, answering the fewest replicas;
            // `ROLE` to any node).
            ? cluster.getNodeClientForKey(key).then((client) =>
              client.sendCommand(args)
            )
            : cluster.sendCommand(key, false, args),
          options.timeoutMs,
          () => new Error(`timed out after ${options.timeoutMs} ms`),
        );
      } catch (error) {
        rediscover();
        throw error;
      }
    },
    masters: () => ready ? cluster.masters.length : 0,
    async close() {
      await connecting;
      if (ready && cluster.isOpen) await cluster.close();
      else cluster.destroy();
    },
  };
}
