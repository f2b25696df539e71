/**
 * Where reports go: the log, webhooks (with the address policy that keeps
 * them away from internal addresses, and the POST that connects only to an
 * address the policy passed), a Kafka REST proxy, and Kafka directly. It may
 * import `lib/report/sink.ts`, `lib/telemetry/` and `lib/backoff.ts`.
 *
 * @module
 */
export { createLogSink } from "./log.ts";
export { createWebhookSink } from "./webhook.ts";
export { createWebhookPost } from "./webhook_post.ts";
export { createAddressPolicy } from "./address_policy.ts";
export { createKafkaRestSink } from "./kafka_rest.ts";
export { createKafkaSink } from "./kafka.ts";
