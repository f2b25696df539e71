/**
 * `KV_PARTITIONS` on a remote Deno KV: several service processes against one
 * KV Connect endpoint with added latency, every id new, at a fixed total
 * rate, per number of partitions; and, with `--store`, what the store alone
 * (no HTTP) commits through one partition and through several.
 *
 * 1. Fleet: `--instances` processes of `main.ts` (each on a port of its own,
 *    as instances behind a load balancer), all on one KV Connect endpoint
 *    served in this process (`tests/helpers/kv_connect.ts`) that adds
 *    `--latency` ms to every read and write. Each instance gets an equal
 *    share of `--rate` req/s from a wrk of its own (`bench/ids.lua`, random
 *    63-bit ids on a fixed schedule, `--connections` each). Per row: the
 *    rate achieved in all and per instance (an instance starved of commits
 *    shows as a low share); errors, wrk's count of answers not 2xx plus its
 *    timeouts (it counts every connection still waiting past `--timeout` s
 *    once every 2 s, so 256 is one instance's 256 connections stuck once);
 *    the worst p50 and p99 of the instances that answered; and from the
 *    instances' `/metrics` the commits made (in all and per instance), the
 *    commits that lost the race for their partition's head to another
 *    instance (`verve_store_conflicts_total`; each costs a range read and a
 *    retry), ids per commit and the mean time of the attempt that
 *    committed. The endpoint's own count of atomic writes (commits plus
 *    conflicts plus the few other writes) and reads (one per conflict)
 *    cross-checks them.
 * 2. Store (`--store`): `createKvStore` on the same kind of endpoint in a
 *    child process of its own (so the client and the endpoint do not share
 *    one event loop), fed by `--callers` concurrent `recordId` loops, per
 *    number of partitions (`--store-partitions`): new ids/s, ids per commit
 *    and commits per second.
 *
 * Usage: `deno task bench:kv-remote [--partitions 1,2,4,8,16]
 * [--instances 3] [--rate 3000] [--latency 20] [--duration 12]
 * [--connections 256] [--timeout 5] [--ack durable] [--store] [--store-only]
 * [--callers 256,2048,8192] [--store-partitions 1,4] [--out F]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { markdownTable } from "./markdown_table.ts";
import { parseWrkOutput, type WrkResult } from "./wrk_result.ts";
import { startKvConnect } from "../tests/helpers/kv_connect.ts";
import { type Service, startService } from "../tests/helpers/service.ts";
import {
  createKvStore,
  idLifetime,
  withTimeLimit,
} from "../lib/store/kv/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}bench/ids.lua`;
const WINDOW_MS = 60_000;
/** The service's default `RETENTION_WINDOWS` × `WINDOW_MS`. */
const RETENTION_MS = 60 * WINDOW_MS;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    partitions: { type: "string", default: "1,2,4,8,16" },
    instances: { type: "string", default: "3" },
    rate: { type: "string", default: "3000" },
    latency: { type: "string", default: "20" },
    duration: { type: "string", default: "12" },
    connections: { type: "string", default: "256" },
    timeout: { type: "string", default: "5" },
    ack: { type: "string", default: "durable" },
    store: { type: "boolean", default: false },
    "store-only": { type: "boolean", default: false },
    callers: { type: "string", default: "256,2048,8192" },
    "store-partitions": { type: "string", default: "1,4" },
    out: { type: "string" },
    // Internal: runs one store measurement in this process (see `--store`).
    "store-client": { type: "boolean", default: false },
    url: { type: "string" },
  },
});

const numbers = (name: string, text: string) => {
  const list = text.split(",").map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !(n > 0))) {
    console.error(`Cannot parse --${name}: need positive numbers, got ${text}`);
    Deno.exit(2);
  }
  return list;
};
const partitionsList = numbers("partitions", values.partitions);
const [instances] = numbers("instances", values.instances) as [number];
const [rate] = numbers("rate", values.rate) as [number];
const latencyMs = Number(values.latency);
const [durationS] = numbers("duration", values.duration) as [number];
const [connections] = numbers("connections", values.connections) as [number];
const [timeoutS] = numbers("timeout", values.timeout) as [number];
const callersList = numbers("callers", values.callers);
const storePartitions = numbers("store-partitions", values["store-partitions"]);
if (!(latencyMs >= 0) || !["durable", "buffered"].includes(values.ack)) {
  console.error("Cannot parse --latency or --ack (durable or buffered)");
  Deno.exit(2);
}

