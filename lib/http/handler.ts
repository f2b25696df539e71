/**
 * The HTTP handler: routing, the accept endpoint, and the one place where
 * errors become responses.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { type AcceptQuery, parseAcceptQuery } from "./accept_query.ts";
import { METRICS_CONTENT_TYPE } from "../telemetry/metrics.ts";
import { formatMinute, windowStart } from "../minute.ts";
import { withinTime } from "../time_limit.ts";
import type { ServiceMetrics } from "../telemetry/service_metrics.ts";
import { parseStatsMinutes } from "./stats.ts";
import {
  type IdWaiter,
  MAX_WINDOW_MOVES,
  type Store,
  StoreUnavailableError,
  WindowClosedError,
} from "../store/store.ts";

/** The path of the accept endpoint. */
export const ACCEPT_PATH = "/api/verve/accept";

/** Options of {@link createHandler}. */
export interface HandlerOptions {
  /** Where ids and URLs are recorded. */
  store: Store;
  /** Where unexpected errors are logged. */
  logger: Logger;
  /** The current time in epoch ms. Default: `Date.now`. */
  clock?: () => number;
  /** The window length in ms. Default: 60 000. */
  windowMs?: number;
  /**
   * Names the window in the `verve-window` header of every `ok` answer.
   * Default: `false`, only of an answer whose id counts in a later window
   * than the one the request arrived in.
   */
  windowHeader?: boolean;
  /** How long `/readyz` waits for the store, in ms. Default: 1000. */
  readyTimeoutMs?: number;
  /**
   * Refuses a webhook URL at request time (400): returns why, or
   * `undefined` to accept it. Default: every valid URL is accepted.
   */
  refuseUrl?: (url: string) => string | undefined;
  /** Metrics to count requests in and to serve at `/metrics`. */
  metrics?: ServiceMetrics;
  /** Serves `/api/verve/stats?minutes=N` with what this returns. */
  stats?: (minutes: number) => Promise<unknown>;
  /** Serves this HTML at `/`. */
  statusPage?: string;
}

/** The path of the recent history as JSON. */
export const STATS_PATH = "/api/verve/stats";

/** The path of the status page. */
export const STATUS_PATH = "/";

/** The path of the metrics in Prometheus text format. */
export const METRICS_PATH = "/metrics";

/** The liveness probe's path: answers while the process runs. */
export const HEALTH_PATH = "/healthz";

/** The readiness probe's path: answers 200 while the store answers. */
export const READY_PATH = "/readyz";

const TEXT = "text/plain; charset=utf-8";
/**
 * The init of an `ok` answer without the window: Deno copies the init, so
 * one object serves, and answers fastest with one header.
 */
const OK_INIT: ResponseInit = { headers: { "content-type": TEXT } };
/** The header of an `ok` answer that names the window the id counts in. */
export const WINDOW_HEADER = "verve-window";

/** A request the client got wrong, or the service could not serve. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(body);
  }
}

/** A route: its label in the metrics, and what serves it. */
interface Route {
  name: string;
  /** Answers a `GET` or `HEAD`; `query` is the raw query string. */
  serve(method: string, query: string): Response | Promise<Response>;
}

function respond(
  method: string,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(method === "HEAD" ? null : body, {
    status,
    headers: { "content-type": TEXT, ...headers },
  });
}

/**
 * Creates the service's request handler, for `Deno.serve`.
 *
 * `GET /api/verve/accept?id=<int>&url=<optional>` answers `200 ok` once the
 * id is durably recorded for the window in which the request arrived, by
 * `clock`. Where that window is already reported (another instance's clock
 * is ahead of this one's), the id counts in the next window, as does every
 * later request until this clock reaches it, and the answer names that
 * window in its `verve-window` header (every answer does with
 * `windowHeader`). `400 failed` for a bad query; `429 failed` when the
 * window already holds its maximum of webhook URLs (the id is then not
 * recorded); `503 failed` when the store cannot record it.
 *
 * @example
 * ```ts
 * Deno.serve(createHandler({ store, logger }));
 * ```
 */
