/**
 * librdkafka's mock Kafka cluster (Debian package `librdkafka1`), loaded
 * with `Deno.dlopen`: real brokers on 127.0.0.1 TCP ports that speak the
 * Kafka protocol, inside the test process. Where the library is missing,
 * Kafka tests are skipped with a message, except under `CI=true`, where they
 * fail.
 *
 * @module
 */
import { Kafka, logLevel } from "kafkajs";
import { skipUnless } from "./requirements.ts";

const LIBRARY = "librdkafka.so.1";

const SYMBOLS = {
  rd_kafka_conf_new: { parameters: [], result: "pointer" },
  rd_kafka_conf_set: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: "i32",
  },
  rd_kafka_new: {
    parameters: ["i32", "pointer", "buffer", "usize"],
    result: "pointer",
  },
  rd_kafka_destroy: { parameters: ["pointer"], result: "void" },
  rd_kafka_mock_cluster_new: {
    parameters: ["pointer", "i32"],
    result: "pointer",
  },
  rd_kafka_mock_cluster_bootstraps: {
    parameters: ["pointer"],
    result: "pointer",
  },
  rd_kafka_mock_topic_create: {
    parameters: ["pointer", "buffer", "i32", "i32"],
    result: "i32",
  },
  rd_kafka_mock_cluster_destroy: { parameters: ["pointer"], result: "void" },
} as const;

/** Whether librdkafka can be loaded here. */
export const KAFKA_MOCK_AVAILABLE = (() => {
  try {
    Deno.dlopen(LIBRARY, {}).close();
    return true;
  } catch {
    return false;
  }
})();

/** `ignore` for `Deno.test` of Kafka tests (see {@link skipUnless}). */
export function skipWithoutKafkaMock(): boolean {
  return skipUnless(KAFKA_MOCK_AVAILABLE, "librdkafka", "librdkafka1");
}

/** A running mock cluster. */
export interface KafkaMock extends Disposable {
  /** Bootstrap addresses, e.g. `["127.0.0.1:40123"]`. */
  brokers: string[];
  /** Creates a topic (the mock has no CreateTopics request). */
  createTopic(name: string, partitions?: number): void;
  /**
   * Reads every message of `topic` from the beginning with kafkajs, until
   * `count` have arrived and half a second more passed (so duplicates show),
   * or `timeoutMs` passed.
   */
  consume(
    topic: string,
    count: number,
    timeoutMs?: number,
  ): Promise<{ key: string; value: string }[]>;
}

const cString = (text: string) => new TextEncoder().encode(`${text}\0`);

/** Starts a mock cluster with `brokerCount` brokers. */
export function startKafkaMock(brokerCount = 1): KafkaMock {
  const lib = Deno.dlopen(LIBRARY, SYMBOLS);
  const error = new Uint8Array(512);
  const conf = lib.symbols.rd_kafka_conf_new();
  // The handle only hosts the mock cluster; it never connects anywhere.
  lib.symbols.rd_kafka_conf_set(
    conf,
    cString("log_level"),
    cString("0"),
    error,
    BigInt(error.length),
  );
  const handle = lib.symbols.rd_kafka_new(0, conf, error, BigInt(error.length));
  if (handle === null) {
    lib.close();
    throw new Error(
      `Cannot start the Kafka mock: ${new TextDecoder().decode(error)}`,
    );
  }
  const cluster = lib.symbols.rd_kafka_mock_cluster_new(handle, brokerCount);
  const bootstraps = new Deno.UnsafePointerView(
    lib.symbols.rd_kafka_mock_cluster_bootstraps(cluster)!,
  ).getCString();
  const brokers = bootstraps.split(",");

  return {
    brokers,
    createTopic(name, partitions = 1) {
      const code = lib.symbols.rd_kafka_mock_topic_create(
        cluster,
        cString(name),
        partitions,
        1,
      );
      if (code !== 0) throw new Error(`Cannot create topic ${name}: ${code}`);
    },
    async consume(topic, count, timeoutMs = 20_000) {
      const kafka = new Kafka({
        clientId: "verve-test-consumer",
        brokers,
        logLevel: logLevel.NOTHING,
      });
      const consumer = kafka.consumer({
        groupId: `test-${crypto.randomUUID()}`,
      });
      const messages: { key: string; value: string }[] = [];
      await consumer.connect();
      try {
        await consumer.subscribe({ topic, fromBeginning: true });
        await new Promise<void>((resolve) => {
          let timer = setTimeout(resolve, timeoutMs);
          consumer.run({
            eachMessage: ({ message }) => {
              messages.push({
                key: message.key?.toString() ?? "",
                value: message.value?.toString() ?? "",
              });
              if (messages.length === count) {
                clearTimeout(timer);
                timer = setTimeout(resolve, 500);
              }
              return Promise.resolve();
            },
          });
        });
      } finally {
        await consumer.disconnect();
      }
      return messages;
    },
    [Symbol.dispose]() {
      lib.symbols.rd_kafka_mock_cluster_destroy(cluster);
      lib.symbols.rd_kafka_destroy(handle);
      lib.close();
    },
  };
}
