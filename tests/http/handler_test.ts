import assert from "node:assert/strict";
import { createHandler } from "../../lib/http/handler.ts";
import type { IdWaiter, Store } from "../../lib/store/store.ts";
import { createKvStore } from "../../lib/store/kv/store_kv.ts";
import { createBufferedStore } from "../../lib/store/buffered_store.ts";
import { failingCommits } from "../helpers/kv.ts";
import { captureLogs } from "../helpers/logs.ts";
import { createServiceMetrics } from "../../lib/telemetry/service_metrics.ts";
import { formatMinute } from "../../lib/minute.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12, 0);
const BASE = "http://service.test/api/verve/accept";

async function setup(
  options: { maxUrlsPerWindow?: number; kv?: Deno.Kv } = {},
) {
  const logs = await captureLogs();
  const kv = options.kv ?? await Deno.openKv(":memory:");
  const store = createKvStore(kv, {
    retentionMs: 600_000,
    retryBaseMs: 1,
    commitAttempts: 2,
    maxUrlsPerWindow: options.maxUrlsPerWindow ?? 1000,
  });
  const handle = createHandler({
    store,
    logger: logs.logger("http"),
    clock: () => MINUTE + 1234,
  });
  return {
    store,
    logs,
    handle,
    async call(query: string, init?: RequestInit) {
      const response = await handle(new Request(`${BASE}${query}`, init));
      return {
        status: response.status,
        body: await response.text(),
        headers: response.headers,
      };
    },
    async [Symbol.asyncDispose]() {
      await store.close();
      await logs[Symbol.asyncDispose]();
    },
  };
}

Deno.test("handler answers 200 ok for a valid id and records it once", async () => {
  await using s = await setup();
  const first = await s.call("?id=7");
  assert.equal(first.status, 200);
  assert.equal(first.body, "ok");
  assert.equal(first.headers.get("content-type"), "text/plain; charset=utf-8");
  // Only an id moved to a later window gets its window named by default.
  assert.equal(first.headers.get("verve-window"), null);
  assert.deepEqual(
    await Promise.all(
      ["?id=007", "?id=7", "?id=-0", "?id=0"].map(async (q) =>
        (await s.call(q)).body
      ),
    ),
    ["ok", "ok", "ok", "ok"],
  );
  assert.equal(await s.store.countIds(MINUTE), 2);
});

Deno.test("handler answers 400 failed for bad queries", async (t) => {
  await using s = await setup();
  for (
    const query of [
      "",
      "?",
      "?id=",
      "?id",
      "?id=1.5",
      "?id=abc",
      "?id=9223372036854775808",
      "?id=1&id=2",
      "?id=%ZZ",
      "?id=1&url=ftp%3A%2F%2Fexample.com",
      "?id=1&url=not-a-url",
      "?id=1&url=" + "http://example.com/" + "a".repeat(2100),
      "?id=1&url=http%3A%2F%2Fa.example&url=http%3A%2F%2Fb.example",
      "?" + Array.from({ length: 9 }, (_, i) => `p${i}=1`).join("&") + "&id=1",
    ]
  ) {
    await t.step(JSON.stringify(query.slice(0, 60)), async () => {
      const response = await s.call(query);
      assert.equal(response.status, 400);
      assert.equal(response.body, "failed");
    });
  }
  assert.equal(await s.store.countIds(MINUTE), 0);
});

Deno.test("handler answers 404 for unknown paths and 405 for other methods", async () => {
  await using s = await setup();
  for (
    const path of ["/", "/api/verve", "/api/verve/accept/", "/API/verve/accept"]
  ) {
    const response = await s.handle(
      new Request(`http://service.test${path}?id=1`),
    );
    assert.equal(response.status, 404, path);
    assert.equal(await response.text(), "not found");
  }
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    const response = await s.call("?id=1", { method });
    assert.equal(response.status, 405, method);
    assert.equal(response.headers.get("allow"), "GET, HEAD");
    assert.equal(response.body, "method not allowed");
  }
  assert.equal(await s.store.countIds(MINUTE), 0);
});

