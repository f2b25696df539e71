import assert from "node:assert/strict";
import {
  deliveryKey,
  dueDeliveries,
  failureAction,
} from "../lib/report/outbox_delivery.ts";
import {
  PermanentSinkError,
  type Sink,
  SinkWaitingError,
} from "../lib/report/sink.ts";
import type { OutboxEntry } from "../lib/store/store.ts";

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

const send = () => Promise.resolve();
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
  assert.deepEqual(summary(entries, [deliveryKey(entries[2]!)]), [
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

Deno.test("failureAction() waits, retries with a doubling delay, or drops", async (t) => {
  const timing = { maxAgeMs: 600_000, retryBaseMs: 1000, retryMaxMs: 5000 };
  const fresh = entry(M0, "kafka", { createdAt: NOW - 1000 });
  const cases: [string, unknown, OutboxEntry, unknown][] = [
    ["waiting is no attempt", new SinkWaitingError("earlier"), fresh, {
      action: "wait",
    }],
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
    [
      "waiting ages out never: the window before it does",
      new SinkWaitingError("earlier"),
      { ...fresh, createdAt: 0 },
      { action: "wait" },
    ],
  ];
  for (const [name, error, failed, expected] of cases) {
    await t.step(name, () => {
      assert.deepEqual(failureAction(error, failed, NOW, timing), expected);
    });
  }
});
