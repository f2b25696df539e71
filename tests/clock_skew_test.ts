/**
 * Clocks that disagree, end to end: real service processes, one with its
 * clock shifted by libfaketime, sharing a real redis-server, whose clock is
 * the fleet's; and the first report of a service started on a fresh store.
 * The chaos scenarios 10 and 11 run skewed fleets under load.
 */
import assert from "node:assert/strict";
import { FAKETIME_AVAILABLE, shiftedClock } from "./helpers/faketime.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { REDIS_AVAILABLE, startRedis } from "./helpers/redis.ts";
import { skipUnless } from "./helpers/requirements.ts";
import { startService } from "./helpers/service.ts";

/** The value of the clock skew gauge in a service's `/metrics`. */
async function clockSkew(url: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.match(/^verve_clock_skew_seconds (\S+)$/m);
  return line ? Number(line[1]) : undefined;
}

Deno.test({
  name:
    "a service whose clock is 3 s behind Redis's logs it once per window and shows it in verve_clock_skew_seconds; the other does neither",
  ignore: skipUnless(FAKETIME_AVAILABLE, "faketime", "faketime") ||
    skipUnless(REDIS_AVAILABLE, "redis-server", "redis-server"),
  async fn() {
    await using redis = await startRedis();
    const env = {
      STORE: "redis",
      REDIS_URL: redis.url,
      WINDOW_MS: "2000",
      REPORT_GRACE_MS: "500",
      CLOCK_CHECK_MS: "200",
      WINDOW_HEADER: "true",
    };
    await using right = await startService(env);
    await using behind = await startService({ ...env, ...shiftedClock(-3000) });
    const isWarning = (line: { logger: string; level: string }) =>
      line.logger === "verve.clock" && line.level === "WARNING";
    const warning = await behind.waitForLog(isWarning, 10_000);
    assert.equal(warning.properties.direction, "behind");
    assert.equal(warning.properties.reference, "redis");
    assert.ok(Math.abs(Number(warning.properties.skewMs) + 3000) < 200);
    // Two more windows: one warning each, at most one more for a window
    // that began meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const warnings = behind.lines.filter(isWarning);
    const minutes = warnings.map((line) => line.properties.minute);
    assert.equal(new Set(minutes).size, minutes.length, `${minutes}`);
    assert.ok(warnings.length >= 3 && warnings.length <= 4, `${minutes}`);
    assert.ok(Math.abs((await clockSkew(behind.url))! + 3) < 0.2);
    assert.equal(right.lines.filter(isWarning).length, 0);
    assert.ok(Math.abs((await clockSkew(right.url))!) < 0.2);
    // Its requests count in the fleet's window, named in the answer.
    const response = await fetch(`${behind.url}/api/verve/accept?id=1`);
    assert.equal(await response.text(), "ok");
    const named = Date.parse(response.headers.get("verve-window")!);
    assert.ok(Math.abs(named + 1000 - Date.now()) <= 1500);
  },
});

Deno.test("a service started on a fresh store reports no window that ended before it started", async () => {
  await using file = await tempKvPath();
  const startedAt = Date.now();
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: "2000",
    REPORT_GRACE_MS: "200",
  });
  const report = await service.waitForLog(
    (line) => line.logger === "verve.report",
    10_000,
  );
  const minute = Date.parse(String(report.properties.minute));
  assert.ok(minute + 2000 > startedAt, `${report.properties.minute}`);
  assert.equal(report.properties.unique_ids, 0);
});