Deno.test("handler answers HEAD like GET without a body", async () => {
  await using s = await setup();
  const ok = await s.call("?id=5", { method: "HEAD" });
  assert.equal(ok.status, 200);
  assert.equal(ok.body, "");
  const bad = await s.call("?id=x", { method: "HEAD" });
  assert.equal(bad.status, 400);
  assert.equal(bad.body, "");
  assert.equal(await s.store.countIds(MINUTE), 1);
});

Deno.test("handler answers an id it knows at once, and still records a URL that comes with it", async () => {
  await using s = await setup();
  assert.equal((await s.call("?id=5")).body, "ok");
  // Known in this window: the answer is a Response, not a promise of one.
  const known = s.handle(new Request(`${BASE}?id=5`));
  assert.ok(known instanceof Response);
  assert.equal(await known.text(), "ok");
  // Unknown, or known in another window: the store decides.
  assert.ok(s.handle(new Request(`${BASE}?id=6`)) instanceof Promise);
  const url = encodeURIComponent("https://hooks.example/k");
  const withUrl = s.handle(new Request(`${BASE}?id=5&url=${url}`));
  assert.ok(withUrl instanceof Promise);
  assert.equal((await withUrl).status, 200);
  assert.deepEqual(await s.store.listOwedUrls(MINUTE), [
    "https://hooks.example/k",
  ]);
  assert.equal(await s.store.countIds(MINUTE), 2);
});

Deno.test("handler records URLs, and answers 429 without counting the id past the cap", async () => {
  await using s = await setup({ maxUrlsPerWindow: 1 });
  const url = encodeURIComponent("https://hooks.example/a");
  assert.equal((await s.call(`?id=1&url=${url}`)).status, 200);
  assert.equal((await s.call(`?id=2&url=${url}`)).status, 200);
  const refused = await s.call(
    `?id=3&url=${encodeURIComponent("https://hooks.example/b")}`,
  );
  assert.equal(refused.status, 429);
  assert.equal(refused.body, "failed");
  assert.deepEqual(await s.store.listOwedUrls(MINUTE), [
    "https://hooks.example/a",
  ]);
  assert.equal(await s.store.countIds(MINUTE), 2);
  // Without a URL the same id is accepted.
  assert.equal((await s.call("?id=3")).status, 200);
  assert.equal(await s.store.countIds(MINUTE), 3);
});

Deno.test("handler answers 503 failed when the store cannot record", async (t) => {
  await t.step("commits keep failing", async () => {
    const failures = { count: Infinity };
    await using s = await setup({
      kv: failingCommits(await Deno.openKv(":memory:"), failures),
    });
    const response = await s.call("?id=1");
    assert.equal(response.status, 503);
    assert.equal(response.body, "failed");
    assert.equal(s.logs.of("http").length, 1);
    failures.count = 0;
    assert.equal(await s.store.countIds(MINUTE), 0);
    assert.equal((await s.call("?id=1")).status, 200);
  });
  await t.step(
    "the window and the three after it are already reported",
    async () => {
      await using s = await setup();
      for (let i = 0; i < 4; i++) {
        await s.store.claimReport(MINUTE + i * 60_000, "reporter", 0, 60_000);
      }
      const response = await s.call("?id=1");
      assert.equal(response.status, 503);
      assert.equal(response.body, "failed");
    },
  );
});

Deno.test("handler answers 500 failed without internals on an unexpected error", async () => {
  await using logs = await captureLogs();
  // A fake store, since no real one fails with a plain programming error.
  const brokenStore = {
    takeId: () => undefined,
    queueId: (_minute: number, id: string, waiter: IdWaiter) =>
      waiter.reject(new Error("secret internal detail"), id),
  } as unknown as Store;
  const handle = createHandler({
    store: brokenStore,
    logger: logs.logger("http"),
  });
  const response = await handle(new Request(`${BASE}?id=1`));
  assert.equal(response.status, 500);
  assert.equal(await response.text(), "failed");
  assert.equal(logs.of("http")[0]?.level, "error");
});

