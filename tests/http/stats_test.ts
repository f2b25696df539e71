import assert from "node:assert/strict";
import { createReporter } from "../../lib/report/reporter.ts";
import type { Sink } from "../../lib/report/sink.ts";
import { collectStats, parseStatsMinutes } from "../../lib/http/stats.ts";
import { createKvStore } from "../../lib/store/kv/store_kv.ts";
import { captureLogs } from "../helpers/logs.ts";

const WINDOW = 60_000;
const M0 = Date.UTC(2026, 0, 1, 12, 0);

Deno.test("parseStatsMinutes() takes 1 to 1440, 60 by default", () => {
  assert.equal(parseStatsMinutes(""), 60);
  assert.equal(parseStatsMinutes("minutes=1"), 1);
  assert.equal(parseStatsMinutes("minutes=1440"), 1440);
  for (
    const bad of [
      "minutes=0",
      "minutes=1441",
      "minutes=",
      "minutes=1.5",
      "minutes=-3",
      "minutes=1&minutes=2",
      "minutes=abc",
    ]
  ) {
    assert.equal(parseStatsMinutes(bad), undefined, bad);
  }
});

Deno.test("collectStats() shows counts per window, each sink's state, and the live count", async () => {
  await using logs = await captureLogs();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 3_600_000,
  });
  const clock = { now: M0 + 2 * WINDOW + 5000 };
  let kafkaDown = true;
  const sinks: Sink[] = [
    { name: "log", send: () => Promise.resolve("delivered" as const) },
    {
      name: "kafka",
      send: () =>
        kafkaDown
          ? Promise.reject(new Error("broker down"))
          : Promise.resolve("delivered"),
    },
  ];
  const reporter = createReporter({
    store,
    sinks,
    logger: logs.logger("reporter"),
    clock: () => clock.now,
    windowMs: WINDOW,
    delivery: { retryBaseMs: 1000 },
  });
  await Promise.all(["1", "2", "3"].map((id) => store.recordId(M0, id)));
  await store.recordId(M0 + WINDOW, "4");
  await store.recordId(M0 + 2 * WINDOW, "5"); // the current window
  await store.recordId(M0 + 2 * WINDOW, "6");
  await reporter.reportDue();
  await reporter.idle();

  const options = {
    store,
    sinks: ["log", "kafka"],
    windowMs: WINDOW,
    clock: () => clock.now,
  };
  const stats = await collectStats(3, options);
  assert.equal(stats.current.unique_ids, 2);
  assert.equal(stats.current.minute, "2026-01-01T12:02:00.000Z");
  assert.deepEqual(stats.minutes.map((m) => [m.minute, m.unique_ids]), [
    ["2026-01-01T11:59:00.000Z", null],
    ["2026-01-01T12:00:00.000Z", 3],
    ["2026-01-01T12:01:00.000Z", 1],
  ]);
  const at = new Date(clock.now).toISOString();
  assert.deepEqual(stats.minutes[1]!.sinks, {
    log: { state: "delivered", at, attempts: 0 },
    kafka: {
      state: "pending",
      attempts: 1,
      next_attempt_at: new Date(clock.now + 1000).toISOString(),
    },
  });
  assert.deepEqual(stats.minutes[0]!.sinks, {
    log: { state: "unknown" },
    kafka: { state: "unknown" },
  });
  assert.deepEqual(stats.sink_summary, {
    log: { last_success: at, pending: 0, dropped: 0 },
    kafka: { last_success: null, pending: 2, dropped: 0 },
  });

  kafkaDown = false;
  clock.now += 5000;
  await reporter.reportDue();
  await reporter.idle();
  const later = await collectStats(3, options);
  assert.equal(later.sink_summary.kafka!.pending, 0);
  assert.equal(later.minutes[2]!.sinks.kafka!.state, "delivered");
});
