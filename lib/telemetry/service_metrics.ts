/**
 * The service's metrics, served at `GET /metrics`.
 *
 * @module
 */
import {
  type Counter,
  type Gauge,
  type Histogram,
  Registry,
} from "./metrics.ts";

/** Every metric the service keeps. */
export interface ServiceMetrics {
  registry: Registry;
  /** Requests by route (`accept`, `healthz`, …, `other`) and HTTP status. */
  httpRequests: Counter;
  /** Accepted ids by outcome: `new` or `repeat`. */
  ids: Counter;
  /** Seconds per store commit of a batch of ids. */
  commitSeconds: Histogram;
  /** Ids per store commit. */
  batchSize: Histogram;
  /** Store commits that failed. */
  storeErrors: Counter;
  /** Commits of ids that another instance's commit beat to their partition. */
  storeConflicts: Counter;
  /** New ids refused because their window's memory is full. */
  idsRefused: Counter;
  /** Report deliveries by sink and outcome (`delivered`, `retry`, `dropped`). */
  reports: Counter;
  /** Reports waiting in the outbox by sink, as last seen by this instance. */
  outboxDepth: Gauge;
  /** Webhook POSTs by outcome and status class (`2xx` … `5xx`, `none`). */
  webhookDeliveries: Counter;
  /** Ids counted in a later window than this clock named: theirs was reported. */
  idsMoved: Counter;
  /** This instance's clock minus the fleet's, in seconds, as last read. */
  clockSkew: Gauge;
}

/** Creates the service's metrics in a new registry. */
export function createServiceMetrics(): ServiceMetrics {
  const registry = new Registry();
  return {
    registry,
    httpRequests: registry.counter(
      "verve_http_requests_total",
      "HTTP requests by route and status.",
      ["route", "status"],
    ),
    ids: registry.counter(
      "verve_ids_total",
      "Accepted ids by outcome: new in their window, or a repeat.",
      ["outcome"],
    ),
    commitSeconds: registry.histogram(
      "verve_store_commit_seconds",
      "Seconds per store commit of a batch of ids.",
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    ),
    batchSize: registry.histogram(
      "verve_store_batch_size",
      "Ids per store commit.",
      [1, 2, 5, 10, 20, 50, 100, 200, 500],
    ),
    storeErrors: registry.counter(
      "verve_store_errors_total",
      "Store commits of ids that failed.",
    ),
    storeConflicts: registry.counter(
      "verve_store_conflicts_total",
      "Commits of ids, and claims of a window opened ahead, that another instance's commit beat to their partition's head.",
    ),
    idsRefused: registry.counter(
      "verve_ids_refused_total",
      "New ids answered 503 because their window holds KV_MAX_WINDOW_IDS ids in memory.",
    ),
    reports: registry.counter(
      "verve_reports_total",
      "Report deliveries by sink and outcome.",
      ["sink", "outcome"],
    ),
    outboxDepth: registry.gauge(
      "verve_outbox_depth",
      "Reports waiting in the outbox, by sink.",
      ["sink"],
    ),
    webhookDeliveries: registry.counter(
      "verve_webhook_deliveries_total",
      "Webhook POSTs by outcome and HTTP status class.",
      ["outcome", "status_class"],
    ),
    idsMoved: registry.counter(
      "verve_ids_moved_total",
      "Ids counted in the next window because the window this instance's clock named was already reported.",
    ),
    clockSkew: registry.gauge(
      "verve_clock_skew_seconds",
      "This instance's clock minus the fleet's (Redis's, or the median of the instances' on Deno KV), in seconds, as last read.",
    ),
  };
}
