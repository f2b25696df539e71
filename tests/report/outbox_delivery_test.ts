import assert from "node:assert/strict";
import {
  attemptKey,
  dueDeliveries,
  failureAction,
  OutboxDelivery,
} from "../../lib/report/outbox_delivery.ts";
import { PermanentSinkError, type Sink } from "../../lib/report/sink.ts";
import type { OutboxEntry } from "../../lib/store/store.ts";
import { createKvStore } from "../../lib/store/kv/store_kv.ts";
import { captureLogs } from "../helpers/logs.ts";

const M0 = Date.UTC(2026, 0, 1, 12, 0);
const M1 = M0 + 60_000;
const M2 = M1 + 60_000;
const NOW = M2 + 70_000;

function entry(
  minute: number,
  sink: string,
  change: Partial<OutboxEntry> = {},
): OutboxEntry {
  return {
    minute,
    sink,
    report: {
      minute: new Date(minute).toISOString(),
      unique_ids: 1,
      window_ms: 60_000,
      reported_at: new Date(minute + 62_000).toISOString(),
    },
    attempts: 0,
    createdAt: minute + 62_000,
    notBefore: minute + 62_000,
    version: "1",
    ...change,
  };
}

const send = () => Promise.resolve("delivered" as const);
const SINKS = new Map<string, Sink>([
  ["kafka", { name: "kafka", send }],
  ["webhook", { name: "webhook", send, ordersPerTarget: true }],
]);

/** The due entries as `<sink> <minute>` with the windows owed before. */
function summary(entries: OutboxEntry[], busy: string[] = []) {
  return dueDeliveries(entries, { sinks: SINKS, now: NOW, busy: new Set(busy) })
    .map(({ entry, sink, earlier }) => [
      `${entry.sink} ${(entry.minute - M0) / 60_000}`,
      sink?.name,
      earlier.map((minute) => (minute - M0) / 60_000),
    ]);
}

Deno.test("dueDeliveries() gives a sink its oldest window only, unless it keeps order per target", () => {
  // Listed newest first: the order comes from the windows, not the listing.
  const entries = [M2, M1, M0].flatMap((m) => [
    entry(m, "kafka"),
    entry(m, "webhook"),
  ]);
  assert.deepEqual(summary(entries), [
    ["kafka 0", "kafka", []],
    ["webhook 0", "webhook", []],
    ["webhook 1", "webhook", [0]],
    ["webhook 2", "webhook", [0, 1]],
  ]);
});

Deno.test("dueDeliveries() skips entries not yet due and those under way here, and a held window still holds later ones", () => {
  const entries = [
    entry(M0, "kafka", { notBefore: NOW + 1 }),
    entry(M1, "kafka"),
    entry(M0, "webhook"),
    entry(M1, "webhook", { notBefore: NOW }),
    entry(M2, "webhook"),
  ];
  assert.deepEqual(summary(entries, [attemptKey(entries[2]!)]), [
    ["webhook 1", "webhook", [0]],
    ["webhook 2", "webhook", [0, 1]],
  ]);
});

Deno.test("dueDeliveries() hands over entries of a sink no longer configured, in order", () => {
  assert.deepEqual(summary([entry(M1, "gone"), entry(M0, "gone")]), [
    ["gone 0", undefined, []],
    ["gone 1", undefined, [0]],
  ]);
});

Deno.test("failureAction() retries with a doubling delay, or drops", async (t) => {
  const timing = { maxAgeMs: 600_000, retryBaseMs: 1000, retryMaxMs: 5000 };
  const fresh = entry(M0, "kafka", { createdAt: NOW - 1000 });
  const cases: [string, unknown, OutboxEntry, unknown][] = [
    ["a first failure", new Error("503"), fresh, {
      action: "retry",
      delayMs: 1000,
    }],
    ["a third failure", new Error("503"), { ...fresh, attempts: 2 }, {
      action: "retry",
      delayMs: 4000,
    }],
    ["the delay is capped", "thrown text", { ...fresh, attempts: 9 }, {
      action: "retry",
      delayMs: 5000,
    }],
    ["a refusal", new PermanentSinkError("401"), fresh, {
      action: "drop",
      reason: "refused",
    }],
    [
      "too old",
      new Error("503"),
      { ...fresh, createdAt: NOW - 600_000 },
      { action: "drop", reason: "too old" },
    ],
  ];
  for (const [name, error, failed, expected] of cases) {
    await t.step(name, () => {
      assert.deepEqual(
        failureAction(error, failed, { ...timing, now: NOW }),
        expected,
      );
    });
  }
});

