import assert from "node:assert/strict";
import { createReporter, dueWindows } from "../../lib/report/reporter.ts";
import {
  type MinuteReport,
  PermanentSinkError,
  type SendOutcome,
  type Sink,
} from "../../lib/report/sink.ts";
import type { Store } from "../../lib/store/store.ts";
import { tempKvPath } from "../helpers/kv.ts";
import { captureLogs } from "../helpers/logs.ts";
import {
  GRACE,
  kvStore,
  M0,
  M1,
  M2,
  M3,
  reporterFor,
  summary,
  WINDOW,
} from "../helpers/reporting.ts";

Deno.test("reportDue() reports the previous window once its grace has passed", async () => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
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
});

Deno.test("reportDue() reports an empty previous window as zero", async () => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
  const { reporter, clock } = reporterFor(store, logs);
  clock.now = M1 + GRACE + 5;
  assert.deepEqual(summary(await reporter.reportDue()), [[
    "2026-01-01T12:00:00.000Z",
    0,
  ]]);
  await reporter.idle();
});

Deno.test("reportDue() catches up on windows missed while down, oldest first", async () => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
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
      await using store = kvStore(await Deno.openKv(":memory:"));
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
    });
  }
});

Deno.test("reportDue() keeps going when one window cannot be reported", async () => {
  await using logs = await captureLogs();
  const kv = await Deno.openKv(":memory:");
  await using store = kvStore(kv);
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
      send(report: MinuteReport): Promise<SendOutcome> {
        state.calls++;
        state.tried.push(report.minute);
        if (state.failWith) return Promise.reject(state.failWith);
        delivered.push(report.minute);
        return Promise.resolve("delivered");
      },
    } satisfies Sink,
  };
  return state;
}

const OUTBOX_TIMING = { retryBaseMs: 1000, retryMaxMs: 4000 };

Deno.test("a failing sink is retried on later ticks with backoff, without holding up the others", async () => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
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
      await using store = kvStore(await Deno.openKv(":memory:"));
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
    await using store = kvStore(await Deno.openKv(file.path));
    const reporter = reporterOn(store, down.sink, "old");
    await reporter.reportDue();
    await reporter.idle();
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

Deno.test("a sink that comes back gets the windows it missed in order, the next one waiting for the one before", async () => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
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
});

Deno.test("after shutdown begins, reports still enter the outbox but no delivery starts", async () => {
  await using logs = await captureLogs();
  await using store = kvStore(await Deno.openKv(":memory:"));
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
});
