/**
 * Shutdown of the real service process: a signal that arrives twice (as a
 * process-group signal reaches `deno task` and the service alike), and a
 * shutdown that cannot finish within `SHUTDOWN_TIMEOUT_MS`; and every close
 * path called twice.
 */
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { createBufferedStore } from "../lib/store/buffered_store.ts";
import { configureLogging } from "../lib/telemetry/logging.ts";
import { createKvStore } from "../lib/store/kv/store_kv.ts";
import { readIdLog, tempKvPath } from "./helpers/kv.ts";
import { LOOPBACK_ALLOW, startReceiver } from "./helpers/receiver.ts";
import { startService } from "./helpers/service.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12, 0);

Deno.test("a second SIGTERM during a shutdown is logged and ignored, and the shutdown finishes with exit 0", async (t) => {
  for (const ackMode of ["durable", "buffered"]) {
    await t.step(`with ACK_MODE=${ackMode}`, async () => {
      await using file = await tempKvPath();
      // A Kafka REST proxy that takes the request and never answers keeps
      // the shutdown busy until the sink's time limit.
      await using proxy = startReceiver(() => "hang");
      await using service = await startService({
        KV_PATH: file.path,
        ACK_MODE: ackMode,
        WINDOW_MS: "1000",
        REPORT_GRACE_MS: "200",
        REPORT_SINKS: "log,kafka-rest",
        KAFKA_REST_URL: proxy.url,
        KAFKA_REST_TIMEOUT_MS: "3000",
      });
      const send = (from: number) =>
        Promise.all(
          Array.from(
            { length: 200 },
            (_, i) =>
              fetch(`${service.url}/api/verve/accept?id=${from + i}`).then((
                response,
              ) => response.text()),
          ),
        );
      assert.ok((await send(0)).every((body) => body === "ok"));
      await proxy.waitFor(1); // a delivery is under way, and hangs
      assert.ok((await send(1000)).every((body) => body === "ok"));
      service.signal("SIGTERM");
      await service.waitForLog((line) =>
        line.message === "Received SIGTERM, shutting down"
      );
      service.signal("SIGTERM");
      await service.waitForLog((line) =>
        line.message.startsWith("Received SIGTERM again")
      );
      assert.equal(await service.stop("SIGTERM"), 0);
      assert.equal(
        service.lines.filter((line) =>
          line.message === "Received SIGTERM, shutting down"
        ).length,
        1,
      );
      assert.doesNotMatch(service.stderr(), /error|Bad resource/i);
      // Every id acknowledged was committed, in whichever window.
      const kv = await Deno.openKv(file.path);
      const logged = new Set((await readIdLog(kv)).map(({ id }) => id));
      kv.close();
      for (const from of [0, 1000]) {
        for (let i = 0; i < 200; i++) assert.ok(logged.has(String(from + i)));
      }
    });
  }
});

Deno.test("a shutdown that outlives SHUTDOWN_TIMEOUT_MS logs the deliveries it abandons and exits 1", async () => {
  await using file = await tempKvPath();
  // A Kafka REST proxy that takes the request and never answers.
  await using proxy = startReceiver(() => "hang");
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: "1000",
    REPORT_GRACE_MS: "100",
    REPORT_SINKS: "log,kafka-rest",
    KAFKA_REST_URL: proxy.url,
    KAFKA_REST_TIMEOUT_MS: "60000",
    SHUTDOWN_TIMEOUT_MS: "1000",
  });
  const response = await fetch(`${service.url}/api/verve/accept?id=7`);
  assert.equal(await response.text(), "ok");
  await proxy.waitFor(1); // a delivery is under way, and hangs
  // Exit 1, not the 0 the shutdown gives once the proxy's time limit ends it.
  assert.equal(await service.stop("SIGTERM"), 1);
  const abandoned = service.lines.find((line) =>
    line.message.startsWith("Shutdown did not finish within 1000 ms")
  );
  assert.equal(abandoned?.level, "ERROR");
  const deliveries = abandoned!.properties.deliveries as string[];
  assert.ok(
    deliveries.some((delivery) => delivery.startsWith("kafka-rest ")),
    JSON.stringify(deliveries),
  );
  assert.equal(abandoned!.properties.queuedIds, 0);
});

