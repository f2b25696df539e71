/**
 * The webhook sink: its POSTs and retries, the URLs its store role owes,
 * the order of windows per URL through the outbox, and how long a delivery
 * may take.
 */
import assert from "node:assert/strict";
import { deliveryLeaseMs } from "../../../lib/report/outbox_delivery.ts";
import { type MinuteReport, type Sink } from "../../../lib/report/sink.ts";
import { getLogger } from "@logtape/logtape";
import { createLogSink } from "../../../lib/report/sinks/log.ts";
import { createWebhookSink } from "../../../lib/report/sinks/webhook.ts";
import type { Store } from "../../../lib/store/store.ts";
import { freePort } from "../../helpers/requirements.ts";
import { type CapturedLogs, captureLogs } from "../../helpers/logs.ts";
import { LOOPBACK_POST, startReceiver } from "../../helpers/receiver.ts";
import {
  GRACE,
  kvStore,
  M0,
  M1,
  M2,
  reporterFor,
  summary,
  WINDOW,
} from "../../helpers/reporting.ts";

/**
 * The webhook sink as the service builds it, keeping which URLs each window
 * still owes in `store`; one attempt per URL and delivery.
 */
function owedUrlWebhook(store: Store, logs: CapturedLogs): Sink {
  return createWebhookSink({
    post: LOOPBACK_POST,
    store,
    logger: logs.logger("webhook"),
    attempts: 1,
  });
}

Deno.test("webhook sink POSTs the report once to every distinct URL of the window", async () => {
  await using logs = await captureLogs();
  await using receiver = startReceiver();
  await using store = kvStore(await Deno.openKv(":memory:"));
  const webhook = createWebhookSink({
    post: LOOPBACK_POST,
    store,
    logger: logs.logger("webhook"),
  });
  const { reporter, clock } = reporterFor(store, logs, {
    sinks: [createLogSink(logs.logger("report")), webhook],
  });
  for (
    const [id, path] of [["1", "/a"], ["2", "/b"], ["3", "/a"], ["4", "/a"]]
  ) {
    await store.recordUrl(M0, `${receiver.url}${path}`);
    await store.recordId(M0, id!);
  }
  await store.recordUrl(M1, `${receiver.url}/next-window`);
  clock.now = M1 + GRACE;
  const [report] = await reporter.reportDue();
  await reporter.idle();
  assert.equal(receiver.received.length, 2);
  assert.deepEqual(receiver.received.map((r) => r.path).sort(), ["/a", "/b"]);
  for (const request of receiver.received) {
    assert.equal(request.method, "POST");
    assert.equal(request.contentType, "application/json");
    assert.deepEqual(JSON.parse(request.body), report);
  }
  assert.deepEqual(
    logs.of("webhook").map((r) => [r.level, r.properties.status]),
    [["info", 204], ["info", 204]],
  );
  await reporter.idle();
});

Deno.test("webhook sink retries 5xx and network errors, not 4xx, and logs every attempt", async (t) => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
  await store.recordId(M0, "1");
  const sink = (attempts: number) =>
    createWebhookSink({
      post: LOOPBACK_POST,
      store,
      logger: logs.logger("webhook"),
      attempts,
      retryBaseMs: 1,
    });
  const report: MinuteReport = {
    minute: "2026-01-01T12:00:00.000Z",
    unique_ids: 1,
    window_ms: WINDOW,
    reported_at: "2026-01-01T12:01:02.000Z",
  };

  await t.step("a 503 then a 200", async () => {
    await using receiver = startReceiver((_, i) => i === 0 ? 503 : 200);
    await store.recordUrl(M0, `${receiver.url}/flaky`);
    logs.records.length = 0;
    await sink(3).send(report, M0);
    assert.equal(receiver.received.length, 2);
    assert.deepEqual(
      logs.of("webhook").map((
        r,
      ) => [r.level, r.properties.status, r.properties.attempt]),
      [["warning", 503, 1], ["info", 200, 2]],
    );
  });

  await t.step("a 404 is not retried", async () => {
    await using receiver = startReceiver(() => 404);
    const minute = M1;
    await store.recordUrl(minute, `${receiver.url}/gone`);
    logs.records.length = 0;
    await sink(3).send(report, minute);
    assert.equal(receiver.received.length, 1);
    assert.deepEqual(logs.of("webhook").map((r) => r.level), [
      "warning",
      "error",
    ]);
  });

  await t.step(
    "a refused connection is retried, then left to the outbox",
    async () => {
      const port = freePort();
      await store.recordUrl(M2, `http://127.0.0.1:${port}/down`);
      logs.records.length = 0;
      await assert.rejects(
        sink(3).send(report, M2),
        /1 of 1 webhook URLs not delivered yet/,
      );
      const records = logs.of("webhook");
      assert.deepEqual(records.map((r) => [r.level, r.properties.attempt]), [
        ["warning", 1],
        ["warning", 2],
        ["warning", 3],
        ["warning", 3],
      ]);
      assert.equal(typeof records[0]!.properties.error, "string");
    },
  );
});

