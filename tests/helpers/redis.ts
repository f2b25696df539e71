/**
 * A real `redis-server` (Debian package `redis-server`) on a free port in a
 * temporary directory, for tests. Where it is not installed, Redis tests are
 * skipped with a message, except under `CI=true`, where they fail.
 *
 * @module
 */

/** Whether `redis-server` can be run here. */
export const REDIS_AVAILABLE = await (async () => {
  try {
    const { success } = await new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
})();

/**
 * `ignore` for `Deno.test` of Redis tests: skips them, saying why, where
 * redis-server is missing, unless `CI=true`.
 */
export function skipWithoutRedis(): boolean {
  if (REDIS_AVAILABLE || Deno.env.get("CI") === "true") return false;
  console.warn(
    "redis-server is not installed, skipping Redis tests; install it with: apt-get install redis-server",
  );
  return true;
}

/** A running redis-server. */
export interface RedisServer extends AsyncDisposable {
  url: string;
  port: number;
  /** Stops the server (kept data is lost; it runs without persistence). */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
}

/**
 * Starts redis-server on 127.0.0.1 and a free port, without persistence, and
 * with `password` required when given.
 */
export async function startRedis(
  options: { password?: string } = {},
): Promise<RedisServer> {
  const dir = await Deno.makeTempDir({ prefix: "verve-redis-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
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
        "--appendonly",
        "no",
        "--dir",
        dir,
        ...(options.password ? ["--requirepass", options.password] : []),
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