Deno.test("close() may be called twice on every store and on the log", async (t) => {
  await t.step("the KV store", async () => {
    const store = createKvStore(await Deno.openKv(":memory:"), {
      retentionMs: 3_600_000,
    });
    const recorded = store.recordId(MINUTE, "1");
    await Promise.all([store.close(), store.close()]);
    assert.equal(await recorded, true);
    await store.close();
  });

  await t.step("the buffered store", async () => {
    const store = createBufferedStore(
      createKvStore(await Deno.openKv(":memory:"), { retentionMs: 3_600_000 }),
      { logger: getLogger(["verve", "test"]) },
    );
    assert.equal(await store.recordId(MINUTE, "1"), true);
    assert.equal(store.queuedIds(), 1);
    await Promise.all([store.close(), store.close()]);
    assert.equal(store.queuedIds(), 0);
  });

  await t.step("the log", async () => {
    const chunks: string[] = [];
    const close = await configureLogging("info", {
      stream: new WritableStream({
        write(chunk) {
          chunks.push(new TextDecoder().decode(chunk));
        },
      }),
    });
    getLogger(["verve", "test"]).info("one line");
    await Promise.all([close(), close()]);
    await close();
    assert.equal(chunks.length, 1);
    assert.match(chunks[0]!, /"message":"one line"/);
  });
});

Deno.test("run as Deno Deploy runs it, the service exits by itself within Deploy's 5 s after SIGINT, with every acknowledged id committed and the unfinished delivery left in the outbox", async () => {
  await using file = await tempKvPath();
  // A webhook receiver and a Kafka REST proxy that take the request and
  // never answer; the proxy's time limit is far past Deploy's 5 s.
  await using receiver = startReceiver(() => "hang");
  await using proxy = startReceiver(() => "hang");
  await using service = await startService({
    KV_PATH: file.path,
    DENO_DEPLOYMENT_ID: "test-deployment",
    WINDOW_MS: "1000",
    REPORT_GRACE_MS: "200",
    REPORT_SINKS: "log,webhook,kafka-rest",
    KAFKA_REST_URL: proxy.url,
    KAFKA_REST_TIMEOUT_MS: "60000",
    ...LOOPBACK_ALLOW,
  });
  const hook = encodeURIComponent(`${receiver.url}/hook`);
  const first = await fetch(`${service.url}/api/verve/accept?id=1&url=${hook}`);
  assert.equal(await first.text(), "ok");
  // The report's deliveries are under way, and hang.
  await receiver.waitFor(1);
  await proxy.waitFor(1);
  const answers = await Promise.all(
    Array.from(
      { length: 100 },
      (_, i) =>
        fetch(`${service.url}/api/verve/accept?id=${100 + i}`).then((r) =>
          r.text()
        ),
    ),
  );
  assert.ok(answers.every((body) => body === "ok"));
  const started = performance.now();
  const code = await service.stop("SIGINT");
  const tookMs = performance.now() - started;
  // SHUTDOWN_TIMEOUT_MS is 4 s on Deploy: what hangs is abandoned.
  assert.equal(code, 1);
  assert.ok(
    tookMs > 3500 && tookMs < 5000,
    `exited ${Math.round(tookMs)} ms after SIGINT`,
  );
  const kv = await Deno.openKv(file.path);
  const logged = new Set((await readIdLog(kv)).map(({ id }) => id));
  kv.close();
  for (let i = 0; i < 100; i++) assert.ok(logged.has(String(100 + i)));
  assert.ok(logged.has("1"));
  // The next instance finds the delivery waiting.
  const store = createKvStore(await Deno.openKv(file.path), {
    retentionMs: 3_600_000,
  });
  const outbox = await store.listOutbox();
  await store.close();
  assert.deepEqual(
    [...new Set(outbox.map((entry) => entry.sink))].sort(),
    ["kafka-rest", "webhook"],
  );
});