Deno.test("handler takes the window once, when the request arrives", async () => {
  await using logs = await captureLogs();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 600_000,
  });
  const times = [MINUTE + 59_999, MINUTE + 60_000];
  let calls = 0;
  const handle = createHandler({
    store,
    logger: logs.logger("http"),
    clock: () => times[Math.min(calls++, 1)]!,
  });
  assert.equal((await handle(new Request(`${BASE}?id=1`))).status, 200);
  assert.equal(calls, 1);
  assert.equal(await store.countIds(MINUTE), 1);
  assert.equal(await store.countIds(MINUTE + 60_000), 0);
});

Deno.test("handler with windowHeader names the window of every ok answer, of a repeat and of a HEAD too", async () => {
  await using logs = await captureLogs();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 600_000,
  });
  const handle = createHandler({
    store,
    logger: logs.logger("http"),
    clock: () => MINUTE + 1234,
    windowHeader: true,
  });
  const named = [];
  for (const init of [{}, {}, { method: "HEAD" }]) {
    const response = await handle(new Request(`${BASE}?id=1`, init));
    await response.body?.cancel();
    named.push(response.headers.get("verve-window"));
  }
  assert.deepEqual(named, Array(3).fill("2026-01-01T12:00:00.000Z"));
});

Deno.test("handler counts an id whose window is already reported in the next window, and names it", async () => {
  await using logs = await captureLogs();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 600_000,
  });
  const metrics = createServiceMetrics();
  // This clock is behind: another instance reported its window already.
  let now = MINUTE + 58_000;
  const handle = createHandler({
    store,
    logger: logs.logger("http"),
    clock: () => now,
    metrics,
  });
  assert.equal((await handle(new Request(`${BASE}?id=1`))).status, 200);
  assert.deepEqual(await store.claimReport(MINUTE, "other", 0, 60_000), {
    claimed: true,
  });
  await store.completeReport(MINUTE, "other", 1);
  const next = MINUTE + 60_000;
  const answers = [];
  for (
    const query of ["?id=2", "?id=3&url=https://example.com/hook", "?id=2"]
  ) {
    const response = await handle(new Request(`${BASE}${query}`));
    answers.push([
      response.status,
      await response.text(),
      response.headers.get("verve-window"),
    ]);
  }
  assert.deepEqual(answers, Array(3).fill([200, "ok", formatMinute(next)]));
  assert.equal(await store.countIds(next), 2);
  assert.deepEqual(await store.listOwedUrls(next), [
    "https://example.com/hook",
  ]);
  assert.match(metrics.registry.render(), /^verve_ids_moved_total 3$/m);
  // Once the clock names the next window itself, nothing is moved.
  now = next + 1;
  await handle(new Request(`${BASE}?id=4`));
  assert.match(metrics.registry.render(), /^verve_ids_moved_total 3$/m);
  assert.equal(await store.countIds(next), 3);
});