/** The store's counters from an instance's `/metrics`. */
interface StoreCounters {
  ids: number;
  commits: number;
  commitSeconds: number;
  conflicts: number;
  errors: number;
}

/** One row of the fleet table. */
interface FleetRow {
  partitions: number;
  target_rps: number;
  achieved_rps: number;
  errors: number;
  requests: number;
  /** Each instance's answers per second, as `min–max`. */
  per_instance_rps: [number, number];
  /** Each instance's commits made, as `min–max`. */
  per_instance_commits: [number, number];
  /** The largest median of the instances that answered. */
  p50_ms: number;
  /** The largest p99 of the instances that answered. */
  p99_ms: number;
  commits: number;
  conflicts: number;
  /** Conflicts per commit made. */
  conflicts_per_commit: number;
  ids_per_commit: number;
  /** Mean time of a commit of ids, its conflicts and retries included. */
  commit_ms: number;
  /** Atomic writes the endpoint answered (commits, conflicts and the rest). */
  endpoint_writes: number;
  endpoint_reads: number;
}

/** One row of the store table. */
interface StoreRow {
  partitions: number;
  callers: number;
  ids_per_s: number;
  ids_per_commit: number;
  commits_per_s: number;
  commits_per_s_per_partition: number;
  commit_ms: number;
  failed: number;
}

