import assert from "node:assert/strict";
import { CommitGate } from "../../lib/store/commit_gate.ts";

/**
 * A gate, a promise of its next opening with the time it took, and how
 * many times it opened.
 */
function gate(gather: { ms: number; ids: number } | undefined) {
  let opened: () => void = () => {};
  const count = { openings: 0 };
  const gate = new CommitGate(gather, () => {
    count.openings++;
    opened();
  });
  const nextOpening = () =>
    new Promise<number>((resolve) => {
      const started = performance.now();
      opened = () => resolve(performance.now() - started);
    });
  return { gate, nextOpening, count };
}

Deno.test("CommitGate lets the first commit through and holds the next one for its time", async () => {
  const { gate: g, nextOpening, count } = gate({ ms: 60, ids: 100 });
  assert.equal(g.tryStart(1), true);
  const opening = nextOpening();
  assert.equal(g.tryStart(5), false);
  assert.equal(g.holds(5), true);
  // Held once: asking again sets no second timer.
  assert.equal(g.tryStart(6), false);
  const waited = await opening;
  assert.ok(waited >= 40, `opened after ${waited} ms`);
  assert.equal(count.openings, 1);
  assert.equal(g.holds(6), false);
  assert.equal(g.tryStart(6), true);
  // Let through again, it holds the next one again.
  const again = nextOpening();
  assert.equal(g.tryStart(1), false);
  await again;
});

Deno.test("CommitGate lets a commit through at once when its ids wait", async () => {
  const { gate: g, nextOpening } = gate({ ms: 60_000, ids: 50 });
  assert.equal(g.tryStart(1), true);
  let opened = false;
  void nextOpening().then(() => opened = true);
  assert.equal(g.tryStart(49), false);
  assert.equal(g.holds(49), true);
  assert.equal(g.holds(50), false);
  // Through at 50: the minute's timer is gone, so nothing is left running.
  assert.equal(g.tryStart(50), true);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(opened, false);
});

Deno.test("CommitGate opened for good lets a held commit go at once, and every later one", () => {
  const { gate: g, count } = gate({ ms: 60_000, ids: 1000 });
  assert.equal(g.tryStart(1), true);
  assert.equal(g.tryStart(1), false);
  g.open();
  // The held one was told at once, and no timer is left.
  assert.equal(count.openings, 1);
  assert.equal(g.holds(1), false);
  for (let i = 0; i < 3; i++) assert.equal(g.tryStart(1), true);
  g.open();
  assert.equal(count.openings, 1);
});

Deno.test("CommitGate without gathering lets every commit through", () => {
  for (const gather of [undefined, { ms: 0, ids: 1 }]) {
    const { gate: g } = gate(gather);
    for (let i = 0; i < 3; i++) assert.equal(g.tryStart(1), true);
    assert.equal(g.holds(1), false);
  }
});

Deno.test("CommitGate refuses impossible options", () => {
  for (
    const gather of [{ ms: -1, ids: 1 }, { ms: 1.5, ids: 1 }, { ms: 1, ids: 0 }]
  ) {
    assert.throws(() => new CommitGate(gather, () => {}), RangeError);
  }
});
