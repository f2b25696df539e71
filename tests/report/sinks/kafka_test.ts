/**
 * The direct Kafka sink against librdkafka's mock cluster, a real
 * Kafka-protocol peer.
 */
import assert from "node:assert/strict";
import { createReporter } from "../../../lib/report/reporter.ts";
import { PermanentSinkError } from "../../../lib/report/sink.ts";
import { createKafkaSink } from "../../../lib/report/sinks/kafka.ts";
import { createKvStore } from "../../../lib/store/kv/store_kv.ts";
import {
  skipWithoutKafkaMock,
  startKafkaMock,
} from "../../helpers/kafka_mock.ts";
import { tempKvPath } from "../../helpers/kv.ts";
import { freePort } from "../../helpers/requirements.ts";
import { captureLogs } from "../../helpers/logs.ts";

const ignore = skipWithoutKafkaMock();
const WINDOW = 60_000;
const M0 = Date.UTC(2026, 0, 1, 12, 0);

Deno.test({
  name:
    "Kafka sink: two reporters on one store produce exactly one record per window, keyed by the window",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    await using file = await tempKvPath();
    using mock = startKafkaMock();
    mock.createTopic("unique-ids");
    const clock = { now: M0 + WINDOW + 2000 };
    const instances = await Promise.all([0, 1].map(async (i) => {
      const store = createKvStore(await Deno.openKv(file.path), {
        retentionMs: 3_600_000,
      });
      const sink = createKafkaSink({
        brokers: mock.brokers,
        topic: "unique-ids",
        logger: logs.logger("kafka"),
      });
      const reporter = createReporter({
        store,
        sinks: [sink],
        logger: logs.logger("reporter"),
        clock: () => clock.now,
        windowMs: WINDOW,
        instanceId: `r${i}`,
      });
      return { store, sink, reporter };
    }));
    await instances[0]!.store.recordId(M0, "1");
    await instances[1]!.store.recordId(M0, "2");
    const reports = [];
    for (const tick of [0, WINDOW]) {
      clock.now = M0 + WINDOW + 2000 + tick;
      for (const { reporter } of instances) {
        reports.push(...await reporter.reportDue());
      }
    }
    for (const { reporter } of instances) await reporter.idle();
    assert.equal(reports.length, 2);

    const messages = await mock.consume("unique-ids", 2);
    const byMinute = (a: [string, unknown], b: [string, unknown]) =>
      a[0].localeCompare(b[0]);
    assert.deepEqual(
      messages.map((m) => [m.key, JSON.parse(m.value)] as [string, unknown])
        .sort(byMinute),
      reports.map((r) => [r.minute, r] as [string, unknown]).sort(byMinute),
    );
    assert.equal(reports[0]!.unique_ids, 2);
    for (const { store, sink } of instances) {
      assert.deepEqual(await store.listOutbox(), []);
      await sink.close();
      await store.close();
    }
  },
});

Deno.test({
  name:
    "Kafka sink: unreachable brokers are a failure to retry, not a permanent one",
  ignore,
  async fn() {
    await using logs = await captureLogs();
    const port = freePort();
    const sink = createKafkaSink({
      brokers: [`127.0.0.1:${port}`],
      topic: "unique-ids",
      logger: logs.logger("kafka"),
      timeoutMs: 500,
    });
    const failure = await sink.send({
      minute: "2026-01-01T12:00:00.000Z",
      unique_ids: 1,
      window_ms: WINDOW,
      reported_at: "2026-01-01T12:01:02.000Z",
    }, M0).then(() => undefined, (error: Error) => error);
    assert.ok(failure instanceof Error);
    assert.ok(!(failure instanceof PermanentSinkError), failure.message);
    // Closing twice, as a shutdown interrupted by a second signal may.
    await Promise.all([sink.close(), sink.close()]);
    await sink.close();
  },
});
