/**
 * Telemetry: structured logging (JSON Lines on stdout), the metrics
 * registry and the service's metrics served at `/metrics`. It imports
 * nothing else of `lib/` but the log level type of `lib/config.ts`.
 *
 * @module
 */
export { configureLogging, errorMessage, LOG_CATEGORY } from "./logging.ts";
export { createServiceMetrics } from "./service_metrics.ts";
