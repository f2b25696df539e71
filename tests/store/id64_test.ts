import assert from "node:assert/strict";
import {
  forEachPackedId,
  hashId,
  type Id64,
  packIds,
  splitId,
} from "../../lib/store/id64.ts";
import { IdTable } from "../../lib/store/kv/id_table.ts";

/** The halves by BigInt, the slow way `splitId` must agree with. */
function bySlowWay(id: string): Id64 {
  const bits = BigInt.asUintN(64, BigInt(id));
  return { lo: Number(bits & 0xffffffffn), hi: Number(bits >> 32n) };
}

/** A canonical id of up to 19 digits, either sign, from `random`. */
function randomId(random: () => number): string {
  const digits = 1 + Math.floor(random() * 19);
  let value = 0n;
  for (let i = 0; i < digits; i++) {
    value = value * 10n + BigInt(Math.floor(random() * 10));
  }
  value = value % 9223372036854775808n;
  return String(random() < 0.3 ? -value : value);
}

function seeded(seed: number): () => number {
  return () => (seed = (seed * 48271) % 2147483647) / 2147483647;
}

Deno.test("splitId() gives the two's complement halves of every signed 64-bit id", async (t) => {
  await t.step("at the edges of each range", () => {
    const edges = [
      "0",
      "1",
      "-1",
      "999999999",
      "1000000000",
      "-1000000000",
      "4294967295",
      "4294967296",
      "-4294967296",
      "-4294967297",
      "9007199254740991",
      "9007199254740993",
      "18446744073",
      "9223372036854775807",
      "-9223372036854775808",
      "-9223372036854775807",
    ];
    for (const id of edges) {
      assert.deepEqual(splitId(id, { lo: 0, hi: 0 }), bySlowWay(id), id);
    }
  });

  await t.step("for 100 000 random ids", () => {
    const random = seeded(11);
    const out = { lo: 0, hi: 0 };
    for (let i = 0; i < 100_000; i++) {
      const id = randomId(random);
      assert.deepEqual({ ...splitId(id, out) }, bySlowWay(id), id);
    }
  });
});

Deno.test("packIds() and forEachPackedId() round-trip ids, 8 bytes each", () => {
  const ids = ["0", "-1", "42", "9223372036854775807", "-9223372036854775808"]
    .map((id) => splitId(id, { lo: 0, hi: 0 }));
  const packed = packIds(ids);
  assert.equal(packed.byteLength, 40);
  const read: Id64[] = [];
  forEachPackedId(packed, (lo, hi) => read.push({ lo, hi }));
  assert.deepEqual(read, ids);
  // Little endian, low half first: the id 42 is 2a 00 00 00 00 00 00 00.
  assert.deepEqual([...packed.subarray(16, 24)], [42, 0, 0, 0, 0, 0, 0, 0]);
  assert.throws(() => forEachPackedId(new Uint8Array(7), () => {}), RangeError);
});

Deno.test("hashId() spreads sequential ids evenly over partitions", () => {
  const counts = new Array(16).fill(0);
  for (let i = 0; i < 160_000; i++) counts[hashId(i, 0, 0) % 16]++;
  for (const count of counts) assert.ok(count > 9000 && count < 11_000);
});

Deno.test("IdTable holds exactly the ids added", async (t) => {
  await t.step("agrees with a Set over 200 000 random adds and lookups", () => {
    const random = seeded(5);
    const table = new IdTable();
    const set = new Set<string>();
    const out = { lo: 0, hi: 0 };
    for (let i = 0; i < 200_000; i++) {
      const id = randomId(random);
      // Small ids too, so that many repeat.
      const small = String(Math.floor(random() * 5000));
      for (const each of [id, small]) {
        const { lo, hi } = splitId(each, out);
        assert.equal(table.has(lo, hi), set.has(each));
        assert.equal(table.add(lo, hi), !set.has(each));
        set.add(each);
      }
    }
    assert.equal(table.size, set.size);
    for (const id of set) {
      const { lo, hi } = splitId(id, out);
      assert.ok(table.has(lo, hi), id);
    }
  });

  await t.step("keeps the id 0, whose halves mark an empty slot", () => {
    const table = new IdTable();
    assert.equal(table.has(0, 0), false);
    assert.equal(table.add(0, 0), true);
    assert.equal(table.add(0, 0), false);
    assert.equal(table.has(0, 0), true);
    assert.equal(table.size, 1);
  });

  await t.step("takes at most 12 bytes per id when full, 18 once grown", () => {
    const table = new IdTable();
    let grownAt = 0;
    let released = 0;
    for (let i = 1; i <= 1_000_000; i++) {
      const before = table.bytes;
      table.add(i, i % 7);
      if (table.bytes > before) {
        // Just before it grows, a table is at its fullest.
        if (i > 1000) {
          assert.ok(before / (i - 1) <= 12, `${before / (i - 1)} B per id`);
        }
        grownAt = i;
      } else if (table.bytes < before) {
        // The old slots go once their ids have moved, long before the
        // table is full again.
        assert.ok(i - grownAt < grownAt / 4, `moved after ${i - grownAt}`);
        assert.ok(table.bytes / i <= 18, `${table.bytes / i} B per id`);
        released++;
      }
    }
    assert.ok(released >= 10, `${released} growths`);
    for (let i = 1; i <= 1_000_000; i += 997) assert.ok(table.has(i, i % 7));
  });

  await t.step(
    "is sized up front for the ids it expects, and no larger",
    () => {
      const table = new IdTable(100_000);
      const bytes = table.bytes;
      for (let i = 1; i <= 100_000; i++) table.add(i, 0);
      assert.equal(table.bytes, bytes);
      assert.ok(bytes / 100_000 <= 12);
    },
  );
});
