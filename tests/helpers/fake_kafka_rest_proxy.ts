/**
 * A TEST DOUBLE of a Kafka REST proxy. No REST proxy server can be installed
 * here, so this small one speaks the produce requests of the Confluent REST
 * Proxy API v2 and v3 (shapes, content types, per-record error codes, Basic
 * and bearer auth) and produces for real, with kafkajs, to a Kafka-protocol
 * peer (librdkafka's mock cluster). Tests can make it fail on purpose.
 *
 * @module
 */
import { Kafka, logLevel, Partitioners, type Producer } from "kafkajs";
import { serveRestartable } from "./restartable_server.ts";

/** How the double should misbehave next. */
export interface ProxyFaults {
  /** Answer this HTTP status to the next `count` produce requests. */
  status?: { code: number; count: number };
  /** Answer v2 per-record `error_code` 50003 to the next `count` requests. */
  recordTimeouts?: number;
  /** Never answer produce requests while true. */
  hang?: boolean;
}

/** A running double. */
export interface FakeKafkaRestProxy extends AsyncDisposable {
  url: string;
  port: number;
  clusterId: string;
  /** Produce requests received (all, including refused ones). */
  requests: number;
  faults: ProxyFaults;
  /** Stops listening (connections are refused) until `start()`. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): void;
}

/** Starts the double on 127.0.0.1, producing to `brokers`. */
export async function startFakeKafkaRestProxy(options: {
  brokers: string[];
  /** Accepted credentials; without any, requests need no auth. */
  basic?: { username: string; password: string };
  token?: string;
  /** Topics that exist; others get "topic not found". */
  topics: string[];
}): Promise<FakeKafkaRestProxy> {
  const kafka = new Kafka({
    clientId: "fake-rest-proxy",
    brokers: options.brokers,
    logLevel: logLevel.NOTHING,
  });
  const producer: Producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const clusterId = "mock-cluster-1";

  const json = (status: number, body: unknown, type = "application/json") =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": type },
    });

  function authorized(request: Request): boolean {
    const header = request.headers.get("authorization");
    if (options.basic) {
      const { username, password } = options.basic;
      return header === `Basic ${btoa(`${username}:${password}`)}`;
    }
    if (options.token) return header === `Bearer ${options.token}`;
    return true;
  }

  async function handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    const v2 = /^\/topics\/([^/]+)$/.exec(path);
    const v3 = /^\/v3\/clusters\/([^/]+)\/topics\/([^/]+)\/records$/.exec(path);
    if (request.method !== "POST" || (!v2 && !v3)) {
      return json(404, { error_code: 404, message: "HTTP 404 Not Found" });
    }
    double.requests++;
    const v2Type = "application/vnd.kafka.v2+json";
    if (double.faults.hang) {
      await server.held();
      return json(503, { error_code: 503, message: "shutting down" });
    }
    const status = double.faults.status;
    if (status && status.count > 0) {
      status.count--;
      return json(status.code, {
        error_code: status.code * 100 + 1,
        message: `Injected ${status.code}`,
      });
    }
    if (!authorized(request)) {
      return json(401, { error_code: 40101, message: "Unauthorized" });
    }
    if (v3 && decodeURIComponent(v3[1]!) !== clusterId) {
      return json(404, { error_code: 404, message: "Cluster not found" });
    }
    const topic = decodeURIComponent((v2 ?? v3)![v2 ? 1 : 2]!);
    if (!options.topics.includes(topic)) {
      return v2
        ? json(404, { error_code: 40403, message: "Topic not found." }, v2Type)
        : json(404, { error_code: 404, message: `Topic ${topic} not found` });
    }
    const body = await request.json();
    if (v2) {
      if (
        !request.headers.get("content-type")?.startsWith(
          "application/vnd.kafka.json.v2+json",
        )
      ) {
        return json(415, {
          error_code: 415,
          message: "Unsupported Media Type",
        });
      }
      if ((double.faults.recordTimeouts ?? 0) > 0) {
        double.faults.recordTimeouts!--;
        return json(200, {
          offsets: [{
            partition: null,
            offset: null,
            error_code: 50003,
            error: "Broker request timed out",
          }],
        }, v2Type);
      }
      const offsets = [];
      for (const record of body.records) {
        const [result] = await producer.send({
          topic,
          messages: [{
            key: record.key,
            value: JSON.stringify(record.value),
          }],
        });
        offsets.push({
          partition: result!.partition,
          offset: Number(result!.baseOffset),
          error_code: null,
          error: null,
        });
      }
      return json(
        200,
        { key_schema_id: null, value_schema_id: null, offsets },
        v2Type,
      );
    }
    if (body.key?.type !== "STRING" || body.value?.type !== "JSON") {
      return json(400, { error_code: 400, message: "Bad record types" });
    }
    const [result] = await producer.send({
      topic,
      messages: [{
        key: body.key.data,
        value: JSON.stringify(body.value.data),
      }],
    });
    return json(200, {
      error_code: 200,
      cluster_id: clusterId,
      topic_name: topic,
      partition_id: result!.partition,
      offset: Number(result!.baseOffset),
    });
  }

  const server = serveRestartable(handle);
  const double: FakeKafkaRestProxy = {
    get url() {
      return `http://127.0.0.1:${server.port}`;
    },
    get port() {
      return server.port;
    },
    clusterId,
    requests: 0,
    faults: {},
    stop: () => server.stop(),
    start: () => server.start(),
    async [Symbol.asyncDispose]() {
      await server.stop();
      await producer.disconnect();
    },
  };
  return double;
}
