import assert from "node:assert/strict";
import {
  GroupCommit,
  type IdOutcome,
} from "../../../lib/store/redis/group_commit.ts";
import {
  StoreUnavailableError,
  WindowClosedError,
} from "../../../lib/store/store.ts";

const M0 = Date.UTC(2026, 0, 1, 12, 0);

/** A backend function that records ids in a Set and logs each batch. */
function setBackend(options: { batchSize?: number } = {}) {
  const stored = new Set<string>();
  const batches: string[][] = [];
  const script: ((ids: string[]) => IdOutcome[] | undefined)[] = [];
  const commits = new GroupCommit({
    batchSize: options.batchSize ?? 4,
    commit: async (minute, ids) => {
      await Promise.resolve();
      batches.push(ids);
      const scripted = script.shift()?.(ids);
      if (scripted) return scripted;
      return ids.map((id) => {
        const key = `${minute}/${id}`;
        if (stored.has(key)) return "known";
        stored.add(key);
        return "recorded";
      });
    },
  });
  return { commits, stored, batches, script };
}

Deno.test("GroupCommit collapses concurrent duplicates and batches the rest", async () => {
  const { commits, batches } = setBackend({ batchSize: 4 });
  const ids = ["1", "2", "1", "3", "4", "5", "1", "6"];
  const results = await Promise.all(ids.map((id) => commits.record(M0, id)));
  assert.deepEqual(results, [true, true, false, true, true, true, false, true]);
  // The first id commits alone (nothing was committing); the rest gathered.
  assert.deepEqual(batches, [["1"], ["2", "3", "4", "5"], ["6"]]);
  // Now known locally: no commit at all.
  assert.equal(commits.knows(M0, "2"), true);
  assert.equal(commits.knows(M0 + 60_000, "2"), false);
  assert.equal(commits.knows(M0, "7"), false);
  assert.equal(await commits.record(M0, "2"), false);
  assert.equal(batches.length, 3);
  await commits.drain();
});

Deno.test("GroupCommit passes per-id errors and fails whole batches on a throw", async (t) => {
  await t.step("a per-id error reaches only that id's callers", async () => {
    const { commits, script } = setBackend();
    script.push((ids) =>
      ids.map((id) => id === "x" ? new WindowClosedError(M0) : "recorded")
    );
    const [x] = await Promise.allSettled([commits.record(M0, "x")]);
    assert.ok(x.status === "rejected" && x.reason instanceof WindowClosedError);
  });

  await t.step("a throw fails every id of the batch, wrapped", async () => {
    const { commits, script } = setBackend();
    script.push(() => {
      throw new TypeError("connection reset");
    });
    await assert.rejects(
      commits.record(M0, "y"),
      (error) =>
        error instanceof StoreUnavailableError &&
        /connection reset/.test(error.message),
    );
    // The next batch works again.
    assert.equal(await commits.record(M0, "y"), true);
  });

  await t.step("a missing outcome fails the id", async () => {
    const { commits, script } = setBackend();
    script.push(() => []);
    await assert.rejects(commits.record(M0, "z"), StoreUnavailableError);
  });
});

Deno.test("GroupCommit rejects impossible options", () => {
  const commit = () => Promise.resolve([]);
  assert.throws(() => new GroupCommit({ commit, batchSize: 0 }), RangeError);
  assert.throws(
    () => new GroupCommit({ commit, batchSize: 1, maxInFlight: 1.5 }),
    RangeError,
  );
});

Deno.test("GroupCommit drain() resolves every waiter", async () => {
  const { commits } = setBackend();
  const recorded = commits.record(M0, "1");
  await Promise.all([commits.drain(), commits.drain()]);
  assert.equal(await recorded, true);
});
