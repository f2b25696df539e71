/**
 * Behaviour every store backend must have, checked the same way for each:
 * the report claim (one owner, closing the window, its lease), the URL cap,
 * the outbox, and ids queued through one waiter.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { MinuteReport } from "../../lib/report/sink.ts";
import {
  type IdWaiter,
  type Store,
  StoreUnavailableError,
  WindowClosedError,
} from "../../lib/store/store.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12, 0);
const NEXT = MINUTE + 60_000;

/**
 * Asserts the report claim on `stores`, instances on one backend (at least
 * two): of many racing claims exactly one wins; the claim closes the window
 * to new ids and URLs on every instance, while ids and URLs known before it
 * stay repeats; only the owner completes the report, which drops the window
 * from the unreported ones and cannot be claimed again.
 */
export async function checkReportClaim(stores: Store[]): Promise<void> {
  const [first, second] = stores;
  assert.ok(first && second, "checkReportClaim needs two stores");
  await Promise.all(["1", "2", "3"].map((id) => first.recordId(MINUTE, id)));
  await first.recordId(NEXT, "9");
  assert.equal(
    await first.recordUrl(MINUTE, "https://example.com/a"),
    "recorded",
  );
  assert.deepEqual(await second.unreportedWindows(), [MINUTE, NEXT]);

  const owners = stores.flatMap((_, i) => [`owner-${i}-a`, `owner-${i}-b`]);
  const claims = await Promise.all(
    owners.map((owner, i) =>
      stores[Math.floor(i / 2)]!.claimReport(MINUTE, owner, NEXT, 60_000)
    ),
  );
  assert.equal(claims.filter((claim) => claim.claimed).length, 1);
  assert.ok(claims.every((c) => c.claimed || c.reason === "claimed"));
  const winner = claims.findIndex((claim) => claim.claimed);

  for (const store of [first, second]) {
    await assert.rejects(store.recordId(MINUTE, "4"), WindowClosedError);
    await assert.rejects(
      store.recordUrl(MINUTE, "https://example.com/b"),
      WindowClosedError,
    );
  }
  assert.equal(await first.recordId(MINUTE, "1"), false);
  assert.equal(await first.recordUrl(MINUTE, "https://example.com/a"), "known");
  assert.equal(await second.countIds(MINUTE), 3);

  await assert.rejects(
    first.completeReport(MINUTE, "someone-else", 3),
    StoreUnavailableError,
  );
  await stores[Math.floor(winner / 2)]!.completeReport(
    MINUTE,
    owners[winner]!,
    3,
  );
  assert.deepEqual(await second.unreportedWindows(), [NEXT]);
  assert.equal(await first.countIds(MINUTE), 0);
  assert.deepEqual(
    await second.claimReport(MINUTE, "late", NEXT + 3_600_000, 60_000),
    { claimed: false, reason: "reported" },
  );
  assert.equal(await second.recordId(NEXT, "10"), true);
}

/**
 * Asserts the per-window URL cap on `a` and `b`, two instances on one
 * backend, each created with a cap of `cap` URLs: URLs racing from both
 * instances fill exactly the cap, repeats stay `known`, further URLs are
 * `full`, and the next window starts empty.
 */
export async function checkUrlCap(
  a: Store,
  b: Store,
  cap: number,
): Promise<void> {
  const urls = Array.from(
    { length: cap * 3 },
    (_, i) => `https://h${i}.example/`,
  );
  const outcomes = await Promise.all(
    urls.flatMap((url) => [a.recordUrl(MINUTE, url), b.recordUrl(MINUTE, url)]),
  );
  assert.equal(outcomes.filter((o) => o === "recorded").length, cap);
  assert.ok(outcomes.includes("full"));
  assert.ok(outcomes.every((o) => ["recorded", "known", "full"].includes(o)));
  const stored = await b.listOwedUrls(MINUTE);
  assert.equal(stored.length, cap);
  assert.equal(new Set(stored).size, cap);
  for (const store of [a, b]) {
    assert.equal(await store.recordUrl(MINUTE, stored[0]!), "known");
    assert.equal(
      await store.recordUrl(MINUTE, "https://late.example/"),
      "full",
    );
  }
  assert.equal(await a.recordUrl(NEXT, "https://late.example/"), "recorded");
  assert.deepEqual(await b.listOwedUrls(NEXT), ["https://late.example/"]);
}

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
    a.updateOutbox(fromA!, { notBefore: 5000 }),
    b.updateOutbox(fromB!, { notBefore: 5000 }),
  ]);
  assert.equal(leases.filter(Boolean).length, 1);
  const winner = leases[0] ? fromA! : fromB!;
  await (leases[0] ? a : b).updateOutbox(winner, {
    attempts: winner.attempts + 1,
    notBefore: 9000,
  });
  const [retried] = (await a.listOutbox()).filter((e) => e.sink === "kafka");
  assert.equal(retried?.attempts, 1);
  assert.equal(retried?.notBefore, 9000);
  // A stale copy can neither take nor finish it any more.
  const stale = leases[0] ? fromB! : fromA!;
  assert.equal(
    await (leases[0] ? b : a).updateOutbox(stale, { notBefore: 7000 }),
    false,
  );
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

