/**
 * Hash slots and the shards' hash tags (`lib/store/redis/slots.ts`); that
 * they agree with a real cluster's `CLUSTER KEYSLOT` is checked in
 * `store_redis_cluster_test.ts`.
 */
import assert from "node:assert/strict";
import {
  hashSlot,
  hashTag,
  shardTags,
  SLOTS,
} from "../../../lib/store/redis/slots.ts";

Deno.test("hashSlot() is CRC16/XMODEM of the hash tag, modulo 16384", () => {
  assert.equal(hashSlot("123456789"), 0x31c3);
  assert.equal(hashSlot("{123456789}:ids"), 0x31c3);
  assert.equal(hashSlot("a{123456789}b{c}"), 0x31c3);
  // An empty tag is no tag: the whole key places it.
  assert.equal(hashTag("{}x"), "{}x");
  assert.equal(hashSlot(""), 0);
});

Deno.test("shardTags() puts shard s of n in the middle of the s-th of n equal slot ranges", async (t) => {
  for (const count of [1, 3, 12, 256]) {
    await t.step(`${count} shards`, () => {
      const tags = shardTags(count, "verve:shard");
      assert.equal(tags.length, count);
      assert.equal(new Set(tags).size, count);
      tags.forEach((tag, shard) => {
        assert.ok(tag.startsWith(`verve:shard:${shard}.`), tag);
        const slot = hashSlot(`{${tag}}`);
        // The middle half of its range: clear of a master's rounded edge.
        const start = Math.floor(shard * SLOTS / count);
        const end = Math.floor((shard + 1) * SLOTS / count);
        const margin = Math.floor((end - start) / 4);
        assert.ok(slot >= start + margin, `${tag} ${slot}`);
        assert.ok(slot < end - margin, `${tag} ${slot}`);
      });
      // Computed once: the same array again.
      assert.equal(shardTags(count, "verve:shard"), tags);
    });
  }
  // Three masters that split the slots evenly hold four of twelve each.
  const masters = [0, 5461, 10923, SLOTS];
  const perMaster = [0, 0, 0];
  for (const tag of shardTags(12, "verve:shard")) {
    const slot = hashSlot(`{${tag}}`);
    perMaster[masters.findIndex((_start, i) => slot < masters[i + 1]!)]! += 1;
  }
  assert.deepEqual(perMaster, [4, 4, 4]);
  assert.throws(() => shardTags(0, "verve:shard"), RangeError);
  assert.throws(() => shardTags(1.5, "verve:shard"), RangeError);
});
