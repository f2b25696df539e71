/**
 * The clock probes: the fleet's clock as the median of the instances'
 * (Deno KV, each instance's reading written to a real KV), and as Redis's
 * (`TIME` of a real redis-server). Clocks are injected, off by known amounts.
 */
import assert from "node:assert/strict";
import {
  type ClockReading,
  fleetOffset,
  offsetWithin,
} from "../../lib/store/clock_probe.ts";
import { createKvClockProbe } from "../../lib/store/kv/kv_clock.ts";
import { createRedisClockProbe } from "../../lib/store/redis/redis_clock.ts";
import { openRedis } from "../../lib/store/redis/open_redis.ts";
import { captureLogs } from "../helpers/logs.ts";
import { skipWithoutRedis, startRedis } from "../helpers/redis.ts";

Deno.test("fleetOffset() is the median, and of the middle two the one nearer this clock", () => {
  assert.equal(fleetOffset([0]), 0);
  assert.equal(fleetOffset([0, 5000, -5000]), 0);
  assert.equal(fleetOffset([0, 5000, 10_000]), 5000);
  assert.equal(fleetOffset([0, -10_000, -5000]), -5000);
  // Two instances: neither can tell whose clock is off.
  assert.equal(fleetOffset([0, 5000]), 0);
  assert.equal(fleetOffset([0, 3000, 4000, 9000]), 3000);
  assert.throws(() => fleetOffset([]), RangeError);
});

Deno.test("offsetWithin() is 0 for bounds that hold 0, else their midpoint", () => {
  assert.equal(offsetWithin(-300, 500), 0);
  assert.equal(offsetWithin(0, 500), 0);
  assert.equal(offsetWithin(4600, 5400), 5000);
  assert.equal(offsetWithin(-5400, -4600), -5000);
});

/** Three instances' probes on one KV, their clocks `skews` ms off a shared one. */
function kvFleet(kv: Deno.Kv, skews: number[]) {
  let now = Date.UTC(2026, 0, 1, 12);
  const probes = skews.map((skew, i) =>
    createKvClockProbe(kv, { instanceId: `i${i}`, clock: () => now + skew })
  );
  return {
    probes,
    advance: (ms: number) => now += ms,
  };
}

Deno.test("KV clock probe: each instance's offset from the median of three clocks, narrowed check by check", async () => {
  using kv = await Deno.openKv(":memory:");
  const fleet = kvFleet(kv, [0, -5000, 5000]);
  const [first, ...others] = fleet.probes;
  assert.equal((await first!.read())?.reference, "this instance alone");
  for (const probe of others) await probe.read();
  // The others' first readings are of unknown age.
  assert.equal(await first!.read(), undefined);
  const readings: (ClockReading | undefined)[] = [];
  // Checks about a second apart, jittered as FleetClock jitters them.
  let seed = 7;
  const jitter = () => (seed = (seed * 48271) % 2147483647) % 250;
  for (let round = 0; round < 12; round++) {
    // The instances' checks drift past one another.
    const order = [0, 1, 2].sort(() => jitter() - 125);
    for (const i of order) {
      fleet.advance(100 + jitter());
      readings[i] = await fleet.probes[i]!.read();
    }
    fleet.advance(300);
  }
  // A clock that agrees with the fleet's is not moved at all.
  assert.equal(readings[0]?.offsetMs, 0);
  for (const [i, expected] of [0, -5000, 5000].entries()) {
    const reading = readings[i]!;
    assert.ok(reading !== undefined, `instance ${i} has no reading`);
    assert.equal(reading.reference, "3 instances");
    assert.ok(
      Math.abs(reading.offsetMs - expected) <= reading.errorMs,
      `instance ${i}: ${JSON.stringify(reading)}`,
    );
    // Narrower than one check's interval.
    assert.ok(reading.errorMs <= 200, JSON.stringify(reading));
  }
});

Deno.test("KV clock probe: an instance alone is the fleet; one that stopped, or stopped writing, is left out", async () => {
  using kv = await Deno.openKv(":memory:");
  const fleet = kvFleet(kv, [0, 5000, 5000]);
  const [self, closing, killed] = fleet.probes;
  const alone = { offsetMs: 0, errorMs: 0, reference: "this instance alone" };
  for (let round = 0; round < 3; round++) {
    for (const probe of fleet.probes) await probe.read();
    fleet.advance(700 + 100 * round);
  }
  // Two of three clocks 5 s ahead: the fleet's clock is theirs.
  const reading = (await self!.read())!;
  assert.equal(reading.reference, "3 instances");
  assert.ok(Math.abs(reading.offsetMs + 5000) <= reading.errorMs);
  await closing!.close();
  // The killed one's reading stays, unchanged: left out after 5 checks.
  const references = [];
  for (let check = 0; check < 6; check++) {
    fleet.advance(1000);
    references.push((await self!.read())!.reference);
  }
  assert.deepEqual(references, [
    ...Array(5).fill("2 instances"),
    "this instance alone",
  ]);
  assert.deepEqual(await self!.read(), alone);
  void killed;
});

Deno.test({
  name: "Redis clock probe: this clock minus Redis's, within the round trip",
  ignore: skipWithoutRedis(),
  async fn() {
    await using logs = await captureLogs();
    await using server = await startRedis();
    const redis = openRedis([server.url], logs.logger("redis"));
    try {
      for (const skew of [3000, -5000]) {
        const probe = createRedisClockProbe(redis, {
          timeoutMs: 1000,
          clock: () => Date.now() + skew,
        });
        const reading = await probe.read();
        assert.equal(reading?.reference, "redis");
        // Redis's clock and Date.now() are the same machine's.
        assert.ok(
          Math.abs(reading!.offsetMs - skew) <= reading!.errorMs + 2,
          JSON.stringify(reading),
        );
        await probe.close();
      }
    } finally {
      await redis.close();
    }
  },
});
