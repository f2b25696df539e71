/**
 * A local HTTP server for test doubles that go away and come back: on
 * 127.0.0.1, on a free port kept across restarts. A double that plays a
 * server that never answers holds its requests with {@link
 * RestartableServer.held}, which ends them when the server stops.
 *
 * @module
 */

/** A running (or stopped) server. */
export interface RestartableServer {
  /** The port, the same after every restart. */
  readonly port: number;
  /** Resolves when the server next stops: what a held request waits for. */
  held(): Promise<void>;
  /** Stops listening (connections are refused) until {@link start}. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): void;
}

/** Starts serving `handler` on 127.0.0.1 and a free port. */
export function serveRestartable(
  handler: (
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
): RestartableServer {
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let port = 0;
  let stopping = new AbortController();
  const restartable: RestartableServer = {
    get port() {
      return port;
    },
    held() {
      const { signal } = stopping;
      return new Promise((resolve) =>
        signal.addEventListener("abort", () => resolve(), { once: true })
      );
    },
    async stop() {
      if (!server) return;
      stopping.abort();
      stopping = new AbortController();
      await server.shutdown();
      server = undefined;
    },
    start() {
      if (server) return;
      server = Deno.serve(
        { hostname: "127.0.0.1", port, onListen() {} },
        handler,
      );
      port = server.addr.port;
    },
  };
  restartable.start();
  return restartable;
}
