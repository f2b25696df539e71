import assert from "node:assert/strict";
import { backoffCap, backoffDelay, sleep } from "../lib/backoff.ts";
import { formatMinute, MINUTE_MS, windowStart } from "../lib/minute.ts";

const NOON = Date.UTC(2026, 0, 1, 12, 0);

Deno.test("windowStart() returns the start of the containing minute by default", async (t) => {
  assert.equal(MINUTE_MS, 60_000);
  const cases: [string, number, number][] = [
    ["exactly on a boundary", NOON, NOON],
    ["1 ms after a boundary", NOON + 1, NOON],
    ["the middle of a minute", NOON + 30_000, NOON],
    ["1 ms before a boundary", NOON - 1, NOON - 60_000],
    [
      "the last ms of a minute",
      Date.UTC(2026, 0, 1, 12, 30, 59, 999),
      Date.UTC(2026, 0, 1, 12, 30),
    ],
    ["the epoch", 0, 0],
    ["1 ms after the epoch", 1, 0],
    ["59 999 ms after the epoch", 59_999, 0],
    ["60 000 ms after the epoch", 60_000, 60_000],
    ["1 ms before the epoch", -1, -60_000],
    ["a minute before the epoch", -60_000, -60_000],
    ["1 ms before that", -60_001, -120_000],
    ["half a minute before the epoch", -30_000, -60_000],
    ["a fractional time", NOON + 0.5, NOON],
    ["just below a boundary, fractional", NOON - 0.5, NOON - 60_000],
  ];
  for (const [name, epochMs, expected] of cases) {
    await t.step(name, () => {
      assert.equal(windowStart(epochMs), expected);
    });
  }
});

Deno.test("windowStart() uses a custom window length", async (t) => {
  const cases: [number, number, number][] = [
    [12_345, 5000, 10_000],
    [10_000, 5000, 10_000],
    [9_999, 5000, 5000],
    [4_999, 5000, 0],
    [-1, 5000, -5000],
    [-5000, 5000, -5000],
    [-5001, 5000, -10_000],
    [NOON + 150, 100, NOON + 100],
    [NOON + 99, 100, NOON],
    [NOON + 3_599_999, 3_600_000, NOON],
    [NOON + 3_600_000, 3_600_000, NOON + 3_600_000],
    [7, 1, 7],
  ];
  for (const [epochMs, windowMs, expected] of cases) {
    await t.step(`windowStart(${epochMs}, ${windowMs})`, () => {
      assert.equal(windowStart(epochMs, windowMs), expected);
    });
  }
});

Deno.test("formatMinute() returns an ISO 8601 UTC timestamp", async (t) => {
  const cases: [number, string][] = [
    [NOON, "2026-01-01T12:00:00.000Z"],
    [Date.UTC(2026, 0, 1, 12, 30), "2026-01-01T12:30:00.000Z"],
    [Date.UTC(2024, 1, 29, 23, 59), "2024-02-29T23:59:00.000Z"],
    [0, "1970-01-01T00:00:00.000Z"],
    [-60_000, "1969-12-31T23:59:00.000Z"],
    [NOON + 5500, "2026-01-01T12:00:05.500Z"],
  ];
  for (const [minute, expected] of cases) {
    await t.step(expected, () => {
      assert.equal(formatMinute(minute), expected);
    });
  }

  await t.step("an invalid time throws RangeError", () => {
    assert.throws(() => formatMinute(Number.NaN), RangeError);
    assert.throws(() => formatMinute(8.64e15 + 1), RangeError);
  });
});

