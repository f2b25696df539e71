import assert from "node:assert/strict";
import { createBufferedStore } from "../../lib/store/buffered_store.ts";
import {
  type IdRole,
  type IdWaiter,
  StoreUnavailableError,
  withIdRole,
} from "../../lib/store/store.ts";
import { createKvStore } from "../../lib/store/kv/store_kv.ts";
import { failingCommits, gatedCommits, tempKvPath } from "../helpers/kv.ts";
import { captureLogs } from "../helpers/logs.ts";

const M0 = Date.UTC(2026, 0, 1, 12, 0);
const RETENTION = 3_600_000;

/**
 * Whether `promise` settles before the event loop's next turn: answered
 * from memory, without waiting for any I/O (a commit, or a held one).
 */
function answeredAtOnce(promise: Promise<unknown>): Promise<boolean> {
  const settled = promise.then(() => true, () => true);
  const nextTurn = new Promise<false>((resolve) =>
    setTimeout(() => resolve(false), 0)
  );
  return Promise.race([settled, nextTurn]);
}

Deno.test("buffered recordId() answers before the commit, and the commit follows", async () => {
  await using logs = await captureLogs();
  const gated = gatedCommits(await Deno.openKv(":memory:"));
  const store = createBufferedStore(
    createKvStore(gated.kv, { retentionMs: RETENTION }),
    { logger: logs.logger("store") },
  );
  const release = gated.hold();
  const answers = ["1", "2", "2", "3"].map((id) => store.recordId(M0, id));
  for (const answer of answers) assert.equal(await answer, true);
  assert.equal(await store.countIds(M0), 0); // acknowledged, not committed
  release();
  await store.close(); // commits what is pending
  assert.deepEqual(logs.of("store"), []);
});

Deno.test("buffered recordId() waits for its commit once maxPending ids are pending", async () => {
  await using logs = await captureLogs();
  const gated = gatedCommits(await Deno.openKv(":memory:"));
  await using store = createBufferedStore(
    createKvStore(gated.kv, { retentionMs: RETENTION }),
    { logger: logs.logger("store"), maxPending: 2 },
  );
  const release = gated.hold();
  assert.equal(await store.recordId(M0, "1"), true);
  assert.equal(await store.recordId(M0, "2"), true);
  const third = store.recordId(M0, "3");
  assert.equal(await answeredAtOnce(third), false);
  release();
  assert.equal(await third, true);
  assert.equal(await store.countIds(M0), 3);
});

Deno.test("buffered recordId() answers an id it knows as a repeat, even with a full buffer", async () => {
  await using logs = await captureLogs();
  const gated = gatedCommits(await Deno.openKv(":memory:"));
  const store = createBufferedStore(
    createKvStore(gated.kv, { retentionMs: RETENTION }),
    { logger: logs.logger("store"), maxPending: 1 },
  );
  assert.equal(await store.recordId(M0, "1"), true);
  await store.recordId(M0 + 60_000, "0"); // waits for "1" to commit
  assert.equal(store.knows(M0, "1"), true);
  const release = gated.hold();
  assert.equal(await store.recordId(M0, "2"), true); // fills the buffer
  assert.equal(store.knows(M0, "2"), false);
  const repeat = store.recordId(M0, "1");
  assert.equal(await answeredAtOnce(repeat), true);
  assert.equal(await repeat, false);
  release();
  await store.close();
  assert.deepEqual(logs.of("store"), []);
});

Deno.test("buffered recordId() waits for its commit while the oldest pending id is older than maxAgeMs", async () => {
  await using logs = await captureLogs();
  const gated = gatedCommits(await Deno.openKv(":memory:"));
  const clock = { now: 0 };
  await using store = createBufferedStore(
    createKvStore(gated.kv, { retentionMs: RETENTION }),
    { logger: logs.logger("store"), maxAgeMs: 100, clock: () => clock.now },
  );
  const release = gated.hold();
  assert.equal(await store.recordId(M0, "1"), true);
  clock.now = 99;
  assert.equal(await store.recordId(M0, "2"), true);
  clock.now = 100; // "1" has waited 100 ms
  const third = store.recordId(M0, "3");
  assert.equal(await answeredAtOnce(third), false);
  release();
  assert.equal(await third, true);
  // Everything committed: acknowledging at once again.
  clock.now = 1000;
  assert.equal(await answeredAtOnce(store.recordId(M0, "4")), true);
});

Deno.test("buffered recordId() logs lost ids, then answers failures until the store recovers", async () => {
  await using logs = await captureLogs();
  const failures = { count: 1000 };
  await using store = createBufferedStore(
    createKvStore(failingCommits(await Deno.openKv(":memory:"), failures), {
      retentionMs: RETENTION,
      commitAttempts: 2,
      retryBaseMs: 1,
    }),
    { logger: logs.logger("store"), lossReportMs: 10 },
  );
  assert.equal(await store.recordId(M0, "1"), true);
  assert.equal(await store.recordId(M0, "2"), true);
  await logs.first("store");
  // The buffered commit failed: the next caller sees the failure.
  await assert.rejects(store.recordId(M0, "3"), StoreUnavailableError);
  const lost = logs.of("store");
  assert.equal(lost.length, 1);
  assert.equal(lost[0]!.level, "error");
  assert.equal(lost[0]!.properties.lost, 2);

  failures.count = 0;
  assert.equal(await store.recordId(M0, "4"), true); // durable, succeeded
  assert.equal(await store.recordId(M0, "5"), true); // buffered again
});