export function createHandler(
  options: HandlerOptions,
): (request: Request) => Response | Promise<Response> {
  const {
    store,
    logger,
    clock = Date.now,
    windowMs = 60_000,
    windowHeader = false,
    readyTimeoutMs = 1000,
    refuseUrl,
    metrics,
    stats,
    statusPage,
  } = options;

  /** 200 `ready` when the store answers within the time limit, else 503. */
  async function ready(method: string): Promise<Response> {
    const answered = await withinTime(
      store.ping(),
      readyTimeoutMs,
      () => new Error("no answer"),
    ).then(() => true, () => false);
    return answered
      ? respond(method, 200, "ready")
      : respond(method, 503, "not ready");
  }

  /** The counters of requests, and the values accepted ids add to. */
  const counts = metrics && {
    requests: metrics.httpRequests,
    new: metrics.ids.labels(["new"]),
    repeat: metrics.ids.labels(["repeat"]),
    moved: metrics.idsMoved.labels([]),
    acceptOk: metrics.httpRequests.labels(["accept", "200"]),
  };

  /** Counts an accepted id, and one counted in a later window than named. */
  function countId(outcome: "new" | "repeat", moved: boolean): void {
    if (counts === undefined) return;
    counts[outcome].inc();
    if (moved) counts.moved.inc();
  }

  /** The latest window this instance found already reported. */
  let reportedThrough = -Infinity;

  /** The init of the `ok` answers that name one window. */
  let okMinute = NaN;
  let okInit: ResponseInit = {};
  /** An `ok` answer; it names `minute` when asked to, or when it was moved. */
  function ok(minute: number, named: number): Response {
    if (!windowHeader && minute === named) return new Response("ok", OK_INIT);
    if (minute !== okMinute) {
      okMinute = minute;
      okInit = {
        headers: {
          "content-type": TEXT,
          [WINDOW_HEADER]: formatMinute(minute),
        },
      };
    }
    return new Response("ok", okInit);
  }

  /**
   * What a request for a new id without a URL waits for: the one object its
   * answer takes besides its promise, which it settles with the answer.
   */
  class Answer implements IdWaiter {
    constructor(
      readonly answer: (response: Response | Promise<Response>) => void,
      readonly named: number,
      readonly minute: number,
    ) {}

    resolve(recorded: boolean): void {
      countId(recorded ? "new" : "repeat", this.minute !== this.named);
      this.answer(ok(this.minute, this.named));
    }

    reject(error: Error, id: string): void {
      if (!(error instanceof WindowClosedError)) {
        return this.answer(Promise.reject(error));
      }
      // Reported already: the next window, as `record` moves.
      reportedThrough = Math.max(reportedThrough, this.minute);
      this.answer(record(this.named, reportedThrough + windowMs, { id }, 1));
    }
  }

  /**
   * The accept endpoint. An id without a URL that this instance already
   * knows in the current window, or that a buffered store takes at once, is
   * answered without a promise, so repeat traffic costs a parse and a
   * lookup, and buffered traffic a queue entry more; any other waits for its
   * commit through one promise and one {@link Answer}.
   */
  function accept(query: string): Response | Promise<Response> {
    const named = windowStart(clock(), windowMs);
    const minute = named > reportedThrough ? named : reportedThrough + windowMs;
    const parsed = parseAcceptQuery(query);
    if (parsed === undefined) throw new HttpError(400, "failed");
    if (parsed.url === undefined) {
      // Known here, or taken at once by a buffered store: no promise.
      const id = parsed.id;
      const taken = store.takeId(minute, id);
      if (taken !== undefined) {
        countId(taken, minute !== named);
        return ok(minute, named);
      }
      return new Promise((answer) =>
        store.queueId(minute, id, new Answer(answer, named, minute))
      );
    }
    if (parsed.url !== undefined && refuseUrl?.(parsed.url) !== undefined) {
      throw new HttpError(400, "failed");
    }
    return record(named, minute, parsed);
  }

  /**
   * Records the URL and the id in `minute`, or in the next window where
   * that one is found reported; `named` is the window the clock named, and
   * `moved` the windows moved already.
   */
  async function record(
    named: number,
    minute: number,
    query: AcceptQuery,
    moved = 0,
  ): Promise<Response> {
    for (let moves = moved;; moves++) {
      try {
        if (query.url !== undefined) {
          const outcome = await store.recordUrl(minute, query.url);
          if (outcome === "full") throw new HttpError(429, "failed");
        }
        const recorded = await store.recordId(minute, query.id);
        countId(recorded ? "new" : "repeat", minute !== named);
        return ok(minute, named);
      } catch (error) {
        if (
          !(error instanceof WindowClosedError) || moves >= MAX_WINDOW_MOVES
        ) {
          throw error;
        }
        reportedThrough = Math.max(reportedThrough, minute);
        minute = reportedThrough + windowMs;
      }
    }
  }

  /** Every route served, by path: its metrics label and what serves it. */
  const routes = new Map<string, Route>([
    [ACCEPT_PATH, {
      name: "accept",
      serve: async (method, query) => {
        const response = await accept(query);
        return method === "HEAD"
          ? new Response(null, { headers: response.headers })
          : response;
      },
    }],
    [HEALTH_PATH, {
      name: "healthz",
      serve: (method) => respond(method, 200, "ok"),
    }],
    [READY_PATH, { name: "readyz", serve: ready }],
  ]);
  if (metrics !== undefined) {
    routes.set(METRICS_PATH, {
      name: "metrics",
      serve: (method) =>
        new Response(method === "HEAD" ? null : metrics.registry.render(), {
          headers: { "content-type": METRICS_CONTENT_TYPE },
        }),
    });
  }
  if (stats !== undefined) {
    routes.set(STATS_PATH, {
      name: "stats",
      serve: async (method, query) => {
        const minutes = parseStatsMinutes(query);
        if (minutes === undefined) throw new HttpError(400, "failed");
        return new Response(
          method === "HEAD" ? null : JSON.stringify(await stats(minutes)),
          {
            headers: {
              "content-type": "application/json",
              "cache-control": "no-store",
            },
          },
        );
      },
    });
  }
  if (statusPage !== undefined) {
    routes.set(STATUS_PATH, {
      name: "status",
      serve: (method) =>
        new Response(method === "HEAD" ? null : statusPage, {
          headers: {
            "content-type": "text/html; charset=utf-8",
            "content-security-policy":
              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
          },
        }),
    });
  }

  function route(
    method: string,
    path: string,
    query: string,
  ): Response | Promise<Response> {
    const found = routes.get(path);
    if (found === undefined) throw new HttpError(404, "not found");
    if (method !== "GET" && method !== "HEAD") {
      throw new HttpError(405, "method not allowed", { allow: "GET, HEAD" });
    }
    return found.serve(method, query);
  }

  function counted(path: string, response: Response): Response {
    if (counts === undefined) return response;
    const status = response.status;
    if (path === ACCEPT_PATH && status === 200) {
      counts.acceptOk.inc();
    } else {
      const name = routes.get(path)?.name ?? "other";
      counts.requests.inc([name, String(status)]);
    }
    return response;
  }

  return function handle(request: Request): Response | Promise<Response> {
    const method = request.method;
    let path = "";
    let response: Response | Promise<Response>;
    try {
      const url = request.url;
      const pathStart = url.indexOf("/", url.indexOf("//") + 2);
      const queryStart = url.indexOf("?", pathStart);
      path = queryStart < 0
        ? url.slice(pathStart)
        : url.slice(pathStart, queryStart);
      const query = queryStart < 0 ? "" : url.slice(queryStart + 1);
      response = path === ACCEPT_PATH && method === "GET"
        ? accept(query)
        : route(method, path, query);
    } catch (error) {
      response = errorResponse(method, error, logger);
    }
    if (response instanceof Response) return counted(path, response);
    return response.then(
      (answer) => counted(path, answer),
      (error) => counted(path, errorResponse(method, error, logger)),
    );
  };
}

/** Maps any error thrown while handling a request to its response. */
function errorResponse(
  method: string,
  error: unknown,
  logger: Logger,
): Response {
  if (error instanceof HttpError) {
    return respond(method, error.status, error.body, error.headers);
  }
  if (
    error instanceof StoreUnavailableError || error instanceof WindowClosedError
  ) {
    logger.warn("Request not recorded: {error}", { error: error.message });
    return respond(method, 503, "failed");
  }
  logger.error("Unexpected error while handling a request: {error}", {
    error: error instanceof Error
      ? (error.stack ?? error.message)
      : String(error),
  });
  return respond(method, 500, "failed");
}
