/**
 * Reports: the reporter (claims a closed window, counts it, puts its report
 * in the outbox once per sink), the outbox delivery (hands each report to
 * its sinks, in order per sink, with retries), the window timer for windows
 * other than a minute, the `Sink` interface, and the sinks in `sinks/` with
 * the webhook sink's address policy and POST beside it. It may import
 * `lib/store/` (the interfaces only), `lib/telemetry/`, `lib/minute.ts` and
 * `lib/backoff.ts`.
 *
 * @module
 */
export { createReporter } from "./reporter.ts";
export type { MinuteReport, Sink } from "./sink.ts";
export { startWindowTimer } from "./window_timer.ts";
export {
  createAddressPolicy,
  createKafkaRestSink,
  createKafkaSink,
  createLogSink,
  createWebhookPost,
  createWebhookSink,
} from "./sinks/mod.ts";