Deno.test("buffered close() commits every acknowledged id", async () => {
  await using logs = await captureLogs();
  await using file = await tempKvPath();
  const store = createBufferedStore(
    createKvStore(await Deno.openKv(file.path), { retentionMs: RETENTION }),
    { logger: logs.logger("store") },
  );
  for (let i = 0; i < 2000; i++) {
    assert.equal(await store.recordId(M0, String(i % 1500)), true);
  }
  await store.close();
  await using reopened = createKvStore(await Deno.openKv(file.path), {
    retentionMs: RETENTION,
  });
  assert.equal(await reopened.countIds(M0), 1500);
});

Deno.test("buffered recordId() commits an id whose window was reported before its commit in the next window", async () => {
  await using logs = await captureLogs();
  await using file = await tempKvPath();
  let moved = 0;
  const store = createBufferedStore(
    createKvStore(await Deno.openKv(file.path), { retentionMs: RETENTION }),
    {
      logger: logs.logger("store"),
      lossReportMs: 10,
      windowMs: 60_000,
      onMoved: () => moved++,
    },
  );
  await store.claimReport(M0, "reporter", 0, 60_000);
  assert.equal(await store.recordId(M0, "late"), true); // acknowledged
  await store.close();
  assert.equal(moved, 1);
  assert.equal(logs.of("store").length, 0, "nothing lost");
  await using reopened = createKvStore(await Deno.openKv(file.path), {
    retentionMs: RETENTION,
  });
  assert.equal(await reopened.countIds(M0 + 60_000), 1);
  assert.equal(await reopened.countIds(M0), 0);
});

Deno.test("buffered takeId() takes a new id at once and commits it, says repeat for a known id, and leaves a full buffer to recordId()", async () => {
  await using logs = await captureLogs();
  const gated = gatedCommits(await Deno.openKv(":memory:"));
  await using store = createBufferedStore(
    createKvStore(gated.kv, { retentionMs: RETENTION }),
    { logger: logs.logger("store"), maxPending: 1 },
  );
  const release = gated.hold();
  assert.equal(store.takeId(M0, "1"), "new");
  // The buffer holds its one id: the next must wait for a commit.
  assert.equal(store.takeId(M0, "2"), undefined);
  assert.equal(store.queuedIds(), 1);
  release();
  await store.recordId(M0, "2");
  assert.equal(store.takeId(M0, "1"), "repeat");
  assert.equal(await store.countIds(M0), 2);
});

Deno.test("buffered takeId() commits the ids of one span of time through one waiter, settled by count", async () => {
  await using logs = await captureLogs();
  await using file = await tempKvPath();
  const kv = createKvStore(await Deno.openKv(file.path), {
    retentionMs: RETENTION,
  });
  const waiters = new Set<IdWaiter>();
  const watched: IdRole = {
    recordId: (minute, id) => kv.recordId(minute, id),
    queueId: (minute, id, waiter) => {
      waiters.add(waiter);
      kv.queueId(minute, id, waiter);
    },
    takeId: (minute, id) => kv.takeId(minute, id),
    knows: (minute, id) => kv.knows(minute, id),
    countIds: (minute) => kv.countIds(minute),
    queuedIds: () => kv.queuedIds(),
    close: () => kv.close(),
  };
  const clock = { now: 0 };
  const store = createBufferedStore(withIdRole(kv, watched), {
    logger: logs.logger("store"),
    clock: () => clock.now,
  });
  for (let i = 0; i < 100; i++) assert.equal(store.takeId(M0, `${i}`), "new");
  clock.now = 5;
  // "7" is still committing: queued again, and answered as a repeat.
  for (const id of ["7", "100", "101"]) {
    assert.equal(store.takeId(M0, id), "new");
  }
  assert.equal(waiters.size, 2);
  // close() waits until every acknowledged id is counted settled.
  await store.close();
  assert.deepEqual(logs.of("store"), []);
  await using reopened = createKvStore(await Deno.openKv(file.path), {
    retentionMs: RETENTION,
  });
  assert.equal(await reopened.countIds(M0), 102);
});

Deno.test("a durable store's takeId() leaves every new id to recordId(), and answers one it knows as a repeat", async () => {
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: RETENTION,
  });
  assert.equal(store.takeId(M0, "1"), undefined);
  assert.equal(await store.countIds(M0), 0);
  assert.equal(await store.recordId(M0, "1"), true);
  assert.equal(store.takeId(M0, "1"), "repeat");
  assert.equal(store.takeId(M0 + 60_000, "1"), undefined);
});