/**
 * Asserts what `windowStats` tells of the windows asked for, and only of
 * those: counts of reported windows, claimed windows without a count yet,
 * and nothing for windows the store knows nothing of.
 */
export async function checkWindowStats(store: Store): Promise<void> {
  const minutes = [0, 1, 2, 3].map((i) => MINUTE + i * 60_000);
  for (const [i, minute] of minutes.entries()) {
    await store.recordId(minute, "1");
    await store.claimReport(minute, "me", minute + 62_000, 60_000);
    if (i < 3) await store.completeReport(minute, "me", i + 1);
  }
  const asked = [minutes[0]!, minutes[2]!, minutes[3]!, MINUTE + 600_000];
  assert.deepEqual(await store.windowStats(asked), [
    { minute: minutes[0], uniqueIds: 1, deliveries: {} },
    { minute: minutes[2], uniqueIds: 3, deliveries: {} },
    { minute: minutes[3], uniqueIds: undefined, deliveries: {} },
  ]);
  assert.deepEqual(await store.windowStats([]), []);
}

/**
 * Asserts that the URLs a window's report is done with, marked on one
 * instance, are no longer owed on another, and only in their window.
 */
export async function checkOwedUrls(a: Store, b: Store): Promise<void> {
  const urls = [
    "https://a.example/",
    "https://b.example/",
    "https://c.example/",
  ];
  for (const url of urls) await a.recordUrl(MINUTE, url);
  await a.recordUrl(NEXT, urls[1]!);
  assert.deepEqual((await b.listOwedUrls(MINUTE)).sort(), urls);
  await a.markUrlDone(MINUTE, urls[1]!);
  await b.markUrlDone(MINUTE, urls[1]!);
  assert.deepEqual((await b.listOwedUrls(MINUTE)).sort(), [urls[0], urls[2]]);
  // A URL done with is still recorded: it is known, not recorded again.
  assert.equal(await a.recordUrl(MINUTE, urls[1]!), "known");
  assert.deepEqual(await a.listOwedUrls(NEXT), [urls[1]]);
  for (const url of [urls[0]!, urls[2]!]) await b.markUrlDone(MINUTE, url);
  assert.deepEqual(await a.listOwedUrls(MINUTE), []);
}

/**
 * Asserts what `queueId` tells one waiter that many ids share: one answer
 * per id given, `true` once for each new id, `false` for a repeat (one
 * still committing, and at once for one committed), and the error with the
 * id for a window claimed meanwhile.
 */
export async function checkQueueId(store: Store): Promise<void> {
  const answers: (boolean | string)[] = [];
  let wanted = 0;
  let arrived = Promise.withResolvers<void>();
  const answer = (value: boolean | string) => {
    answers.push(value);
    if (answers.length === wanted) arrived.resolve();
  };
  const waiter: IdWaiter = {
    resolve: answer,
    reject: (error, id) => answer(`${error.name} ${id}`),
  };
  const expect = async (count: number) => {
    wanted = answers.length + count;
    arrived = Promise.withResolvers();
    if (answers.length < wanted) await arrived.promise;
    return answers.splice(0);
  };

  const given = ["1", "2", "1", "3", "2"];
  for (const id of given) store.queueId(MINUTE, id, waiter);
  assert.deepEqual(
    (await expect(given.length)).sort(),
    [false, false, true, true, true],
  );
  store.queueId(MINUTE, "3", waiter);
  assert.deepEqual(answers.splice(0), [false], "a committed id, at once");
  await store.claimReport(MINUTE, "me", NEXT, 60_000);
  store.queueId(MINUTE, "4", waiter);
  assert.deepEqual(await expect(1), ["WindowClosedError 4"]);
  assert.equal(await store.countIds(MINUTE), 3);
}
