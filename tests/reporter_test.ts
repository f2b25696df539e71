import assert from "node:assert/strict";
import {
  createReporter,
  deliveryLeaseMs,
  dueWindows,
} from "../lib/report/reporter.ts";
import {
  type MinuteReport,
  PermanentSinkError,
  type Sink,
} from "../lib/report/sink.ts";
import { createLogSink } from "../lib/report/sinks/log.ts";
import { createWebhookSink } from "../lib/report/sinks/webhook.ts";
import type { Store } from "../lib/store/store.ts";
import { createKvStore } from "../lib/store/kv/store_kv.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { freePort } from "./helpers/requirements.ts";
import { type CapturedLogs, captureLogs } from "./helpers/logs.ts";
import { LOOPBACK_POST, startReceiver } from "./helpers/receiver.ts";

const WINDOW = 60_000;
const M0 = Date.UTC(2026, 0, 1, 12, 0);
const M1 = M0 + WINDOW;
const M2 = M1 + WINDOW;
const M3 = M2 + WINDOW;
const GRACE = 2000;

function kvStore(kv: Deno.Kv): Store {
  return createKvStore(kv, { retentionMs: 3_600_000, retryBaseMs: 1 });
}

/** A reporter with a log sink and a clock the test moves. */
function reporterFor(
  store: Store,
  logs: CapturedLogs,
  options: { sinks?: Sink[]; instanceId?: string; leaseMs?: number } = {},
) {
  const clock = { now: M0 };
  const reporter = createReporter({
    store,
    logger: logs.logger("reporter"),
    sinks: options.sinks ?? [createLogSink(logs.logger("report"))],
    clock: () => clock.now,
    windowMs: WINDOW,
    graceMs: GRACE,
    ...(options.instanceId ? { instanceId: options.instanceId } : {}),
    ...(options.leaseMs ? { leaseMs: options.leaseMs } : {}),
  });
  return { reporter, clock };
}

/**
 * The webhook sink as the service builds it, keeping which URLs each window
 * still owes in `store`; one attempt per URL and delivery.
 */
function owedUrlWebhook(store: Store, logs: CapturedLogs): Sink {
  return createWebhookSink({
    post: LOOPBACK_POST,
    listUrls: (minute) => store.listOwedUrls(minute),
    markDone: (minute, url) => store.markUrlDone(minute, url),
    logger: logs.logger("webhook"),
    attempts: 1,
  });
}

function summary(reports: MinuteReport[]) {
  return reports.map((r) => [r.minute, r.unique_ids]);
}

Deno.test("reportDue() reports the previous window once its grace has passed", async () => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  const { reporter, clock } = reporterFor(store, logs);
  await Promise.all(["1", "2", "3", "2"].map((id) => store.recordId(M0, id)));
  await store.recordId(M1, "4");

  clock.now = M1 + GRACE - 1;
  assert.deepEqual(await reporter.reportDue(), []);

  clock.now = M1 + GRACE;
  const reports = await reporter.reportDue();
  assert.deepEqual(reports, [{
    minute: "2026-01-01T12:00:00.000Z",
    unique_ids: 3,
    window_ms: WINDOW,
    reported_at: "2026-01-01T12:01:02.000Z",
  }]);
  await reporter.idle();
  const lines = logs.of("report");
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.level, "info");
  assert.deepEqual(lines[0]!.properties, { ...reports[0] });

  // A second tick in the same window reports nothing more.
  assert.deepEqual(await reporter.reportDue(), []);
  await reporter.idle();
  await store.close();
});

Deno.test("reportDue() reports an empty previous window as zero", async () => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  const { reporter, clock } = reporterFor(store, logs);
  clock.now = M1 + GRACE + 5;
  assert.deepEqual(summary(await reporter.reportDue()), [[
    "2026-01-01T12:00:00.000Z",
    0,
  ]]);
  await reporter.idle();
  await store.close();
});

