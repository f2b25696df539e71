/**
 * Real Deno KV databases for tests: in memory, or a file in a fresh
 * temporary directory that is removed afterwards.
 *
 * @module
 */
import { forEachPackedId } from "../../lib/store/id64.ts";

/** A temporary directory holding a KV file path, removed on dispose. */
export interface TempKvPath extends AsyncDisposable {
  path: string;
  dir: string;
}

/** Makes a temporary directory and names a KV file inside it. */
export async function tempKvPath(): Promise<TempKvPath> {
  const dir = await Deno.makeTempDir({ prefix: "verve-test-" });
  return {
    dir,
    path: `${dir}/verve.kv`,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

type CommitOutcome = Deno.KvCommitResult | Deno.KvCommitError;

/**
 * A proxy of the real `kv` whose atomic commits go through `commit`, which
 * gets the real commit to call (or not). Everything else goes to `kv`.
 */
function interceptCommits(
  kv: Deno.Kv,
  commit: (real: () => Promise<CommitOutcome>) => Promise<CommitOutcome>,
): Deno.Kv {
  return new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => {
          const op = target.atomic();
          const real = op.commit.bind(op);
          op.commit = () => commit(real);
          return op;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/**
 * Wraps a real KV so that the next `failures` atomic commits throw, as a
 * database under lock contention or an unreachable server would. Everything
 * else goes to the real database.
 */
export function failingCommits(
  kv: Deno.Kv,
  failures: { count: number },
): Deno.Kv {
  return interceptCommits(kv, (real) => {
    if (failures.count > 0) {
      failures.count--;
      return Promise.reject(new TypeError("database is locked"));
    }
    return real();
  });
}

/** A KV whose commits are counted and can be held back. */
export interface GatedKv {
  kv: Deno.Kv;
  /** Atomic commits started so far. */
  commits: number;
  /** Makes commits wait until the returned function is called. */
  hold(): () => void;
}

/**
 * Wraps a real KV to count its atomic commits and to hold them back on
 * demand, as a slow database would. Everything goes to the real database.
 */
export function gatedCommits(kv: Deno.Kv): GatedKv {
  let gate: Promise<void> = Promise.resolve();
  const gated: GatedKv = {
    commits: 0,
    hold() {
      let release!: () => void;
      gate = new Promise((resolve) => release = resolve);
      return release;
    },
    kv: interceptCommits(kv, async (real) => {
      gated.commits++;
      await gate;
      return real();
    }),
  };
  return gated;
}

/**
 * Wraps a real KV so that every `n`th atomic commit throws, as an
 * intermittently failing database would.
 */
export function everyNthCommitFails(kv: Deno.Kv, n: number): Deno.Kv {
  let commits = 0;
  return interceptCommits(kv, (real) => {
    if (++commits % n === 0) {
      return Promise.reject(new TypeError("database is locked"));
    }
    return real();
  });
}

/**
 * Wraps a real KV so that every `n`th atomic commit is written and then
 * throws, as a database does whose answer is lost on the way back: the
 * caller cannot tell whether it was written.
 */
export function everyNthCommitLost(
  kv: Deno.Kv,
  n: number,
): { kv: Deno.Kv; lost: number } {
  let commits = 0;
  const wrapped = {
    lost: 0,
    kv: interceptCommits(kv, async (real) => {
      const result = await real();
      if (++commits % n !== 0) return result;
      wrapped.lost++;
      throw new TypeError("connection reset after the write");
    }),
  };
  return wrapped;
}

/** One id found in a window's log. */
export interface LoggedId {
  /** The id, as a canonical decimal string. */
  id: string;
  /** Its window. */
  minute: number;
}

/**
 * Every id in the log of window `minute` (of every window without it), in
 * log order: read straight from the database, so a test can check what was
 * stored against what was answered.
 */
export async function readIdLog(
  kv: Deno.Kv,
  minute?: number,
): Promise<LoggedId[]> {
  const ids: LoggedId[] = [];
  const prefix = minute === undefined
    ? ["verve", "log"]
    : ["verve", "log", minute];
  for await (const entry of kv.list({ prefix })) {
    if (!(entry.value instanceof Uint8Array)) continue;
    forEachPackedId(entry.value, (lo, hi) => {
      ids.push({
        id: BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo)).toString(),
        minute: entry.key[2] as number,
      });
    });
  }
  return ids;
}

/**
 * Waits, 5 ms at a time, until `done()` holds or about 5 s have passed; the
 * caller asserts what it waited for.
 */
export async function waitFor(done: () => boolean): Promise<void> {
  for (let wait = 0; !done() && wait < 1000; wait++) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
