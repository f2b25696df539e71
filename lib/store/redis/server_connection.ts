/**
 * A connection to one Redis server.
 *
 * @module
 */
import { createClient } from "@redis/client";
import {
  CONNECT_TIMEOUT_MS,
  type ConnectionEvents,
  PROTOCOL_OPTIONS,
  type RedisConnection,
  SOCKET_OPTIONS,
} from "./connection.ts";

/**
 * Opens a client of the server at `url` that fails commands at once while
 * disconnected and reconnects in the background. Until its first
 * connection, a command waits for it, up to the connect timeout.
 *
 * @param options.timeoutMs The client's own time limit of one command, in
 *   ms, so that a command the store gave up on leaves its queue too.
 */
export function openServerConnection(
  url: string,
  events: ConnectionEvents,
  options: { timeoutMs: number },
): RedisConnection {
  const client = createClient({
    ...PROTOCOL_OPTIONS,
    url,
    disableOfflineQueue: true,
    commandOptions: { timeout: options.timeoutMs },
    socket: SOCKET_OPTIONS,
  });
  client.on("error", events.onError);
  client.on("ready", events.onReady);
  client.connect().catch(() => {
    // Reported through the error event; the client keeps reconnecting.
  });

  /** Waiters for the first connection, ended early by `close()`. */
  const waiting = new Set<() => void>();

  /** Until the first connection, waits for it (up to the connect timeout). */
  function firstConnection(): Promise<void> {
    if (events.everReady) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        client.off("ready", done);
        waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, CONNECT_TIMEOUT_MS);
      client.on("ready", done);
      waiting.add(done);
    });
  }

  return {
    async sendCommand(args) {
      await firstConnection();
      return await client.sendCommand(args);
    },
    masters: () => 1,
    async close() {
      for (const done of waiting) done();
      if (client.isReady) await client.close();
      else client.destroy();
    },
  };
}