Deno.test("reportDue() catches up on windows missed while down, oldest first", async () => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  const { reporter, clock } = reporterFor(store, logs);
  await Promise.all(["1", "2"].map((id) => store.recordId(M0, id)));
  await Promise.all(["1", "2", "3", "4"].map((id) => store.recordId(M2, id)));
  await store.recordId(M3, "9"); // still open: not reported yet
  clock.now = M3 + 10_000;
  assert.deepEqual(summary(await reporter.reportDue()), [
    ["2026-01-01T12:00:00.000Z", 2],
    ["2026-01-01T12:02:00.000Z", 4],
  ]);
  assert.deepEqual(await store.unreportedWindows(), [M3]);
  clock.now = M3 + WINDOW + GRACE;
  assert.deepEqual(summary(await reporter.reportDue()), [[
    "2026-01-01T12:03:00.000Z",
    1,
  ]]);
  await reporter.idle();
  await store.close();
});

Deno.test("reportDue() makes exactly one report per window across reporters sharing a store", async () => {
  await using logs = await captureLogs();
  await using file = await tempKvPath();
  const stores = await Promise.all(
    [1, 2, 3].map(async () => kvStore(await Deno.openKv(file.path))),
  );
  const reporters = stores.map((store, i) =>
    reporterFor(store, logs, { instanceId: `r${i}` })
  );
  await Promise.all(
    Array.from(
      { length: 90 },
      (_, i) => stores[i % 3]!.recordId(M0, String(i % 40)),
    ),
  );
  await stores[1]!.recordId(M1, "x");
  for (const { clock } of reporters) clock.now = M2 + GRACE;
  const reports =
    (await Promise.all(reporters.map(({ reporter }) => reporter.reportDue())))
      .flat();
  assert.deepEqual(summary(reports).sort(), [
    ["2026-01-01T12:00:00.000Z", 40],
    ["2026-01-01T12:01:00.000Z", 1],
  ]);
  for (const { reporter } of reporters) await reporter.idle();
  assert.equal(logs.of("report").length, 2);
  for (const store of stores) await store.close();
});

Deno.test("dueWindows() is the previous window and every closed unreported one, past its grace", () => {
  const options = { windowMs: WINDOW, graceMs: GRACE };
  assert.deepEqual(dueWindows(M2 + GRACE - 1, [], options), []);
  assert.deepEqual(dueWindows(M2 + GRACE, [], options), [M1]);
  // Older windows with ids, oldest first; the open window is not due.
  assert.deepEqual(dueWindows(M3 + GRACE, [M2, M0, M3, M0], options), [
    M0,
    M2,
  ]);
});

Deno.test("dueWindows() leaves out a previous window that ended before startedAt, unless it has ids", () => {
  // Started 39 s into M2: M1 ended before, with nobody counting it.
  const options = { windowMs: WINDOW, graceMs: GRACE, startedAt: M2 + 39_000 };
  assert.deepEqual(dueWindows(M2 + 39_000, [], options), []);
  assert.deepEqual(dueWindows(M2 + 39_000, [M1], options), [M1]);
  // M2 had this instance running for part of it.
  assert.deepEqual(dueWindows(M3 + GRACE, [], options), [M2]);
});

Deno.test("reportDue() tries an empty window whose report failed again on a later tick", async (t) => {
  const cases = [
    // No claim was made: the next tick takes it.
    ["claimReport", [["12:01", 0], ["12:02", 0]], [["12:03", 0]]],
    // This instance's claim stands until its lease ends, a tick later.
    ["completeReport", [["12:02", 0]], [["12:01", 0], ["12:03", 0]]],
  ] as const;
  for (const [method, second, third] of cases) {
    await t.step(`${method} failed once`, async () => {
      await using logs = await captureLogs();
      const store = kvStore(await Deno.openKv(":memory:"));
      let failures = 1;
      // A fake failure of one call; the rest goes to the real store.
      const flaky = new Proxy(store, {
        get(target, property) {
          const value = Reflect.get(target, property, target);
          if (typeof value !== "function") return value;
          if (property === method) {
            return (...args: unknown[]) =>
              failures-- > 0
                ? Promise.reject(new Error(`${method} failed`))
                : value.apply(target, args);
          }
          return value.bind(target);
        },
      });
      const { reporter, clock } = reporterFor(flaky, logs, {
        leaseMs: 90_000,
      });
      const at = (reports: MinuteReport[]) =>
        reports.map((r) => [r.minute.slice(11, 16), r.unique_ids]);
      clock.now = M2 + GRACE;
      assert.deepEqual(await reporter.reportDue(), []);
      assert.equal(logs.of("reporter")[0]?.level, "error");
      // The store lists no window without ids: the reporter remembers it.
      assert.deepEqual(await store.unreportedWindows(), []);
      clock.now = M3 + GRACE;
      assert.deepEqual(at(await reporter.reportDue()), second);
      clock.now = M3 + WINDOW + GRACE;
      assert.deepEqual(at(await reporter.reportDue()), third);
      await reporter.idle();
      await store.close();
    });
  }
});

