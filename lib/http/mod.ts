/**
 * HTTP: the request handler (routes, the accept endpoint's answers, probes,
 * `/metrics`, the stats API), the query parser, the stats it serves and the
 * status page. It may import `lib/store/` (the store interfaces only),
 * `lib/telemetry/`, `lib/minute.ts` and, for refusing undeliverable webhook
 * URLs at request time, nothing but the callback it is given.
 *
 * @module
 */
export { createHandler, type HandlerOptions } from "./handler.ts";
export { collectStats } from "./stats.ts";
export { STATUS_PAGE_HTML } from "./status_page.ts";
