/**
 * The fleet's clock: it follows the readings of real KV clock probes whose
 * clocks are injected, off by known amounts; a clock that is off is logged
 * once per window, and only for the instance whose clock it is.
 */
import assert from "node:assert/strict";
import { FleetClock } from "../../lib/store/fleet_clock.ts";
import { createKvClockProbe } from "../../lib/store/kv/kv_clock.ts";
import { captureLogs } from "../helpers/logs.ts";

const WINDOW_MS = 5000;

Deno.test("FleetClock follows the fleet's clock, and warns once per window only where the clock is off", async () => {
  await using logs = await captureLogs();
  using kv = await Deno.openKv(":memory:");
  let now = Date.UTC(2026, 0, 1, 12);
  const skews = [0, -3000, 4000];
  const gauges = skews.map(() => [] as number[]);
  const clocks = skews.map((skew, i) =>
    new FleetClock({
      probe: createKvClockProbe(kv, {
        instanceId: `i${i}`,
        clock: () => now + skew,
      }),
      logger: logs.logger(`clock-${i}`),
      windowMs: WINDOW_MS,
      clock: () => now + skew,
      onReading: (reading) => gauges[i]!.push(reading.offsetMs),
    })
  );
  // Three windows of checks about a second apart, drifting past each other.
  let seed = 11;
  const jitter = () => (seed = (seed * 48271) % 2147483647) % 250;
  for (let check = 0; check < 15; check++) {
    const order = [0, 1, 2].sort(() => jitter() - 125);
    for (const i of order) {
      now += 100 + jitter();
      await clocks[i]!.check();
    }
    now += 300;
  }
  for (const [i, clock] of clocks.entries()) {
    assert.ok(
      Math.abs(clock.now() - now) <= 500,
      `instance ${i} is ${clock.now() - now} ms off`,
    );
    assert.ok(Math.abs(clock.offsetMs - skews[i]!) <= 500);
    assert.ok(Math.abs(gauges[i]!.at(-1)! - skews[i]!) <= 500);
  }
  const warnings = (i: number) =>
    logs.of(`clock-${i}`).filter((record) => record.level === "warning");
  assert.equal(warnings(0).length, 0);
  for (const i of [1, 2]) {
    // Once per window in which readings were taken (the first reading
    // comes with the second check).
    const minutes = warnings(i).map((record) => record.properties.minute);
    assert.ok(minutes.length >= 3 && minutes.length <= 4, `${minutes}`);
    assert.equal(new Set(minutes).size, minutes.length);
    const [first] = warnings(i);
    assert.equal(first!.properties.direction, i === 1 ? "behind" : "ahead of");
    // The first reading is bounded by one check's interval.
    assert.ok(Math.abs(Number(first!.properties.skewMs) - skews[i]!) <= 1250);
  }
});

Deno.test("FleetClock logs once when the clock agrees again, and ready() waits for a first reading or the time limit", async () => {
  await using logs = await captureLogs();
  let offsetMs = 2500;
  const clock = new FleetClock({
    probe: {
      read: () =>
        Promise.resolve({ offsetMs, errorMs: 1, reference: "a test reading" }),
      close: () => Promise.resolve(),
    },
    logger: logs.logger("clock"),
    windowMs: WINDOW_MS,
    warnMs: 1000,
  });
  const started = performance.now();
  await clock.ready(50);
  assert.ok(performance.now() - started >= 45);
  await clock.check();
  await clock.check();
  offsetMs = 200;
  await clock.check();
  await clock.check();
  await clock.ready(60_000);
  assert.deepEqual(
    logs.of("clock").map((record) => [record.level, record.properties.skewMs]),
    [["warning", 2500], ["info", 200]],
  );
  assert.ok(Math.abs(clock.now() - (Date.now() - 200)) <= 5);
});