Deno.test("a webhook that never answers holds up neither other URLs nor the next window", async () => {
  await using logs = await captureLogs();
  await using receiver = startReceiver((request) =>
    request.path === "/hang" ? "hang" : 204
  );
  await using store = kvStore(await Deno.openKv(":memory:"));
  const webhook = createWebhookSink({
    post: LOOPBACK_POST,
    store,
    logger: logs.logger("webhook"),
    timeoutMs: 1000,
    attempts: 2,
    retryBaseMs: 1,
  });
  const { reporter, clock } = reporterFor(store, logs, {
    sinks: [createLogSink(logs.logger("report")), webhook],
  });
  await store.recordUrl(M0, `${receiver.url}/hang`);
  await store.recordUrl(M0, `${receiver.url}/fast`);
  await store.recordId(M0, "1");
  await store.recordId(M1, "2");
  clock.now = M1 + GRACE;
  assert.equal((await reporter.reportDue()).length, 1);
  await receiver.waitFor(2);
  clock.now = M2 + GRACE;
  assert.deepEqual(summary(await reporter.reportDue()), [[
    "2026-01-01T12:01:00.000Z",
    1,
  ]]);
  // The next window was reported while the hanging URL was still inside its
  // first attempt: nothing about it has been logged yet.
  const hangUrl = `${receiver.url}/hang`;
  const hungLogs = () =>
    logs.of("webhook").filter((r) => r.properties.url === hangUrl);
  assert.deepEqual(hungLogs(), []);
  await reporter.idle();
  assert.deepEqual(
    hungLogs().map((r) => [r.level, r.properties.error ?? null]),
    [
      ["warning", "timed out"],
      ["warning", "timed out"],
      ["warning", null],
    ],
  );
  assert.equal(logs.of("report").length, 2);
  await reporter.idle();
});

Deno.test("webhook sink fails the delivery when the store cannot list the URLs", async () => {
  await using logs = await captureLogs();
  const sink = createWebhookSink({
    post: LOOPBACK_POST,
    store: {
      listOwedUrls: () => Promise.reject(new Error("store unavailable")),
      markUrlDone: () => Promise.resolve(),
    },
    logger: logs.logger("webhook"),
  });
  await assert.rejects(
    sink.send({
      minute: "2026-01-01T12:00:00.000Z",
      unique_ids: 1,
      window_ms: WINDOW,
      reported_at: "2026-01-01T12:01:02.000Z",
    }, M0),
    /store unavailable/,
  );
});

