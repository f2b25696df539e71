import assert from "node:assert/strict";
import { SeenIds } from "../../../lib/store/redis/seen_ids.ts";

const M0 = Date.UTC(2026, 0, 1, 12, 0);
const M1 = M0 + 60_000;
const M2 = M1 + 60_000;
const M3 = M2 + 60_000;

Deno.test("SeenIds remembers added ids per window", async (t) => {
  await t.step("starts empty", () => {
    const seen = new SeenIds(10);
    assert.equal(seen.size, 0);
    assert.equal(seen.has(M0, "1"), false);
  });

  await t.step("has() is true only for the id and window added", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "1");
    assert.equal(seen.size, 1);
    assert.equal(seen.has(M0, "1"), true);
    assert.equal(seen.has(M0, "2"), false);
    assert.equal(seen.has(M1, "1"), false);
    assert.equal(seen.has(M0 + 1, "1"), false);
  });

  await t.step("the same id in two windows counts twice", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "1");
    seen.add(M1, "1");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M0, "1"), true);
    assert.equal(seen.has(M1, "1"), true);
  });

  await t.step("adding an id again does not grow the size", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "1");
    seen.add(M0, "1");
    seen.add(M0, "2");
    seen.add(M0, "1");
    assert.equal(seen.size, 2);
  });

  await t.step("ids are compared as strings", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "7");
    assert.equal(seen.has(M0, "07"), false);
    assert.equal(seen.has(M0, "7"), true);
  });
});

Deno.test("SeenIds never holds more ids than its limit", async (t) => {
  await t.step("in one window, ids past the limit are not remembered", () => {
    const seen = new SeenIds(3);
    for (const id of ["a", "b", "c", "d", "e"]) {
      seen.add(M0, id);
      assert.ok(seen.size <= 3, `size ${seen.size}`);
    }
    assert.equal(seen.size, 3);
    assert.deepEqual(
      ["a", "b", "c", "d", "e"].map((id) => seen.has(M0, id)),
      [true, true, true, false, false],
    );
  });

  await t.step("re-adding a remembered id when full changes nothing", () => {
    const seen = new SeenIds(2);
    seen.add(M0, "a");
    seen.add(M0, "b");
    seen.add(M0, "a");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M0, "a"), true);
  });

  await t.step("the limit is shared by both windows", () => {
    const seen = new SeenIds(3);
    seen.add(M0, "a");
    seen.add(M0, "b");
    seen.add(M1, "c");
    assert.equal(seen.size, 3);
    seen.add(M0, "x"); // the older window cannot grow past the limit
    assert.equal(seen.size, 3);
    assert.equal(seen.has(M0, "x"), false);
  });

  await t.step("a limit of 1", () => {
    const seen = new SeenIds(1);
    seen.add(M0, "a");
    seen.add(M0, "b");
    assert.equal(seen.size, 1);
    assert.equal(seen.has(M0, "a"), true);
    assert.equal(seen.has(M0, "b"), false);
  });
});

Deno.test("SeenIds with limit 0 remembers nothing", () => {
  const seen = new SeenIds(0);
  seen.add(M0, "a");
  seen.add(M1, "b");
  seen.add(M0, "a");
  assert.equal(seen.size, 0);
  assert.equal(seen.has(M0, "a"), false);
  assert.equal(seen.has(M1, "b"), false);
});

Deno.test("SeenIds keeps only the two newest windows", async (t) => {
  await t.step("a third window drops the oldest and its ids from size", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "a");
    seen.add(M0, "b");
    seen.add(M0, "c");
    seen.add(M1, "d");
    assert.equal(seen.size, 4);
    seen.add(M2, "e");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M0, "a"), false);
    assert.equal(seen.has(M0, "b"), false);
    assert.equal(seen.has(M0, "c"), false);
    assert.equal(seen.has(M1, "d"), true);
    assert.equal(seen.has(M2, "e"), true);
  });

  await t.step("a fourth window drops the second", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "a");
    seen.add(M1, "b");
    seen.add(M1, "c");
    seen.add(M2, "d");
    seen.add(M3, "e");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M1, "b"), false);
    assert.equal(seen.has(M2, "d"), true);
    assert.equal(seen.has(M3, "e"), true);
  });

  await t.step("when full, the newest window makes the older one go", () => {
    const seen = new SeenIds(2);
    seen.add(M0, "a");
    seen.add(M0, "b");
    seen.add(M1, "c");
    assert.equal(seen.size, 1);
    assert.equal(seen.has(M1, "c"), true);
    assert.equal(seen.has(M0, "a"), false);
    seen.add(M1, "d");
    seen.add(M1, "e"); // full, and nothing older to drop
    assert.equal(seen.size, 2);
    assert.deepEqual(
      ["c", "d", "e"].map((id) => seen.has(M1, id)),
      [true, true, false],
    );
  });

  await t.step("the previous window still accepts ids", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "a");
    seen.add(M1, "b");
    seen.add(M0, "c");
    assert.equal(seen.size, 3);
    assert.equal(seen.has(M0, "c"), true);
  });

  await t.step("a jump of several windows keeps the newest two known", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "a");
    seen.add(M1, "b");
    seen.add(M3, "c");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M0, "a"), false);
    assert.equal(seen.has(M1, "b"), true);
    assert.equal(seen.has(M3, "c"), true);
  });
});

Deno.test("SeenIds ignores ids for a window older than the newest known", async (t) => {
  await t.step("an unknown older window is not created", () => {
    const seen = new SeenIds(10);
    seen.add(M1, "a");
    seen.add(M0, "b");
    assert.equal(seen.size, 1);
    assert.equal(seen.has(M0, "b"), false);
    assert.equal(seen.has(M1, "a"), true);
  });

  await t.step("a dropped window is not brought back", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "a");
    seen.add(M1, "b");
    seen.add(M2, "c");
    seen.add(M0, "a");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M0, "a"), false);
  });

  await t.step("a window between two kept ones is ignored", () => {
    const seen = new SeenIds(10);
    seen.add(M0, "a");
    seen.add(M2, "b");
    seen.add(M1, "c");
    assert.equal(seen.size, 2);
    assert.equal(seen.has(M1, "c"), false);
    assert.equal(seen.has(M0, "a"), true);
    assert.equal(seen.has(M2, "b"), true);
  });
});

Deno.test("SeenIds throws RangeError for a limit that is not a whole number of at least 0", async (t) => {
  for (const limit of [-1, -0.5, 1.5, Number.NaN, Infinity, -Infinity]) {
    await t.step(String(limit), () => {
      assert.throws(() => new SeenIds(limit), {
        name: "RangeError",
        message:
          `Cannot create SeenIds: limit must be a whole number of at least 0, got ${limit}`,
      });
    });
  }
});