Deno.test("handler answers a new id a buffered store takes at once without a promise, and records it", async () => {
  await using logs = await captureLogs();
  await using store = createBufferedStore(
    createKvStore(await Deno.openKv(":memory:"), { retentionMs: 600_000 }),
    { logger: logs.logger("store") },
  );
  const handle = createHandler({
    store,
    logger: logs.logger("http"),
    clock: () => MINUTE + 1234,
  });
  const answer = handle(new Request(`${BASE}?id=9`));
  assert.ok(answer instanceof Response, "answered without a promise");
  assert.equal(await answer.text(), "ok");
  // With a URL it waits for the URL's record.
  const withUrl = handle(new Request(`${BASE}?id=10&url=https://a.example/`));
  assert.ok(withUrl instanceof Promise);
  assert.equal((await withUrl).status, 200);
  while (store.queuedIds() > 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal(await store.countIds(MINUTE), 2);
});

Deno.test("handler answers the health and readiness probes", async (t) => {
  await using logs = await captureLogs();
  const probe = async (
    handle: (r: Request) => Response | Promise<Response>,
    path: string,
    method = "GET",
  ) => {
    const response = await handle(
      new Request(`http://service.test${path}`, { method }),
    );
    return `${response.status} ${await response.text()}`;
  };

  await t.step("a store that answers", async () => {
    await using store = createKvStore(await Deno.openKv(":memory:"), {
      retentionMs: 600_000,
    });
    const handle = createHandler({ store, logger: logs.logger("http") });
    assert.equal(await probe(handle, "/healthz"), "200 ok");
    assert.equal(await probe(handle, "/readyz"), "200 ready");
    assert.equal(await probe(handle, "/readyz", "HEAD"), "200 ");
    assert.equal(
      await probe(handle, "/healthz", "POST"),
      "405 method not allowed",
    );
  });

  await t.step("a store that is gone", async () => {
    const store = createKvStore(await Deno.openKv(":memory:"), {
      retentionMs: 600_000,
    });
    await store.close();
    const handle = createHandler({ store, logger: logs.logger("http") });
    assert.equal(await probe(handle, "/healthz"), "200 ok");
    assert.equal(await probe(handle, "/readyz"), "503 not ready");
  });

  await t.step("a store that does not answer in time", async () => {
    await using kvStore = createKvStore(await Deno.openKv(":memory:"), {
      retentionMs: 600_000,
    });
    let release!: () => void;
    const stalled = new Promise<void>((resolve) => release = resolve);
    // A real store whose ping is held back, as a stalled backend would be.
    const store: Store = Object.assign(Object.create(kvStore), {
      ping: () => stalled,
    });
    const handle = createHandler({
      store,
      logger: logs.logger("http"),
      readyTimeoutMs: 50,
    });
    assert.equal(await probe(handle, "/readyz"), "503 not ready");
    release();
  });
});

Deno.test("handler counts each request under its route, and unknown or turned-off paths as other", async (t) => {
  await using logs = await captureLogs();
  await using store = createKvStore(await Deno.openKv(":memory:"), {
    retentionMs: 600_000,
  });
  /** `verve_http_requests_total` by `route status`, from `/metrics`. */
  async function counts(
    handle: (request: Request) => Response | Promise<Response>,
  ) {
    const text = await (await handle(new Request("http://s.test/metrics")))
      .text();
    return Object.fromEntries(
      [...text.matchAll(
        /^verve_http_requests_total\{route="([^"]+)",status="(\d+)"\} (\d+)$/gm,
      )].map((
        [, route, status, value],
      ) => [`${route} ${status}`, Number(value)]),
    );
  }
  const paths = [
    "/api/verve/accept?id=1",
    "/api/verve/accept?id=x",
    "/healthz",
    "/readyz",
    "/api/verve/stats?minutes=2",
    "/",
    "/nowhere",
  ];
  await t.step("every route on", async () => {
    const handle = createHandler({
      store,
      logger: logs.logger("http"),
      metrics: createServiceMetrics(),
      stats: () => Promise.resolve([]),
      statusPage: "<html></html>",
    });
    for (const path of paths) await handle(new Request(`http://s.test${path}`));
    await handle(new Request("http://s.test/healthz", { method: "POST" }));
    assert.deepEqual(await counts(handle), {
      "accept 200": 1,
      "accept 400": 1,
      "healthz 200": 1,
      "healthz 405": 1,
      "readyz 200": 1,
      "stats 200": 1,
      "status 200": 1,
      "other 404": 1,
    });
  });
  await t.step("stats and the status page off", async () => {
    const handle = createHandler({
      store,
      logger: logs.logger("http"),
      metrics: createServiceMetrics(),
    });
    for (const path of paths) await handle(new Request(`http://s.test${path}`));
    assert.deepEqual(await counts(handle), {
      "accept 200": 1,
      "accept 400": 1,
      "healthz 200": 1,
      "readyz 200": 1,
      "other 404": 3,
    });
  });
});
