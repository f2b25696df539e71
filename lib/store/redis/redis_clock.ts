/**
 * The clock probe of a Redis store: the fleet's clock is the Redis server's
 * (`TIME`; on a cluster, that of the master of `verve:windows`), read at
 * some moment of the round trip, which bounds the offset by the round trip.
 *
 * @module
 */
import { REDIS_WINDOWS_KEY } from "../keys.ts";
import {
  type ClockProbe,
  type ClockReading,
  offsetWithin,
} from "../clock_probe.ts";
import { RedisCommands } from "./commands.ts";
import type { RedisConnection } from "./connection.ts";

/** Options of {@link createRedisClockProbe}. */
export interface RedisClockProbeOptions {
  /** The time limit of the `TIME` command, in ms. */
  timeoutMs: number;
  /**
   * The local clock, in epoch ms.
   *
   * @default {Date.now}
   */
  clock?: () => number;
}

/**
 * Creates the clock probe of a Redis store.
 *
 * @example
 * ```ts
 * const probe = createRedisClockProbe(redis, { timeoutMs: 1000 });
 * const { offsetMs } = (await probe.read())!; // this clock minus Redis's
 * ```
 */
export function createRedisClockProbe(
  redis: RedisConnection,
  options: RedisClockProbeOptions,
): ClockProbe {
  const clock = options.clock ?? Date.now;
  // A read: nothing to wait for replicas for.
  const commands = new RedisCommands(redis, {
    timeoutMs: options.timeoutMs,
    waitReplicas: 0,
  });
  return {
    async read(): Promise<ClockReading> {
      const sent = clock();
      const reply = await commands.call(["TIME"], REDIS_WINDOWS_KEY);
      const answered = clock();
      const [seconds, micros] = reply as [string, string];
      const server = Number(seconds) * 1000 + Number(micros) / 1000;
      return {
        offsetMs: offsetWithin(sent - server, answered - server),
        errorMs: (answered - sent) / 2,
        reference: "redis",
      };
    },
    close: () => Promise.resolve(),
  };
}
