/**
 * A real `redis-server` (Debian package `redis-server`) on a free port in a
 * temporary directory, for tests. Where it is not installed, Redis tests are
 * skipped with a message, except under `CI=true`, where they fail.
 *
 * @module
 */
import { freePort, programRuns, skipUnless } from "./requirements.ts";

/** Whether `redis-server` can be run here. */
export const REDIS_AVAILABLE = await programRuns("redis-server", ["--version"]);

/** `ignore` for `Deno.test` of Redis tests (see {@link skipUnless}). */
export function skipWithoutRedis(): boolean {
  return skipUnless(REDIS_AVAILABLE, "redis-server", "redis-server");
}

/** A running redis-server. */
export interface RedisServer extends AsyncDisposable {
  url: string;
  port: number;
  /** Stops the server (kept data is lost unless it writes an append-only file). */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
}

/**
 * Starts redis-server on 127.0.0.1 and a free port, with `password` required
 * when given. Without `appendFsync` it keeps nothing on disk; with it, it
 * writes an append-only file and syncs it `always` (before answering each
 * write) or `everysec`. With `replicaOf`, it replicates the server on that
 * port.
 */
export async function startRedis(
  options: {
    password?: string;
    appendFsync?: "always" | "everysec";
    replicaOf?: number;
  } = {},
): Promise<RedisServer> {
  const dir = await Deno.makeTempDir({ prefix: "verve-redis-" });
  const port = freePort();
  let child: Deno.ChildProcess | undefined;

  async function start() {
    child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        ...(options.appendFsync
          ? ["--appendonly", "yes", "--appendfsync", options.appendFsync]
          : ["--appendonly", "no"]),
        "--dir",
        dir,
        ...(options.password ? ["--requirepass", options.password] : []),
        ...(options.replicaOf
          ? ["--replicaof", "127.0.0.1", String(options.replicaOf)]
          : []),
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let i = 0; i < 100; i++) {
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        conn.close();
        return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    throw new Error(`redis-server did not start on port ${port}`);
  }

  async function stop() {
    if (!child) return;
    child.kill("SIGKILL");
    await child.status;
    child = undefined;
  }

  await start();
  return {
    url: options.password
      ? `redis://:${encodeURIComponent(options.password)}@127.0.0.1:${port}`
      : `redis://127.0.0.1:${port}`,
    port,
    stop,
    start,
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
