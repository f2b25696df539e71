/**
 * Several service processes sharing one store: exact counts and one report
 * per window, whatever instance each request reaches.
 */
import assert from "node:assert/strict";
import { checkFleet } from "./helpers/fleet.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { skipWithoutRedis, startRedis } from "./helpers/redis.ts";
import { freePort } from "./helpers/requirements.ts";
import { startService } from "./helpers/service.ts";
import { withinOneWindow } from "./helpers/windows.ts";

const noRedis = skipWithoutRedis();

Deno.test("three processes sharing one KV file count exactly and report each window once", async () => {
  await using file = await tempKvPath();
  await checkFleet({ KV_PATH: file.path });
});

Deno.test("with REUSE_PORT several processes listen on one port", async () => {
  await using file = await tempKvPath();
  const port = String(freePort());
  const env = { KV_PATH: file.path, PORT: port, REUSE_PORT: "true" };
  await using first = await startService(env);
  await using second = await startService(env);
  assert.equal(first.url, second.url);
  for (let i = 0; i < 20; i++) {
    const response = await fetch(`${first.url}/api/verve/accept?id=${i}`);
    assert.equal(await response.text(), "ok");
  }
  assert.equal(await first.stop("SIGTERM"), 0);
  // The port stays served by the other process.
  const response = await fetch(`${second.url}/api/verve/accept?id=99`);
  assert.equal(await response.text(), "ok");
  assert.equal(await second.stop("SIGTERM"), 0);
});

Deno.test({
  name:
    "three processes sharing one Redis count exactly and report each window once",
  ignore: noRedis,
  async fn() {
    await using redis = await startRedis();
    await checkFleet({ STORE: "redis", REDIS_URL: redis.url });
  },
});

Deno.test({
  name: "with Redis down the service answers 503, then recovers by itself",
  ignore: noRedis,
  async fn() {
    await using redis = await startRedis();
    await using service = await startService({
      STORE: "redis",
      REDIS_URL: redis.url,
      REDIS_TIMEOUT_MS: "300",
      WINDOW_MS: "2000",
      REPORT_GRACE_MS: "300",
    });
    const get = async (id: string) => {
      const response = await fetch(`${service.url}/api/verve/accept?id=${id}`);
      return `${response.status} ${await response.text()}`;
    };
    const ready = async () => {
      const response = await fetch(`${service.url}/readyz`);
      return `${response.status} ${await response.text()}`;
    };
    assert.equal(await get("1"), "200 ok");
    assert.equal(await ready(), "200 ready");
    await redis.stop();
    for (const id of ["2", "3"]) assert.equal(await get(id), "503 failed");
    assert.equal(await ready(), "503 not ready");
    await redis.start();
    let answer = "";
    for (let i = 0; i < 100 && answer !== "200 ok"; i++) {
      answer = await get("4");
      if (answer !== "200 ok") {
        assert.equal(answer, "503 failed");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    assert.equal(answer, "200 ok");
    assert.equal(await ready(), "200 ready");
    // Reports go on: a window recorded after the outage is reported.
    const window = await withinOneWindow(2000, async () => {
      for (const id of ["5", "6", "5"]) assert.equal(await get(id), "200 ok");
    });
    const report = await service.waitForLog((line) =>
      line.logger === "verve.report" &&
      line.properties.minute === new Date(window).toISOString()
    );
    assert.equal(report.properties.unique_ids, 2);
    assert.equal(await service.stop("SIGTERM"), 0);
  },
});