Deno.test("backoffDelay() scales the injected random number by the capped delay", async (t) => {
  const half = () => 0.5;

  await t.step("doubles from the default base of 100 ms up to 5000 ms", () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 7, 20].map((attempt) =>
        backoffDelay(attempt, { random: half })
      ),
      [50, 100, 200, 400, 800, 1600, 2500, 2500, 2500],
    );
  });

  await t.step("uses a custom base", () => {
    assert.equal(backoffDelay(3, { baseMs: 10, random: half }), 40);
    assert.equal(backoffDelay(0, { baseMs: 10, random: half }), 5);
  });

  await t.step("caps at a custom maxMs", () => {
    assert.deepEqual(
      [0, 1, 2, 3].map((attempt) =>
        backoffDelay(attempt, { baseMs: 100, maxMs: 300, random: half })
      ),
      [50, 100, 150, 150],
    );
  });

  await t.step("rounds down", () => {
    assert.equal(backoffDelay(0, { baseMs: 10, random: () => 0.99 }), 9);
    assert.equal(backoffDelay(0, { baseMs: 3, random: () => 0.5 }), 1);
  });

  await t.step("stays below the cap for the largest random number", () => {
    const largest = () => 1 - Number.EPSILON;
    assert.equal(backoffDelay(0, { random: largest }), 99);
    assert.equal(backoffDelay(10, { random: largest }), 4999);
    assert.equal(backoffDelay(10, { maxMs: 1000, random: largest }), 999);
  });

  await t.step("is 0 for a random number of 0", () => {
    assert.equal(backoffDelay(0, { random: () => 0 }), 0);
    assert.equal(backoffDelay(30, { random: () => 0 }), 0);
  });

  await t.step("caps an attempt so large that 2 ** attempt is Infinity", () => {
    assert.equal(backoffDelay(2000, { random: half }), 2500);
  });

  await t.step("calls random once per delay", () => {
    let calls = 0;
    backoffDelay(4, {
      random: () => {
        calls++;
        return 0.25;
      },
    });
    assert.equal(calls, 1);
  });

  await t.step("uses Math.random by default, within [0, cap)", () => {
    for (let i = 0; i < 200; i++) {
      const delay = backoffDelay(2, { baseMs: 10 });
      assert.ok(
        Number.isInteger(delay) && delay >= 0 && delay < 40,
        `${delay}`,
      );
    }
  });
});

Deno.test("sleep() resolves true once the time has passed", async (t) => {
  await t.step("without a signal", async () => {
    const order: string[] = [];
    const marker = new Promise<void>((resolve) =>
      setTimeout(() => {
        order.push("5 ms timer");
        resolve();
      }, 5)
    );
    const slept = sleep(30).then((result) => {
      order.push("sleep(30)");
      return result;
    });
    assert.equal(await slept, true);
    await marker;
    assert.deepEqual(order, ["5 ms timer", "sleep(30)"]);
  });

  await t.step("with a signal that never aborts", async () => {
    const controller = new AbortController();
    assert.equal(await sleep(10, controller.signal), true);
  });

  await t.step("for 0 ms", async () => {
    assert.equal(await sleep(0), true);
  });

  await t.step("and stops listening to the signal", async () => {
    const controller = new AbortController();
    const signal = controller.signal;
    let listeners = 0;
    const add = signal.addEventListener.bind(signal);
    const remove = signal.removeEventListener.bind(signal);
    signal.addEventListener = (...args: Parameters<typeof add>) => {
      listeners++;
      add(...args);
    };
    signal.removeEventListener = (...args: Parameters<typeof remove>) => {
      listeners--;
      remove(...args);
    };
    assert.equal(await sleep(5, signal), true);
    assert.equal(listeners, 0);
    // A late abort must not disturb the finished sleep.
    controller.abort();
  });
});

Deno.test("sleep() resolves false when the signal aborts", async (t) => {
  await t.step("early, clearing its timer", async () => {
    // A 10 s timer left running would fail the ops sanitizer.
    const controller = new AbortController();
    const abortTimer = setTimeout(() => controller.abort(), 5);
    const result = await sleep(10_000, controller.signal);
    clearTimeout(abortTimer);
    assert.equal(result, false);
  });

  await t.step("before it starts, without a timer", async () => {
    const controller = new AbortController();
    controller.abort();
    assert.equal(await sleep(10_000, controller.signal), false);
  });

  await t.step(
    "with a reason, still resolving rather than rejecting",
    async () => {
      const controller = new AbortController();
      const pending = sleep(10_000, controller.signal);
      controller.abort(new Error("shutdown"));
      assert.equal(await pending, false);
    },
  );

  await t.step("from AbortSignal.timeout()", async () => {
    assert.equal(await sleep(10_000, AbortSignal.timeout(5)), false);
  });
});

Deno.test("backoffCap() doubles the base per attempt, up to the maximum", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 10].map((attempt) =>
      backoffCap(attempt, { baseMs: 1000, maxMs: 5000 })
    ),
    [1000, 2000, 4000, 5000, 5000],
  );
});