Deno.test("a webhook URL that keeps failing is retried through the outbox until delivered, without POSTing again to the URLs done", async () => {
  await using logs = await captureLogs();
  let failuresLeft = 2;
  await using receiver = startReceiver((request) =>
    request.path === "/b" && failuresLeft-- > 0 ? 503 : 204
  );
  await using store = kvStore(await Deno.openKv(":memory:"));
  const webhook = owedUrlWebhook(store, logs);
  const { reporter, clock } = reporterFor(store, logs, { sinks: [webhook] });
  await store.recordUrl(M0, `${receiver.url}/a`);
  await store.recordUrl(M0, `${receiver.url}/b`);
  await store.recordId(M0, "1");
  clock.now = M1 + GRACE;
  await reporter.reportDue();
  await reporter.idle();
  assert.deepEqual(await store.listOwedUrls(M0), [`${receiver.url}/b`]);
  // Later ticks, each past the longest retry delay.
  for (let tick = 0; tick < 3; tick++) {
    clock.now += 300_000;
    await reporter.reportDue();
    await reporter.idle();
  }
  assert.deepEqual(
    receiver.received.map((request) => request.path).sort(),
    ["/a", "/b", "/b", "/b"],
  );
  assert.deepEqual(await store.listOwedUrls(M0), []);
  assert.deepEqual(await store.listOutbox(), []);
  const [stats] = await store.windowStats([M0]);
  // Delivered on the second tick, after two failed attempts.
  assert.deepEqual(stats?.deliveries.webhook, {
    state: "delivered",
    at: M1 + GRACE + 600_000,
    attempts: 2,
  });
});

Deno.test("a webhook URL gets the windows in order, and waiting for its earlier window holds up no other URL", async () => {
  await using logs = await captureLogs();
  let down = true;
  await using receiver = startReceiver((request) =>
    request.path === "/a" && down ? 503 : 204
  );
  await using store = kvStore(await Deno.openKv(":memory:"));
  const webhook = owedUrlWebhook(store, logs);
  const { reporter, clock } = reporterFor(store, logs, { sinks: [webhook] });
  const [a, b] = [`${receiver.url}/a`, `${receiver.url}/b`];
  await store.recordUrl(M0, a);
  await store.recordId(M0, "1");
  await store.recordUrl(M1, a);
  await store.recordUrl(M1, b);
  await store.recordId(M1, "2");
  clock.now = M1 + GRACE;
  await reporter.reportDue();
  await reporter.idle();
  clock.now = M2 + GRACE;
  await reporter.reportDue();
  await reporter.idle();
  // b had nothing earlier owed: it got its window; a got M0 only (twice:
  // a first attempt and a retry), which failed.
  const got = () =>
    receiver.received.map((r) => `${r.path} ${JSON.parse(r.body).minute}`);
  assert.deepEqual(got().sort(), [
    "/a 2026-01-01T12:00:00.000Z",
    "/a 2026-01-01T12:00:00.000Z",
    "/b 2026-01-01T12:01:00.000Z",
  ]);
  assert.deepEqual(await store.listOwedUrls(M1), [a]);
  // Waiting for M0 is not a failed attempt of M1.
  const waiting = (await store.listOutbox()).find((e) => e.minute === M1);
  assert.equal(waiting?.attempts, 0);
  down = false;
  // One tick: M0 reaches a, and M1, waiting for it, follows at once.
  clock.now += 300_000;
  await reporter.reportDue();
  await reporter.idle();
  assert.deepEqual(got().filter((post) => post.startsWith("/a")), [
    ...Array(3).fill("/a 2026-01-01T12:00:00.000Z"),
    "/a 2026-01-01T12:01:00.000Z",
  ]);
  assert.deepEqual(await store.listOutbox(), []);
  const [, m1] = await store.windowStats([M0, M1]);
  assert.equal(m1?.deliveries.webhook?.attempts, 0);
});

Deno.test("deliveryLeaseMs() outlasts the longest send of any sink by a minute, and is two minutes at least", () => {
  const send = () => Promise.resolve("delivered" as const);
  // A webhook sink's longest: 32 rounds of 32 URLs, each tried 3 times for
  // up to 5 s plus backoff.
  const webhook = createWebhookSink({
    store: {
      listOwedUrls: () => Promise.resolve([]),
      markUrlDone: () => Promise.resolve(),
    },
    logger: getLogger(["test"]),
    attempts: 3,
    timeoutMs: 5000,
    concurrency: 32,
    maxUrls: 1000,
  });
  assert.equal(webhook.longestSendMs, 3 * 10_000 * 32);
  assert.equal(
    deliveryLeaseMs([{ name: "kafka", send }, webhook]),
    60_000 + 3 * 10_000 * 32,
  );
  assert.equal(deliveryLeaseMs([{ name: "kafka", send }]), 120_000);
});
