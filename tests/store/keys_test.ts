/** The Deno KV key layout: every parser reads what its builder wrote. */
import assert from "node:assert/strict";
import {
  clockKey,
  deliveryKey,
  idOfLegacyIdKey,
  instanceOfClockKey,
  legacyIdKey,
  minuteOfKey,
  outboxKey,
  reportKey,
  sinkOfKey,
  urlDoneKey,
  urlHashOfKey,
  urlKey,
  windowKey,
} from "../../lib/store/keys.ts";

const MINUTE = Date.UTC(2026, 0, 1, 12);

Deno.test("key parsers read back what the key builders wrote, and refuse other keys", () => {
  for (
    const key of [
      windowKey(MINUTE),
      reportKey(MINUTE),
      outboxKey(MINUTE, "webhook"),
      deliveryKey(MINUTE, "kafka"),
      urlKey(MINUTE, "ab12"),
    ]
  ) {
    assert.equal(minuteOfKey(key), MINUTE);
  }
  assert.equal(sinkOfKey(outboxKey(MINUTE, "webhook")), "webhook");
  assert.equal(sinkOfKey(deliveryKey(MINUTE, "kafka")), "kafka");
  assert.equal(urlHashOfKey(urlKey(MINUTE, "ab12")), "ab12");
  assert.equal(urlHashOfKey(urlDoneKey(MINUTE, "cd34")), "cd34");
  assert.equal(idOfLegacyIdKey(legacyIdKey(MINUTE, "-42")), "-42");
  assert.equal(instanceOfClockKey(clockKey("i-1")), "i-1");
  assert.throws(() => minuteOfKey(clockKey("i-1")), {
    name: "TypeError",
    message: "Cannot read part 2 of key verve/clock/i-1: not a number",
  });
  assert.throws(() => sinkOfKey(reportKey(MINUTE)), TypeError);
});
