/**
 * The connection the Redis store sends its commands through, and what the
 * connections to one server (`server_connection.ts`) and to a cluster
 * (`cluster_connection.ts`) share: the socket's connect timeout and
 * reconnect strategy, and logging an outage once.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";

/** The part of a Redis client the store uses. */
export interface RedisConnection {
  /**
   * Sends one command, e.g. `["SCARD", key]`; on a cluster, to the master
   * of `key`'s slot (any node without a key).
   */
  sendCommand(args: string[], key?: string): Promise<unknown>;
  /**
   * The masters that hold the slots: 1 for one server; on a cluster, as
   * many as the client found when it last read the slots (0 before).
   */
  masters(): number;
  /** Closes the connection. */
  close(): Promise<void>;
}

/** How long one connection attempt may take, in ms. */
export const CONNECT_TIMEOUT_MS = 2000;

/**
 * The protocol options of every client: RESP2, the protocol the store was
 * built and measured on (`@redis/client` 6 defaults to RESP3; the store
 * reads either, and uses nothing RESP3 adds), and Redis Enterprise's
 * maintenance notifications off (they need RESP3, and would stretch
 * command timeouts to 10 s during maintenance, past `REDIS_TIMEOUT_MS`).
 */
export const PROTOCOL_OPTIONS = {
  RESP: 2,
  maintNotifications: "disabled",
} as const;

/** The socket options of every client: connect timeout, reconnect backoff. */
export const SOCKET_OPTIONS = {
  connectTimeout: CONNECT_TIMEOUT_MS,
  reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 2000),
};

/** What a client reports of its connections, logged once per outage. */
export interface ConnectionEvents {
  /** A connection failed or dropped. */
  onError(error: Error): void;
  /** A connection is ready. */
  onReady(): void;
  /** Whether any connection was ready yet. */
  readonly everReady: boolean;
}

/** Connection events that log the first error of an outage and its end. */
export function connectionEvents(logger: Logger): ConnectionEvents {
  let down = false;
  let everReady = false;
  return {
    onError(error) {
      if (down) return;
      down = true;
      logger.warn("Redis is unreachable: {error}", { error: error.message });
    },
    onReady() {
      everReady = true;
      if (down) logger.info("Redis is reachable again");
      down = false;
    },
    get everReady() {
      return everReady;
    },
  };
}