Deno.test("reportDue() keeps going when one window cannot be reported", async () => {
  await using logs = await captureLogs();
  const kv = await Deno.openKv(":memory:");
  const store = kvStore(kv);
  await store.recordId(M0, "1");
  await store.recordId(M1, "2");
  // A fake failure of one window's claim; the rest goes to the real store.
  const flaky = new Proxy(store, {
    get(target, property) {
      if (property === "claimReport") {
        return (minute: number, owner: string, now: number, leaseMs: number) =>
          minute === M0
            ? Promise.reject(new Error("claim failed"))
            : target.claimReport(minute, owner, now, leaseMs);
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const { reporter, clock } = reporterFor(flaky, logs);
  clock.now = M2 + GRACE;
  assert.deepEqual(summary(await reporter.reportDue()), [[
    "2026-01-01T12:01:00.000Z",
    1,
  ]]);
  assert.equal(logs.of("reporter")[0]?.level, "error");
  // The failed window is still due and is reported by the next tick.
  const retry = reporterFor(store, logs);
  retry.clock.now = M2 + GRACE + 1;
  assert.deepEqual(summary(await retry.reporter.reportDue()), [[
    "2026-01-01T12:00:00.000Z",
    1,
  ]]);
  await reporter.idle();
  await retry.reporter.idle();
  await store.close();
});

Deno.test("webhook sink POSTs the report once to every distinct URL of the window", async () => {
  await using logs = await captureLogs();
  await using receiver = startReceiver();
  const store = kvStore(await Deno.openKv(":memory:"));
  const webhook = createWebhookSink({
    post: LOOPBACK_POST,
    listUrls: (minute) => store.listUrls(minute),
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
  await store.close();
});

Deno.test("webhook sink retries 5xx and network errors, not 4xx, and logs every attempt", async (t) => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  await store.recordId(M0, "1");
  const sink = (attempts: number) =>
    createWebhookSink({
      post: LOOPBACK_POST,
      listUrls: (minute) => store.listUrls(minute),
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
  await store.close();
});

Deno.test("a webhook that never answers holds up neither other URLs nor the next window", async () => {
  await using logs = await captureLogs();
  await using receiver = startReceiver((request) =>
    request.path === "/hang" ? "hang" : 204
  );
  const store = kvStore(await Deno.openKv(":memory:"));
  const webhook = createWebhookSink({
    post: LOOPBACK_POST,
    listUrls: (minute) => store.listUrls(minute),
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
  await store.close();
});

/**
 * A sink that records what it was given and fails while `failures` says
 * so: the reporter's side of the sink contract, not a stand-in for a real
 * destination.
 */
function scriptedSink(name: string) {
  const delivered: string[] = [];
  const state = {
    delivered,
    /** The windows of every call, failed or not. */
    tried: [] as string[],
    failWith: undefined as Error | undefined,
    calls: 0,
    sink: {
      name,
      send(report: MinuteReport): Promise<void> {
        state.calls++;
        state.tried.push(report.minute);
        if (state.failWith) return Promise.reject(state.failWith);
        delivered.push(report.minute);
        return Promise.resolve();
      },
    } satisfies Sink,
  };
  return state;
}

const OUTBOX_TIMING = { retryBaseMs: 1000, retryMaxMs: 4000 };

Deno.test("a failing sink is retried on later ticks with backoff, without holding up the others", async () => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  const good = scriptedSink("good");
  const flaky = scriptedSink("flaky");
  flaky.failWith = new Error("proxy answered 503");
  const clock = { now: M1 + GRACE };
  const reporter = createReporter({
    store,
    logger: logs.logger("reporter"),
    sinks: [good.sink, flaky.sink],
    clock: () => clock.now,
    windowMs: WINDOW,
    graceMs: GRACE,
    delivery: OUTBOX_TIMING,
  });
  await store.recordId(M0, "1");
  await reporter.reportDue();
  await reporter.idle();
  assert.deepEqual(good.delivered, ["2026-01-01T12:00:00.000Z"]);
  assert.equal(flaky.calls, 1);
  const [pending] = await store.listOutbox();
  assert.equal(pending?.sink, "flaky");
  assert.equal(pending?.attempts, 1);
  assert.equal(pending?.notBefore, clock.now + 1000);

  clock.now += 999; // not due yet
  await reporter.reportDue();
  await reporter.idle();
  assert.equal(flaky.calls, 1);
  clock.now += 1; // due: fails again, next delay doubles
  await reporter.reportDue();
  await reporter.idle();
  assert.equal(flaky.calls, 2);
  assert.equal((await store.listOutbox())[0]?.notBefore, clock.now + 2000);

  flaky.failWith = undefined;
  clock.now = M2 + GRACE; // the next window is due too
  await reporter.reportDue();
  await reporter.idle();
  assert.deepEqual(flaky.delivered, [
    "2026-01-01T12:00:00.000Z",
    "2026-01-01T12:01:00.000Z",
  ]);
  assert.deepEqual(good.delivered, [
    "2026-01-01T12:00:00.000Z",
    "2026-01-01T12:01:00.000Z",
  ]);
  assert.deepEqual(await store.listOutbox(), []);
  const warnings = logs.of("reporter").filter((r) => r.level === "warning");
  assert.deepEqual(warnings.map((r) => r.properties.attempt), [1, 2]);
  await store.close();
});

Deno.test("a sink's permanent refusal and a report past the maximum age are dropped and logged with the report", async (t) => {
  for (
    const [name, error, maxAge] of [
      [
        "permanent",
        new PermanentSinkError("401 Unauthorized: bad key"),
        3_600_000,
      ],
      ["too old", new Error("timed out"), 0],
    ] as const
  ) {
    await t.step(name, async () => {
      await using logs = await captureLogs();
      const store = kvStore(await Deno.openKv(":memory:"));
      const sink = scriptedSink("kafka-rest");
      sink.failWith = error;
      const reporter = createReporter({
        store,
        logger: logs.logger("reporter"),
        sinks: [sink.sink],
        clock: () => M1 + GRACE,
        windowMs: WINDOW,
        graceMs: GRACE,
        delivery: { maxAgeMs: maxAge },
      });
      const [report] = await reporter.reportDue();
      await reporter.idle();
      assert.deepEqual(await store.listOutbox(), []);
      const [line] = logs.of("reporter");
      assert.equal(line?.level, "error");
      assert.equal(line?.properties.sink, "kafka-rest");
      assert.equal(line?.properties.error, error.message);
      assert.deepEqual(line?.properties.report, report);
      await reporter.reportDue();
      await reporter.idle();
      assert.equal(sink.calls, 1);
      await store.close();
    });
  }
});

Deno.test("pending deliveries survive a restart and go out once across reporters", async () => {
  await using logs = await captureLogs();
  await using file = await tempKvPath();
  const clock = { now: M1 + GRACE };
  const reporterOn = (store: Store, sink: Sink, id: string) =>
    createReporter({
      store,
      logger: logs.logger("reporter"),
      sinks: [sink],
      clock: () => clock.now,
      windowMs: WINDOW,
      graceMs: GRACE,
      instanceId: id,
      delivery: OUTBOX_TIMING,
    });
  const down = scriptedSink("kafka");
  down.failWith = new Error("broker unreachable");
  {
    const store = kvStore(await Deno.openKv(file.path));
    const reporter = reporterOn(store, down.sink, "old");
    await reporter.reportDue();
    await reporter.idle();
    await store.close();
  }
  // Two instances start on the same store; the sink is back.
  const stores = [
    kvStore(await Deno.openKv(file.path)),
    kvStore(await Deno.openKv(file.path)),
  ];
  const sinks = [scriptedSink("kafka"), scriptedSink("kafka")];
  const reporters = stores.map((s, i) =>
    reporterOn(s, sinks[i]!.sink, `n${i}`)
  );
  clock.now += 1000;
  await Promise.all(reporters.map((r) => r.reportDue()));
  for (const reporter of reporters) await reporter.idle();
  assert.deepEqual(
    sinks.flatMap((s) => s.delivered),
    ["2026-01-01T12:00:00.000Z"],
  );
  assert.deepEqual(await stores[0]!.listOutbox(), []);
  for (const store of stores) await store.close();
});

Deno.test("webhook sink fails the delivery when the store cannot list the URLs", async () => {
  await using logs = await captureLogs();
  const sink = createWebhookSink({
    post: LOOPBACK_POST,
    listUrls: () => Promise.reject(new Error("store unavailable")),
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
  const store = kvStore(await Deno.openKv(":memory:"));
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
  await store.close();
});

Deno.test("a sink that comes back gets the windows it missed in order, the next one waiting for the one before", async () => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  const kafka = scriptedSink("kafka-rest");
  kafka.failWith = new Error("proxy down");
  const clock = { now: M1 + GRACE };
  const reporter = createReporter({
    store,
    logger: logs.logger("reporter"),
    sinks: [kafka.sink],
    clock: () => clock.now,
    windowMs: WINDOW,
    graceMs: GRACE,
    delivery: { retryBaseMs: 1000, retryMaxMs: 50_000 },
  });
  await store.recordId(M0, "1");
  await reporter.reportDue();
  await reporter.idle();
  assert.equal(kafka.calls, 1);
  // Two more windows; the first one's retry comes later than theirs would.
  for (const due of [M2 + GRACE, M3 + GRACE]) {
    clock.now = due;
    await reporter.reportDue();
    await reporter.idle();
  }
  // Only the oldest window was tried: the others wait for it.
  assert.deepEqual(kafka.tried, Array(3).fill("2026-01-01T12:00:00.000Z"));
  assert.equal((await store.listOutbox()).length, 3);
  kafka.failWith = undefined;
  clock.now += 50_000;
  await reporter.reportDue();
  await reporter.idle();
  // One tick delivers all three, oldest first.
  assert.deepEqual(kafka.delivered, [
    "2026-01-01T12:00:00.000Z",
    "2026-01-01T12:01:00.000Z",
    "2026-01-01T12:02:00.000Z",
  ]);
  assert.deepEqual(await store.listOutbox(), []);
  await store.close();
});

Deno.test("a webhook URL gets the windows in order, and waiting for its earlier window holds up no other URL", async () => {
  await using logs = await captureLogs();
  let down = true;
  await using receiver = startReceiver((request) =>
    request.path === "/a" && down ? 503 : 204
  );
  const store = kvStore(await Deno.openKv(":memory:"));
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
  await store.close();
});

Deno.test("deliveryLeaseMs() outlasts the slowest webhook delivery, and two minutes at least", () => {
  const bounds = {
    webhookAttempts: 3,
    webhookTimeoutMs: 5000,
    maxUrlsPerWindow: 1000,
    webhookConcurrency: 32,
  };
  // 32 rounds of 32 URLs, each tried 3 times for up to 5 s plus backoff.
  assert.equal(deliveryLeaseMs(bounds), 60_000 + 3 * 10_000 * 32);
  assert.equal(
    deliveryLeaseMs({ ...bounds, maxUrlsPerWindow: 0 }),
    120_000,
  );
});

Deno.test("after shutdown begins, reports still enter the outbox but no delivery starts", async () => {
  await using logs = await captureLogs();
  const store = kvStore(await Deno.openKv(":memory:"));
  const sink = scriptedSink("kafka-rest");
  const stopping = new AbortController();
  const reporter = createReporter({
    store,
    logger: logs.logger("reporter"),
    sinks: [sink.sink],
    clock: () => M1 + GRACE,
    windowMs: WINDOW,
    graceMs: GRACE,
    signal: stopping.signal,
  });
  await store.recordId(M0, "1");
  stopping.abort();
  assert.equal((await reporter.reportDue()).length, 1);
  await reporter.idle();
  assert.equal(sink.calls, 0);
  // Left for the next instance, with no attempt counted.
  const [entry] = await store.listOutbox();
  assert.equal(entry?.attempts, 0);
  await store.close();
});
