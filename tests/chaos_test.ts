/**
 * The short form of the chaos suite (`deno task chaos`), in the test suite:
 * three service processes on one port and one KV file under duplicate-heavy
 * traffic, without a fault in both ack modes, with one process killed and
 * restarted, and with one stopped by a doubled SIGTERM and restarted. See
 * `tests/chaos/scenarios.ts` for the invariants each checks.
 */
import assert from "node:assert/strict";
import { SCENARIOS } from "./chaos/scenarios.ts";

Deno.test("chaos: every acknowledged id is counted, each window is reported and POSTed once, through faults", async (t) => {
  for (const scenario of SCENARIOS) {
    await t.step(scenario.name, async () => {
      const row = await scenario.run();
      assert.equal(row.verdict, "ok", JSON.stringify(row));
      assert.equal(row.reports, 1);
      assert.equal(row.posts, "1,1,1");
      assert.ok(row.requests > 5000, `${row.requests} requests`);
      // Many ids reached several processes: fewer ids than requests.
      assert.ok(row.ackedDistinct < row.requests * 0.8, JSON.stringify(row));
    });
  }
});
