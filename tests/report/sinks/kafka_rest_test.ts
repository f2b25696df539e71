/**
 * The Kafka REST proxy sink, through a test double of a REST proxy (see
 * `helpers/fake_kafka_rest_proxy.ts`) that produces to librdkafka's mock
 * cluster, and the service delivering through it across an outage.
 */
import assert from "node:assert/strict";
import type { MinuteReport } from "../../../lib/report/sink.ts";
import { PermanentSinkError } from "../../../lib/report/sink.ts";
import { createKafkaRestSink } from "../../../lib/report/sinks/kafka_rest.ts";
import { startFakeKafkaRestProxy } from "../../helpers/fake_kafka_rest_proxy.ts";
import {
  skipWithoutKafkaMock,
  startKafkaMock,
} from "../../helpers/kafka_mock.ts";
import { tempKvPath } from "../../helpers/kv.ts";
import { startService } from "../../helpers/service.ts";

const ignore = skipWithoutKafkaMock();
const M0 = Date.UTC(2026, 0, 1, 12, 0);
const REPORT: MinuteReport = {
  minute: "2026-01-01T12:00:00.000Z",
  unique_ids: 3,
  window_ms: 60_000,
  reported_at: "2026-01-01T12:01:02.000Z",
};

Deno.test({
  name: "REST sink produces through API v2 and v3, keyed by the window",
  ignore,
  async fn(t) {
    using mock = startKafkaMock();
    mock.createTopic("unique-ids");
    const basic = { username: "key", password: "secret" };
    await using proxy = await startFakeKafkaRestProxy({
      brokers: mock.brokers,
      basic,
      topics: ["unique-ids"],
    });
    await t.step("v2 with Basic auth", async () => {
      const sink = createKafkaRestSink({
        baseUrl: `${proxy.url}/`,
        topic: "unique-ids",
        basic,
      });
      await sink.send(REPORT, M0);
    });
    await t.step("v3", async () => {
      const sink = createKafkaRestSink({
        baseUrl: proxy.url,
        api: "v3",
        clusterId: proxy.clusterId,
        topic: "unique-ids",
        basic,
      });
      await sink.send({ ...REPORT, unique_ids: 4 }, M0);
    });
    const messages = await mock.consume("unique-ids", 2);
    assert.deepEqual(
      messages.map((m) => [m.key, JSON.parse(m.value).unique_ids]),
      [[REPORT.minute, 3], [REPORT.minute, 4]],
    );
  },
});

Deno.test({
  name: "REST sink tells failures worth retrying from those that are not",
  ignore,
  async fn(t) {
    using mock = startKafkaMock();
    mock.createTopic("unique-ids");
    await using proxy = await startFakeKafkaRestProxy({
      brokers: mock.brokers,
      token: "good",
      topics: ["unique-ids"],
    });
    const sink = (
      options: { token?: string; topic?: string; api?: "v3" } = {},
    ) =>
      createKafkaRestSink({
        baseUrl: proxy.url,
        topic: options.topic ?? "unique-ids",
        token: options.token ?? "good",
        timeoutMs: 300,
        ...(options.api
          ? { api: options.api, clusterId: proxy.clusterId }
          : {}),
      });
    const failure = (promise: Promise<unknown>) =>
      promise.then(() => undefined, (error: Error) => error);
    const retriable = async (promise: Promise<unknown>, pattern: RegExp) => {
      const error = await failure(promise);
      assert.ok(error instanceof Error, "expected a failure");
      assert.ok(!(error instanceof PermanentSinkError), error.message);
      assert.match(error.message, pattern);
    };
    const permanent = async (promise: Promise<unknown>, pattern: RegExp) => {
      const error = await failure(promise);
      assert.ok(error instanceof PermanentSinkError, String(error));
      assert.match(error.message, pattern);
    };

    await t.step("a 503 is retriable", async () => {
      proxy.faults.status = { code: 503, count: 1 };
      await retriable(sink().send(REPORT, M0), /^503 Injected 503/);
    });
    await t.step(
      "a per-record broker timeout (50003) is retriable",
      async () => {
        proxy.faults.recordTimeouts = 1;
        await retriable(sink().send(REPORT, M0), /error_code 50003/);
      },
    );
    await t.step("no answer in time is retriable", async () => {
      proxy.faults.hang = true;
      await retriable(sink().send(REPORT, M0), /no answer within 300 ms/);
      proxy.faults.hang = false;
    });
    await t.step(
      "bad credentials are permanent, with the proxy's message",
      async () => {
        await permanent(
          sink({ token: "bad" }).send(REPORT, M0),
          /401 Unauthorized/,
        );
        await permanent(
          sink({ token: "bad", api: "v3" }).send(REPORT, M0),
          /401 Unauthorized/,
        );
      },
    );
    await t.step("an unknown topic is permanent", async () => {
      await permanent(
        sink({ topic: "nope" }).send(REPORT, M0),
        /404 Topic not found/,
      );
    });
    await t.step("a proxy that is down is retriable", async () => {
      await proxy.stop();
      await retriable(sink().send(REPORT, M0), /./);
      proxy.start();
      await sink().send(REPORT, M0);
    });
  },
});

Deno.test({
  name:
    "the service delivers every window to Kafka through the REST proxy once the proxy is back",
  ignore,
  async fn() {
    using mock = startKafkaMock();
    mock.createTopic("unique-ids");
    await using proxy = await startFakeKafkaRestProxy({
      brokers: mock.brokers,
      topics: ["unique-ids"],
    });
    await using file = await tempKvPath();
    await proxy.stop();
    await using service = await startService({
      KV_PATH: file.path,
      WINDOW_MS: "1000",
      REPORT_GRACE_MS: "200",
      REPORT_SINKS: "log,kafka-rest",
      KAFKA_REST_URL: proxy.url,
      KAFKA_TOPIC: "unique-ids",
      KAFKA_REST_TIMEOUT_MS: "500",
      SINK_RETRY_BASE_MS: "200",
      SINK_RETRY_MAX_MS: "400",
    });
    for (const id of ["1", "2", "2", "3"]) {
      const response = await fetch(`${service.url}/api/verve/accept?id=${id}`);
      assert.equal(await response.text(), "ok");
    }
    // Several windows pass while the proxy is down.
    const isReport = (l: { logger: string }) => l.logger === "verve.report";
    while (service.lines.filter(isReport).length < 4) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(
      service.lines.some((l) =>
        l.logger === "verve.reporter" && l.level === "WARNING"
      ),
    );
    proxy.start();
    const down = service.lines.filter(isReport).map((l) => l.properties);
    const messages = await mock.consume("unique-ids", down.length + 3);
    assert.equal(await service.stop("SIGTERM"), 0);
    const reported = service.lines.filter(isReport).map((l) => l.properties);
    // Every window reported before the stop went to Kafka, once.
    const produced = new Map(messages.map((m) => [m.key, JSON.parse(m.value)]));
    assert.equal(produced.size, messages.length, "a window produced twice");
    for (const report of down) {
      assert.deepEqual(produced.get(report.minute as string), report);
    }
    assert.ok(messages.length <= reported.length);
    assert.equal(
      [...produced.values()].reduce((sum, r) => sum + r.unique_ids, 0),
      3,
    );
  },
});