/** A store whose outbox holds M0's report for `sinks`, made at `now`. */
async function storeWithReport(sinks: string[], now: number) {
  const store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 3_600_000,
  });
  await store.claimReport(M0, "test", now, 60_000);
  await store.completeReport(M0, "test", 1, {
    report: entry(M0, "any").report,
    sinks,
    now,
  });
  return store;
}

Deno.test("OutboxDelivery keeps reports of a sink no longer configured until they are too old, then drops them, logged", async () => {
  await using logs = await captureLogs();
  await using store = await storeWithReport(["gone"], NOW);
  const clock = { now: NOW + 999 };
  const delivery = new OutboxDelivery({
    store,
    sinks: [],
    logger: logs.logger("delivery"),
    clock: () => clock.now,
    timing: { maxAgeMs: 1000 },
  });
  await delivery.deliverDue();
  assert.equal((await store.listOutbox()).length, 1);
  assert.deepEqual(logs.of("delivery"), []);
  clock.now = NOW + 1000;
  await delivery.deliverDue();
  assert.deepEqual(await store.listOutbox(), []);
  const [line] = logs.of("delivery");
  assert.equal(line?.level, "error");
  assert.equal(line?.properties.sink, "gone");
  const [stats] = await store.windowStats([M0]);
  assert.equal(stats?.deliveries.gone?.state, "dropped");
});

Deno.test("OutboxDelivery holds an entry for leaseMs per attempt, after which another instance takes it over", async () => {
  await using logs = await captureLogs();
  await using store = await storeWithReport(["kafka"], NOW);
  const clock = { now: NOW };
  let release = () => {};
  const held = new Promise<void>((resolve) => release = resolve);
  const calls: string[] = [];
  const instance = (name: string, send: () => Promise<void>) =>
    new OutboxDelivery({
      store,
      sinks: [{
        name: "kafka",
        send: async () => {
          calls.push(name);
          await send();
          return "delivered" as const;
        },
      }],
      logger: logs.logger("delivery"),
      clock: () => clock.now,
      timing: { leaseMs: 5000 },
    });
  const stuck = instance("stuck", () => held);
  const other = instance("other", () => Promise.resolve());
  await stuck.deliverDue();
  assert.deepEqual(stuck.inProgress(), ["kafka 2026-01-01T12:00:00.000Z"]);
  assert.equal((await store.listOutbox())[0]?.notBefore, NOW + 5000);
  clock.now = NOW + 4999;
  await other.deliverDue();
  assert.deepEqual(calls, ["stuck"]);
  clock.now = NOW + 5000;
  await other.deliverDue();
  await other.idle();
  assert.deepEqual(calls, ["stuck", "other"]);
  assert.deepEqual(await store.listOutbox(), []);
  // The first attempt ends late: its outcome changes nothing.
  release();
  await stuck.idle();
  const [stats] = await store.windowStats([M0]);
  assert.deepEqual(stats?.deliveries.kafka, {
    state: "delivered",
    at: NOW + 5000,
    attempts: 0,
  });
});

Deno.test("OutboxDelivery reads the outbox once more for deliveries that finish together, not once each", async () => {
  await using logs = await captureLogs();
  const names = Array.from({ length: 10 }, (_, i) => `sink-${i}`);
  await using store = await storeWithReport(names, NOW);
  let lists = 0;
  // Counts the reads of the outbox; the rest goes to the real store.
  const counted = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (property === "listOutbox") lists++;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  let release = () => {};
  const held = new Promise<void>((resolve) => release = resolve);
  const delivery = new OutboxDelivery({
    store: counted,
    sinks: names.map((name) => ({
      name,
      send: () => held.then(() => "delivered" as const),
    })),
    logger: logs.logger("delivery"),
    clock: () => NOW,
  });
  await delivery.deliverDue();
  assert.equal(delivery.inProgress().length, 10);
  release();
  await delivery.idle();
  assert.deepEqual(await store.listOutbox(), []);
  assert.ok(lists < 1 + names.length, `${lists} reads`);
});
