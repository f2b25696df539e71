/**
 * The KV engine alone: the store's atomic operations (a check and a set per
 * new id, one counter `sum` per batch) committed straight to a KV file, with
 * no HTTP. Shows the ceiling that group commit works against, per batch size
 * and commits in flight; then the whole store (queue, batches, first-seen
 * filter) fed by 64 callers, as many as the HTTP bench's connections.
 *
 * Usage: `deno run -A bench/kv_engine.ts [seconds per case]`
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createBufferedStore } from "../lib/buffered_store.ts";
import { createKvStore } from "../lib/store_kv.ts";

const seconds = Number(Deno.args[0] ?? "3");
const dir = await Deno.makeTempDir({ prefix: "verve-kv-engine-" });

async function run(batch: number, inFlight: number, expire: boolean) {
  const kv = await Deno.openKv(`${dir}/${batch}-${inFlight}-${expire}.kv`);
  const minute = Date.now();
  let ids = 0;
  let next = 0;
  const until = performance.now() + seconds * 1000;
  async function worker() {
    while (performance.now() < until) {
      const op = kv.atomic().check({
        key: ["report", minute],
        versionstamp: null,
      });
      for (let i = 0; i < batch; i++) {
        const key = ["id", minute, String(next++)];
        op.check({ key, versionstamp: null });
        op.set(key, 1, expire ? { expireIn: 3_600_000 } : undefined);
      }
      op.sum(["count", minute, next % 16], BigInt(batch));
      const result = await op.commit();
      if (result.ok) ids += batch;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  kv.close();
  return Math.round(ids / seconds);
}

console.log("| batch | in flight | expireIn | ids/s |");
console.log("| ----- | --------- | -------- | ----- |");
for (
  const [batch, inFlight, expire] of [
    [1, 4, true],
    [16, 4, true],
    [64, 1, true],
    [64, 4, true],
    [99, 1, true],
    [99, 2, true],
    [99, 4, true],
    [99, 4, false],
  ] as const
) {
  const rate = await run(batch, inFlight, expire);
  console.log(`| ${batch} | ${inFlight} | ${expire} | ${rate} |`);
}

/** The whole store: `clients` callers each awaiting `recordId` in a loop. */
async function runStore(clients: number, buffered: boolean) {
  const kv = await Deno.openKv(`${dir}/store-${clients}-${buffered}.kv`);
  const kvStore = createKvStore(kv, { retentionMs: 3_600_000 });
  const store = buffered
    ? createBufferedStore(kvStore, {
      logger: getLogger(["bench"]),
      maxPending: 2000,
    })
    : kvStore;
  const minute = Date.now();
  let ids = 0;
  let next = 0;
  const until = performance.now() + seconds * 1000;
  async function client() {
    while (performance.now() < until) {
      await store.recordId(minute, String(next++));
      ids++;
    }
  }
  await Promise.all(Array.from({ length: clients }, client));
  await store.close();
  return Math.round(ids / seconds);
}

console.log("");
console.log("| store | clients | ids/s |");
console.log("| ----- | ------- | ----- |");
for (const [clients, buffered] of [[64, false], [64, true]] as const) {
  const rate = await runStore(clients, buffered);
  console.log(
    `| ${buffered ? "buffered" : "durable"} | ${clients} | ${rate} |`,
  );
}
await Deno.remove(dir, { recursive: true });
