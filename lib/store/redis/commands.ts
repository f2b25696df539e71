/**
 * The commands of the Redis store on a connection: each within the time
 * limit, any failure {@link StoreUnavailableError}; scripts sent by their
 * digest (`EVALSHA`), and in full once to a node that does not know them;
 * and, with `waitReplicas`, every write followed by `WAIT` for the replicas
 * its master has (read with `ROLE`, trusted for
 * {@link REPLICA_COUNT_TTL_MS}, so a master left without replicas is not
 * asked to `WAIT` for one on every write).
 *
 * @module
 */
import { withinTime } from "../../time_limit.ts";
import { StoreUnavailableError } from "../store.ts";
import type { RedisConnection } from "./connection.ts";
import type { Script } from "./scripts.ts";
import { hashTag } from "./slots.ts";

/** How long a master's count of connected replicas (`ROLE`) is trusted. */
export const REPLICA_COUNT_TTL_MS = 1000;

/** Options of {@link RedisCommands}. */
export interface RedisCommandsOptions {
  /** The time limit of one command, in ms. */
  timeoutMs: number;
  /**
   * Replicas that must have each write before it counts (Redis `WAIT`,
   * within half the time limit); fewer fail the write as unavailable.
   */
  waitReplicas: number;
}

/** Sends the store's commands, scripts and writes on a connection. */
export class RedisCommands {
  readonly #redis: RedisConnection;
  readonly #timeoutMs: number;
  readonly #waitReplicas: number;
  /** Connected replicas of the master of each hash tag, and when read. */
  readonly #replicaCounts = new Map<string, { count: number; at: number }>();

  /** @param redis The connection; closed by {@link RedisCommands.close}. */
  constructor(redis: RedisConnection, options: RedisCommandsOptions) {
    this.#redis = redis;
    this.#timeoutMs = options.timeoutMs;
    this.#waitReplicas = options.waitReplicas;
  }

  /** The masters that hold the slots (see {@link RedisConnection.masters}). */
  masters(): number {
    return this.#redis.masters();
  }

  /** Closes the connection. */
  close(): Promise<void> {
    return this.#redis.close();
  }

  /**
   * Runs `script` on `keys` (all of one slot) by its digest, and in full
   * where the node does not know it yet; then waits for the replicas. The
   * first key routes the call.
   */
  async run(
    { source, sha }: Script,
    keys: string[],
    args: string[],
  ): Promise<unknown> {
    const rest = [String(keys.length), ...keys, ...args];
    let result: unknown;
    try {
      result = await this.call(["EVALSHA", sha, ...rest], keys[0]);
    } catch (error) {
      const cause = (error as Error).cause;
      if (!(cause instanceof Error && cause.message.startsWith("NOSCRIPT"))) {
        throw error;
      }
      result = await this.call(["EVAL", source, ...rest], keys[0]);
    }
    await this.#replicated(keys[0]!);
    return result;
  }

  /** Sends a single-key write (its key is `args[1]`), then waits for the replicas. */
  async write(args: string[]): Promise<unknown> {
    const result = await this.call(args, args[1]);
    await this.#replicated(args[1]!);
    return result;
  }

  /**
   * With `waitReplicas`, waits until that many replicas have the writes made
   * so far on `key`'s connection (Redis `WAIT`), within half the time limit;
   * fewer when `key`'s master has fewer replicas connected, and none (no
   * `WAIT` at all) when it has none.
   */
  async #replicated(key: string): Promise<void> {
    if (this.#waitReplicas === 0) return;
    const needed = Math.min(this.#waitReplicas, await this.#replicaCount(key));
    if (needed === 0) return;
    const acknowledged = Number(
      await this.call(
        [
          "WAIT",
          String(needed),
          String(Math.max(1, Math.floor(this.#timeoutMs / 2))),
        ],
        key,
      ),
    );
    if (acknowledged >= needed) return;
    // A replica may have gone since the count was read: all the master has
    // now must have the write.
    const left = await this.#replicaCount(key, { fresh: true });
    if (acknowledged < Math.min(this.#waitReplicas, left)) {
      throw new StoreUnavailableError(
        `Redis write reached ${acknowledged} of ${this.#waitReplicas} replicas in time`,
      );
    }
  }

  /**
   * How many replicas `key`'s master has connected, from `ROLE`, read again
   * once {@link REPLICA_COUNT_TTL_MS} passed or when `fresh`.
   */
  async #replicaCount(
    key: string,
    options: { fresh?: boolean } = {},
  ): Promise<number> {
    const tag = hashTag(key);
    const now = performance.now();
    const known = this.#replicaCounts.get(tag);
    if (!options.fresh && known && now - known.at < REPLICA_COUNT_TTL_MS) {
      return known.count;
    }
    const role = await this.call(["ROLE"], key) as unknown[];
    const count = Array.isArray(role[2]) ? role[2].length : 0;
    if (this.#replicaCounts.size >= 64) {
      // Tags come and go with their windows: drop the ones read long ago.
      for (const [old, { at }] of this.#replicaCounts) {
        if (now - at >= REPLICA_COUNT_TTL_MS) this.#replicaCounts.delete(old);
      }
    }
    this.#replicaCounts.set(tag, { count, at: now });
    return count;
  }

  /**
   * Sends a command, routed by `key` on a cluster, within the time limit;
   * any failure is unavailability.
   */
  async call(args: string[], key?: string): Promise<unknown> {
    try {
      return await withinTime(
        this.#redis.sendCommand(args, key),
        this.#timeoutMs,
        () => new Error(`timed out after ${this.#timeoutMs} ms`),
      );
    } catch (error) {
      throw new StoreUnavailableError(
        `Redis ${args[0]} failed: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
}
