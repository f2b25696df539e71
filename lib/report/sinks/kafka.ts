/**
 * The direct Kafka sink: produces each report as one record with kafkajs,
 * for self-hosted instances that may open TCP connections to the brokers.
 * One idempotent producer, connected on first use and reused; the record key
 * is the window start.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import {
  Kafka,
  type KafkaConfig,
  logLevel,
  Partitioners,
  type Producer,
  type SASLOptions,
} from "kafkajs";
import {
  type MinuteReport,
  PermanentSinkError,
  type SendOutcome,
  type Sink,
} from "../sink.ts";

/** Options of {@link createKafkaSink}. */
export interface KafkaSinkOptions {
  /** Bootstrap brokers, e.g. `["kafka-1:9092"]`. */
  brokers: string[];
  /** The topic. */
  topic: string;
  /** The client id the brokers see. Default: `verve`. */
  clientId?: string;
  /** Connect with TLS. Default: false. */
  ssl?: boolean;
  /** SASL authentication. */
  sasl?: {
    mechanism: "plain" | "scram-sha-256" | "scram-sha-512";
    username: string;
    password: string;
  };
  /** The time limit of connecting and of one request, in ms. Default: 10 000. */
  timeoutMs?: number;
  /** Where the client's own warnings go. */
  logger: Logger;
}

/** A Kafka sink, which holds a connection until closed. */
export interface KafkaSink extends Sink {
  /** Disconnects the producer. */
  close(): Promise<void>;
}

/** kafkajs error types that no retry will fix. */
const PERMANENT = new Set([
  "UNKNOWN_TOPIC_OR_PARTITION",
  "TOPIC_AUTHORIZATION_FAILED",
  "CLUSTER_AUTHORIZATION_FAILED",
  "SASL_AUTHENTICATION_FAILED",
  "INVALID_TOPIC_EXCEPTION",
  "MESSAGE_TOO_LARGE",
  "INVALID_REQUIRED_ACKS",
]);

/**
 * Creates the sink. `send` resolves once the brokers acknowledged the record
 * (all in-sync replicas), throws {@link PermanentSinkError} for an unknown
 * topic or refused credentials, and a plain `Error` for the rest.
 *
 * @example
 * ```ts
 * const sink = createKafkaSink({ brokers: ["localhost:9092"], topic: "unique-ids", logger });
 * ```
 */
export function createKafkaSink(options: KafkaSinkOptions): KafkaSink {
  const { topic, timeoutMs = 10_000, logger } = options;
  const config: KafkaConfig = {
    clientId: options.clientId ?? "verve",
    brokers: options.brokers,
    ssl: options.ssl ?? false,
    connectionTimeout: timeoutMs,
    requestTimeout: timeoutMs,
    retry: { retries: 2 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ level, log }) => {
      if (level <= logLevel.WARN) {
        logger.warn("kafkajs: {message}", { message: log.message });
      }
    },
  };
  if (options.sasl) config.sasl = options.sasl as SASLOptions;
  const kafka = new Kafka(config);
  let idempotent = true;
  let producer: Producer | undefined;
  let connecting: Promise<Producer> | undefined;

  function connected(): Promise<Producer> {
    connecting ??= (async () => {
      const created = kafka.producer({
        idempotent,
        maxInFlightRequests: idempotent ? 1 : 5,
        allowAutoTopicCreation: false,
        createPartitioner: Partitioners.DefaultPartitioner,
      });
      try {
        await created.connect();
      } catch (error) {
        connecting = undefined;
        throw error;
      }
      producer = created;
      return created;
    })();
    return connecting;
  }

  async function reset(): Promise<void> {
    const old = producer;
    producer = undefined;
    connecting = undefined;
    await old?.disconnect().catch(() => {});
  }

  async function produce(report: MinuteReport): Promise<void> {
    const client = await connected();
    await client.send({
      topic,
      acks: -1,
      timeout: timeoutMs,
      messages: [{ key: report.minute, value: JSON.stringify(report) }],
    });
  }

  async function send(report: MinuteReport): Promise<SendOutcome> {
    try {
      await produce(report);
      return "delivered";
    } catch (error) {
      const { message, type } = error as Error & { type?: string };
      if (idempotent && /Broker \d+ not found/.test(message)) {
        // Idempotence needs the cluster's controller; some clusters (and
        // librdkafka's mock) name one that is not among their brokers.
        logger.warn(
          "Kafka cluster reports no usable controller; producing without idempotence: {error}",
          { error: message },
        );
        idempotent = false;
        await reset();
        return await send(report);
      }
      if (type && PERMANENT.has(type)) {
        throw new PermanentSinkError(`${type}: ${message}`);
      }
      if ((error as Error).name === "KafkaJSSASLAuthenticationError") {
        throw new PermanentSinkError(message);
      }
      throw new Error(message);
    }
  }

  return { name: "kafka", send, close: reset };
}
