/**
 * Behaviour every store backend must have, checked the same way for each:
 * the report claim's lease and the outbox.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { MinuteReport } from "../../lib/sink.ts";
import { type Store, StoreUnavailableError } from "../../lib/store.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12, 0);

/** Asserts the outbox contract on `a` and `b`, two stores on one backend. */
export async function checkOutboxContract(a: Store, b: Store): Promise<void> {
  const report: MinuteReport = {
    minute: "2026-01-01T12:00:00.000Z",
    unique_ids: 2,
    window_ms: 60_000,
    reported_at: "2026-01-01T12:01:02.000Z",
  };
  await a.recordId(MINUTE, "1");
  await a.recordId(MINUTE, "2");
  assert.deepEqual(await a.claimReport(MINUTE, "me", 1000, 60_000), {
    claimed: true,
  });
  await a.completeReport(MINUTE, "me", 2, {
    report,
    sinks: ["log", "kafka"],
    now: 1000,
  });
  const listed = await b.listOutbox();
  assert.deepEqual(
    listed.map(({ version: _, ...entry }) => entry).sort((x, y) =>
      x.sink.localeCompare(y.sink)
    ),
    ["kafka", "log"].map((sink) => ({
      minute: MINUTE,
      sink,
      report,
      attempts: 0,
      createdAt: 1000,
      notBefore: 1000,
    })),
  );
  // Two instances race for the same entry: one lease wins.
  const [fromA] = (await a.listOutbox()).filter((e) => e.sink === "kafka");
  const [fromB] = listed.filter((e) => e.sink === "kafka");
  const leases = await Promise.all([
    a.leaseOutbox(fromA!, 5000),
    b.leaseOutbox(fromB!, 5000),
  ]);
  assert.equal(leases.filter(Boolean).length, 1);
  const winner = leases[0] ? fromA! : fromB!;
  await (leases[0] ? a : b).retryOutbox(winner, 9000);
  const [retried] = (await a.listOutbox()).filter((e) => e.sink === "kafka");
  assert.equal(retried?.attempts, 1);
  assert.equal(retried?.notBefore, 9000);
  // A stale copy can neither take nor finish it any more.
  const stale = leases[0] ? fromB! : fromA!;
  assert.equal(await (leases[0] ? b : a).leaseOutbox(stale, 7000), false);
  await (leases[0] ? b : a).removeOutbox(stale, "delivered", 9100);
  assert.equal(
    (await a.listOutbox()).filter((e) => e.sink === "kafka").length,
    1,
  );

  for (const entry of await a.listOutbox()) {
    await a.removeOutbox(
      entry,
      entry.sink === "log" ? "delivered" : "dropped",
      9500,
    );
  }
  assert.deepEqual(await b.listOutbox(), []);
  // What became of each report is kept with the window.
  assert.deepEqual(await b.windowStats([MINUTE, MINUTE + 60_000]), [{
    minute: MINUTE,
    uniqueIds: 2,
    deliveries: {
      kafka: { state: "dropped", at: 9500, attempts: 1 },
      log: { state: "delivered", at: 9500, attempts: 0 },
    },
  }]);
}

/**
 * Asserts that a claim older than its lease can be taken over, and that only
 * the new owner can then complete the report.
 */
export async function checkStaleClaimTakeover(store: Store): Promise<void> {
  assert.deepEqual(await store.claimReport(MINUTE, "a", 1000, 500), {
    claimed: true,
  });
  assert.deepEqual(await store.claimReport(MINUTE, "b", 1499, 500), {
    claimed: false,
    reason: "claimed",
  });
  assert.deepEqual(await store.claimReport(MINUTE, "b", 1500, 500), {
    claimed: true,
  });
  await assert.rejects(
    store.completeReport(MINUTE, "a", 0),
    StoreUnavailableError,
  );
  await store.completeReport(MINUTE, "b", 0);
}