async function requireWrk() {
  try {
    await new Deno.Command("wrk", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    console.error(
      "wrk is not installed; on Debian or Ubuntu: apt-get install wrk",
    );
    Deno.exit(1);
  }
}

async function runWrk(
  url: string,
  seconds: number,
  perInstanceRate: number,
): Promise<WrkResult> {
  return parseWrkOutput(
    await new Deno.Command("wrk", {
      args: [
        "-t1",
        `-c${connections}`,
        `-d${seconds}s`,
        "--timeout",
        `${timeoutS}s`,
        "-s",
        SCRIPT,
        url,
        "--",
        "new",
        "0",
        String(perInstanceRate),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output(),
  );
}

async function storeCounters(service: Service): Promise<StoreCounters> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const value = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return {
    ids: value("verve_store_batch_size_sum"),
    commits: value("verve_store_batch_size_count"),
    commitSeconds: value("verve_store_commit_seconds_sum"),
    conflicts: value("verve_store_conflicts_total"),
    errors: value("verve_store_errors_total"),
  };
}

function sumOf(all: StoreCounters[]): StoreCounters {
  const sum = (key: keyof StoreCounters) =>
    all.reduce((total, c) => total + c[key], 0);
  return {
    ids: sum("ids"),
    commits: sum("commits"),
    commitSeconds: sum("commitSeconds"),
    conflicts: sum("conflicts"),
    errors: sum("errors"),
  };
}

const round = (n: number, digits = 0) =>
  Math.round(n * 10 ** digits) / 10 ** digits;

async function measureFleet(partitions: number): Promise<FleetRow> {
  await using remote = await startKvConnect();
  remote.faults.latencyMs = latencyMs;
  const services: Service[] = [];
  try {
    for (let i = 0; i < instances; i++) {
      services.push(
        await startService({
          KV_PATH: remote.url,
          DENO_KV_ACCESS_TOKEN: remote.token,
          KV_PARTITIONS: String(partitions),
          ACK_MODE: values.ack,
          LOG_LEVEL: "info",
        }),
      );
    }
    const perInstance = rate / instances;
    // Warm-up: connections open, the window's layout written.
    await Promise.all(services.map((s) => runWrk(s.url, 2, perInstance)));
    const beforeEach = await Promise.all(services.map(storeCounters));
    const before = sumOf(beforeEach);
    const writesBefore = remote.stats.atomicWrites;
    const readsBefore = remote.stats.snapshotReads;
    const results = await Promise.all(
      services.map((s) => runWrk(s.url, durationS, perInstance)),
    );
    const afterEach = await Promise.all(services.map(storeCounters));
    const after = sumOf(afterEach);
    const commits = after.commits - before.commits;
    // Latency of the instances that answered at all; those that did not
    // show in the errors (their answers came later than --timeout).
    const answered = results.filter((r) => r.requests > 0);
    const instanceRps = results.map((r) => r.requests / (r.duration_us / 1e6));
    const instanceCommits = afterEach.map((c, i) =>
      c.commits - beforeEach[i]!.commits
    );
    const conflicts = after.conflicts - before.conflicts;
    return {
      partitions,
      target_rps: rate,
      achieved_rps: round(
        results.reduce((t, r) => t + r.requests / (r.duration_us / 1e6), 0),
      ),
      per_instance_rps: [
        round(Math.min(...instanceRps)),
        round(Math.max(...instanceRps)),
      ],
      per_instance_commits: [
        Math.min(...instanceCommits),
        Math.max(...instanceCommits),
      ],
      errors: results.reduce(
        (t, r) => t + r.socket_errors + r.status_errors,
        0,
      ),
      requests: results.reduce((t, r) => t + r.requests, 0),
      p50_ms: round(Math.max(0, ...answered.map((r) => r.p50_us)) / 1000, 1),
      p99_ms: round(Math.max(0, ...answered.map((r) => r.p99_us)) / 1000, 1),
      commits,
      conflicts,
      conflicts_per_commit: commits > 0 ? round(conflicts / commits, 2) : 0,
      ids_per_commit: commits > 0
        ? round((after.ids - before.ids) / commits, 1)
        : 0,
      commit_ms: commits > 0
        ? round(
          (after.commitSeconds - before.commitSeconds) / commits * 1000,
          1,
        )
        : 0,
      endpoint_writes: remote.stats.atomicWrites - writesBefore,
      endpoint_reads: remote.stats.snapshotReads - readsBefore,
    };
  } finally {
    for (const service of services) await service.stop("SIGTERM");
  }
}

/** A random id as `bench/ids.lua` makes them: up to 18 digits. */
function randomId(): string {
  const high = 1 + Math.floor(Math.random() * 999_999_999);
  const low = Math.floor(Math.random() * 1_000_000_000);
  return `${high}${String(low).padStart(9, "0")}`;
}

/**
 * The child side of `--store`: the store on the endpoint at `--url` (token in
 * `DENO_KV_ACCESS_TOKEN`), with the service's time limit and commit
 * deadlines, fed by `callers` loops for `--duration` s after 2 s of warm-up.
 * Prints one JSON line.
 */
async function storeClient(url: string, partitions: number, callers: number) {
  let ids = 0, commits = 0, commitSeconds = 0, failedCommits = 0;
  let counting = false;
  const store = createKvStore(withTimeLimit(await Deno.openKv(url), 2000), {
    retentionMs: RETENTION_MS,
    ...idLifetime(WINDOW_MS, RETENTION_MS),
    partitions,
    onCommit: (n, seconds, ok) => {
      if (!counting) return;
      if (!ok) failedCommits++;
      ids += n;
      commits++;
      commitSeconds += seconds;
    },
  });
  let recorded = 0, failed = 0;
  const warmUntil = performance.now() + 2000;
  const until = warmUntil + durationS * 1000;
  async function caller() {
    while (performance.now() < until) {
      const minute = Date.now() - Date.now() % WINDOW_MS;
      try {
        await store.recordId(minute, randomId());
        if (counting) recorded++;
      } catch {
        if (counting) failed++;
      }
    }
  }
  setTimeout(() => counting = true, 2000);
  await Promise.all(Array.from({ length: callers }, caller));
  await store.close();
  console.log(JSON.stringify({
    recorded,
    failed,
    ids,
    commits,
    commitSeconds,
    failedCommits,
  }));
}

async function measureStore(
  partitions: number,
  callers: number,
): Promise<StoreRow> {
  await using remote = await startKvConnect();
  remote.faults.latencyMs = latencyMs;
  const { stdout, stderr, success } = await new Deno.Command(
    Deno.execPath(),
    {
      args: [
        "run",
        "-A",
        new URL(import.meta.url).pathname,
        "--store-client",
        "--url",
        remote.url,
        "--store-partitions",
        String(partitions),
        "--callers",
        String(callers),
        "--duration",
        String(durationS),
      ],
      env: { DENO_KV_ACCESS_TOKEN: remote.token },
      stdout: "piped",
      stderr: "piped",
    },
  ).output();
  const text = new TextDecoder().decode(stdout);
  const line = text.split("\n").find((l) => l.startsWith("{"));
  if (!success || !line) {
    throw new Error(
      `store client failed: ${text}${new TextDecoder().decode(stderr)}`,
    );
  }
  const r = JSON.parse(line) as {
    recorded: number;
    failed: number;
    ids: number;
    commits: number;
    commitSeconds: number;
  };
  return {
    partitions,
    callers,
    ids_per_s: round(r.recorded / durationS),
    ids_per_commit: r.commits > 0 ? round(r.ids / r.commits, 1) : 0,
    commits_per_s: round(r.commits / durationS, 1),
    commits_per_s_per_partition: round(r.commits / durationS / partitions, 1),
    commit_ms: r.commits > 0 ? round(r.commitSeconds / r.commits * 1000, 1) : 0,
    failed: r.failed,
  };
}

if (values["store-client"]) {
  await storeClient(values.url!, storePartitions[0]!, callersList[0]!);
  Deno.exit(0);
}

await requireWrk();
const fleetRows: FleetRow[] = [];
const storeRows: StoreRow[] = [];
if (!values["store-only"]) {
  for (const partitions of partitionsList) {
    console.error(
      `fleet: ${instances} instances, KV_PARTITIONS=${partitions}, ${rate} req/s, +${latencyMs} ms, ${values.ack}`,
    );
    fleetRows.push(await measureFleet(partitions));
  }
  console.log(
    `\n${instances} instances, one KV Connect endpoint +${latencyMs} ms, ACK_MODE=${values.ack}, every id new, ${rate} req/s fixed, ${connections} connections per instance, ${durationS} s:\n`,
  );
  console.log(markdownTable(
    [
      "KV_PARTITIONS",
      "target req/s",
      "achieved req/s",
      "per instance req/s",
      "errors",
      "p50 ms (worst instance)",
      "p99 ms (worst instance)",
      "commits",
      "per instance commits",
      "conflicts",
      "conflicts/commit",
      "ids/commit",
      "commit ms",
      "KV writes",
      "KV reads",
    ],
    fleetRows.map((r) => [
      String(r.partitions),
      String(r.target_rps),
      String(r.achieved_rps),
      r.per_instance_rps.join("–"),
      String(r.errors),
      r.p50_ms.toFixed(1),
      r.p99_ms.toFixed(1),
      String(r.commits),
      r.per_instance_commits.join("–"),
      String(r.conflicts),
      r.conflicts_per_commit.toFixed(2),
      r.ids_per_commit.toFixed(1),
      r.commit_ms.toFixed(1),
      String(r.endpoint_writes),
      String(r.endpoint_reads),
    ]),
  ));
}
if (values.store || values["store-only"]) {
  for (const partitions of storePartitions) {
    for (const callers of callersList) {
      console.error(
        `store: KV_PARTITIONS=${partitions}, ${callers} callers, +${latencyMs} ms`,
      );
      storeRows.push(await measureStore(partitions, callers));
    }
  }
  console.log(
    `\nThe store alone (durable, no HTTP), one KV Connect endpoint +${latencyMs} ms, every id new, ${durationS} s:\n`,
  );
  console.log(markdownTable(
    [
      "partitions",
      "callers",
      "new ids/s",
      "ids/commit",
      "commits/s",
      "commits/s per partition",
      "commit ms",
      "failed",
    ],
    storeRows.map((r) => [
      String(r.partitions),
      String(r.callers),
      String(r.ids_per_s),
      r.ids_per_commit.toFixed(1),
      r.commits_per_s.toFixed(1),
      r.commits_per_s_per_partition.toFixed(1),
      r.commit_ms.toFixed(1),
      String(r.failed),
    ]),
  ));
}

if (values.out) {
  await Deno.writeTextFile(
    values.out,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        deno: Deno.version.deno,
        cpus: navigator.hardwareConcurrency,
        instances,
        rate,
        latency_ms: latencyMs,
        ack: values.ack,
        connections,
        duration_s: durationS,
        fleet: fleetRows,
        store: storeRows,
      },
      null,
      2,
    ) + "\n",
  );
  console.error(`wrote ${values.out}`);
}
