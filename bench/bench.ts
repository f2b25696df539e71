/**
 * `deno task bench`: loads the service and a bare `Deno.serve` baseline
 * alternately with wrk, on this machine and in this run, and prints one
 * table of throughput, their ratio, latency and the service's peak memory.
 *
 * Usage: `deno task bench [--duration S] [--rounds N] [--only a,b,…]
 * [--out results.json]`
 *
 * Every workload gets a fresh service process with a fresh KV file in a temp
 * directory and production settings (unless the workload says otherwise).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { markdownTable } from "./markdown_table.ts";
import { parseWrkOutput, type WrkResult } from "./wrk_result.ts";
import {
  REDIS_AVAILABLE,
  type RedisServer,
  startRedis,
} from "../tests/helpers/redis.ts";
import { freePort, programRuns } from "../tests/helpers/requirements.ts";
import {
  type KvConnectServer,
  startKvConnect,
} from "../tests/helpers/kv_connect.ts";
import {
  type RedisCluster,
  startRedisCluster,
} from "../tests/helpers/redis_cluster.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}bench/ids.lua`;
/** What `bench/seed/main.go` builds from, as Debian packages. */
const SEED_PACKAGES =
  "golang-go golang-github-go-chi-chi-dev golang-github-gomodule-redigo-dev";
/** Where Debian's Go packages keep their sources. */
const GOCODE = "/usr/share/gocode";
const GO_AVAILABLE = await programRuns("go", ["version"]);

/** One load to measure. */
interface Workload {
  name: string;
  description: string;
  /** Arguments of `bench/ids.lua`: mode, url percent, fixed rate (0: none). */
  script: [mode: string, urlPercent: number, rate: number];
  connections: number;
  /** Extra settings of the service. */
  env?: Record<string, string>;
  /** Seconds of load; default: `--duration`. */
  durationS?: number;
  /** Loads the baseline too. Default: true. */
  baseline?: boolean;
  /**
   * Service processes sharing the port (`REUSE_PORT`) and the KV file, as
   * instances behind a load balancer. Default: 1.
   */
  instances?: number;
  /**
   * Runs the service on Redis (`STORE=redis`) instead of a KV file: a
   * redis-server of its own, writing an append-only file synced before each
   * answer, so `ok` means on disk as with KV.
   */
  redis?: boolean;
  /**
   * Runs the service on a Redis Cluster of its own: three masters and three
   * replicas (`tests/helpers/redis_cluster.ts`), each write waiting for its
   * replica (`REDIS_WAIT_REPLICAS=1`).
   */
  redisCluster?: boolean;
  /**
   * Runs the service on a remote Deno KV: a KV Connect endpoint in this
   * process (`tests/helpers/kv_connect.ts`) that adds `latencyMs` to every
   * read and write, as the distance to the database on the edge does.
   */
  remote?: { latencyMs: number };
  /**
   * Loads the seed's design instead of the service: `bench/seed/main.go`
   * (Go, chi, one `SADD` per request) on a redis-server of its own without
   * persistence.
   */
  seed?: boolean;
}

/** One row of the table. */
interface Row {
  workload: string;
  description: string;
  service_rps: number;
  baseline_rps: number | null;
  ratio: number | null;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  requests: number;
  peak_rss_mb: number;
  /** Ids per store commit on average, from the service's `/metrics`. */
  ids_per_commit: number | null;
}

const WORKLOADS: Workload[] = [
  {
    name: "a",
    description: "1000 ids repeating",
    script: ["repeat", 0, 0],
    connections: 64,
  },
  {
    name: "b",
    description: "every id new",
    script: ["new", 0, 0],
    connections: 64,
  },
  {
    name: "b-buffered",
    description: "every id new, ACK_MODE=buffered",
    script: ["new", 0, 0],
    connections: 64,
    env: { ACK_MODE: "buffered" },
  },
  {
    name: "c",
    description: "every id new, url on 1%",
    script: ["new", 1, 0],
    connections: 64,
  },
  {
    name: "d",
    description: "fixed 10K req/s, every id new",
    // Requests leave on a fixed schedule; 200 connections leave room for
    // slow answers without lowering the rate.
    script: ["new", 0, 10_000],
    connections: 200,
    baseline: false,
  },
  {
    name: "d-buffered",
    description: "fixed 10K req/s, every id new, ACK_MODE=buffered",
    script: ["new", 0, 10_000],
    connections: 200,
    env: { ACK_MODE: "buffered" },
    baseline: false,
  },
  {
    name: "b-redis",
    description: "every id new, STORE=redis (appendfsync always)",
    script: ["new", 0, 0],
    connections: 64,
    redis: true,
  },
  {
    name: "b-redis-buffered",
    description: "every id new, STORE=redis, ACK_MODE=buffered",
    script: ["new", 0, 0],
    connections: 64,
    env: { ACK_MODE: "buffered" },
    redis: true,
  },
  {
    name: "b-redis-cluster",
    description:
      "every id new, STORE=redis on a 3+3 Redis Cluster (WAIT for a replica), REDIS_SHARDS=auto (3)",
    script: ["new", 0, 0],
    connections: 64,
    redisCluster: true,
  },
  {
    name: "b-redis-s12",
    description:
      "every id new, STORE=redis (appendfsync always), REDIS_SHARDS=12",
    script: ["new", 0, 0],
    connections: 64,
    env: { REDIS_SHARDS: "12" },
    redis: true,
  },
  {
    name: "b-redis-cluster-s1",
    description:
      "every id new, STORE=redis on a 3+3 Redis Cluster, REDIS_SHARDS=1 (one master takes the window)",
    script: ["new", 0, 0],
    connections: 64,
    env: { REDIS_SHARDS: "1" },
    redisCluster: true,
  },
  {
    name: "b-redis-cluster-s12",
    description:
      "every id new, STORE=redis on a 3+3 Redis Cluster, REDIS_SHARDS=12",
    script: ["new", 0, 0],
    connections: 64,
    env: { REDIS_SHARDS: "12" },
    redisCluster: true,
  },
  {
    name: "seed-b",
    description:
      "the seed's design: Go, chi, one Redis SADD per request, no persistence; every id new",
    script: ["new", 0, 0],
    connections: 64,
    seed: true,
  },
  {
    name: "d-redis",
    description: "fixed 10K req/s, every id new, STORE=redis",
    script: ["new", 0, 10_000],
    connections: 200,
    baseline: false,
    redis: true,
  },
  {
    name: "f",
    description:
      "3 processes, REUSE_PORT, one KV file, ids from a pool of 30 000",
    script: ["pool", 0, 0],
    connections: 64,
    instances: 3,
  },
  {
    name: "f-buffered",
    description:
      "3 processes, REUSE_PORT, one KV file, ids from a pool of 30 000, ACK_MODE=buffered",
    script: ["pool", 0, 0],
    connections: 64,
    instances: 3,
    env: { ACK_MODE: "buffered" },
  },
  {
    name: "f-new",
    description: "3 processes, REUSE_PORT, one KV file, every id new",
    script: ["new", 0, 0],
    connections: 64,
    instances: 3,
  },
  // A fixed 10K req/s of new ids on a remote KV, with connections enough
  // for the rate: a durable answer waits for the commit in flight, then its
  // own, about four round trips.
  ...([[0, 1000], [20, 1500], [80, 3000]] as const).flatMap((
    [latencyMs, connections],
  ): Workload[] => [
    {
      name: `g-${latencyMs}`,
      description:
        `fixed 10K req/s, every id new, remote KV over KV Connect, +${latencyMs} ms`,
      script: ["new", 0, 10_000],
      connections,
      baseline: false,
      remote: { latencyMs },
    },
    {
      name: `g-${latencyMs}-buffered`,
      description:
        `fixed 10K req/s, every id new, remote KV over KV Connect, +${latencyMs} ms, ACK_MODE=buffered`,
      script: ["new", 0, 10_000],
      connections,
      env: { ACK_MODE: "buffered" },
      baseline: false,
      remote: { latencyMs },
    },
  ]),
  {
    name: "e",
    description: "3.2M new ids in 90 s (35.5K req/s), ACK_MODE=buffered",
    script: ["new", 0, 35_500],
    connections: 200,
    env: { ACK_MODE: "buffered" },
    durationS: 90,
    baseline: false,
  },
  {
    name: "e-max",
    description: "every id new for 90 s, as fast as it goes, ACK_MODE=buffered",
    script: ["new", 0, 0],
    connections: 64,
    env: { ACK_MODE: "buffered" },
    durationS: 90,
    baseline: false,
  },
];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    duration: { type: "string", default: "10" },
    rounds: { type: "string", default: "2" },
    only: { type: "string" },
    out: { type: "string" },
  },
});
const durationS = Number(values.duration);
const rounds = Number(values.rounds);
if (!(durationS > 0) || !Number.isInteger(rounds) || rounds < 1) {
  console.error("Cannot parse --duration or --rounds: need positive numbers");
  Deno.exit(2);
}
const only = values.only?.split(",").map((s) => s.trim());
const selected = WORKLOADS.filter((w) => !only || only.includes(w.name)).filter(
  (w) => {
    if ((w.redis || w.redisCluster || w.seed) && !REDIS_AVAILABLE) {
      console.error(
        `skipping ${w.name}: redis-server is not installed; on Debian or Ubuntu: apt-get install redis-server`,
      );
      return false;
    }
    if (w.seed && !GO_AVAILABLE) {
      console.error(
        `skipping ${w.name}: Go is not installed; on Debian or Ubuntu: apt-get install ${SEED_PACKAGES}`,
      );
      return false;
    }
    return true;
  },
);
if (selected.length === 0) {
  console.error(
    `Cannot parse --only: no workload named ${values.only}; have ${
      WORKLOADS.map((w) => w.name).join(", ")
    }`,
  );
  Deno.exit(2);
}

await requireTool("wrk", "apt-get install wrk");

/** Exits with a hint when a load generator is missing. */
async function requireTool(name: string, install: string) {
  try {
    await new Deno.Command(name, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    console.error(`${name} is not installed; on Debian or Ubuntu: ${install}`);
    Deno.exit(1);
  }
}

/** A server process the bench started. */
interface Server {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `args` under `deno run` with `env`, and waits until `port`
 * (default: a free one) answers.
 */
function startServer(
  args: string[],
  env: Record<string, string>,
  port = freePort(),
): Promise<Server> {
  return startProgram(Deno.execPath(), ["run", ...args], env, port);
}

/** Starts `program` with `args` and `env`, and waits until `port` answers. */
async function startProgram(
  program: string,
  args: string[],
  env: Record<string, string>,
  port: number,
): Promise<Server> {
  const child = new Deno.Command(program, {
    args,
    env: { ...env, PORT: String(port), HOST: "127.0.0.1" },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/`);
      await response.body?.cancel();
      break;
    } catch (error) {
      if (i === 200) {
        try {
          child.kill("SIGKILL");
        } catch {
          // It has exited already.
        }
        await child.status;
        throw new Error(
          `Cannot start ${
            args.at(-1) ?? program
          }: port ${port} does not answer after 10 s`,
          { cause: error },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** The peak resident memory of a process so far, in MiB. */
async function peakRssMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
  return Math.round(kb / 1024);
}

async function runWrk(
  port: number,
  workload: Workload,
  seconds: number,
): Promise<WrkResult> {
  return parseWrkOutput(
    await new Deno.Command("wrk", {
      args: [
        "-t1",
        `-c${workload.connections}`,
        `-d${seconds}s`,
        "--timeout",
        "10s",
        "-s",
        SCRIPT,
        `http://127.0.0.1:${port}`,
        "--",
        ...workload.script.map(String),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output(),
  );
}

const rps = (r: WrkResult) => r.requests / (r.duration_us / 1e6);
const ms = (us: number) => Math.round(us / 10) / 100;

async function measure(workload: Workload, baseline: Server): Promise<Row> {
  const dir = await Deno.makeTempDir({ prefix: "verve-bench-" });
  let redis: RedisServer | undefined;
  let remote: KvConnectServer | undefined;
  let cluster: RedisCluster | undefined;
  const services: Server[] = [];
  try {
    if (workload.redisCluster) cluster = await startRedisCluster();
    redis = workload.redis
      ? await startRedis({ appendFsync: "always" })
      : workload.seed
      ? await startRedis()
      : undefined;
    if (workload.remote) {
      remote = await startKvConnect();
      remote.faults.latencyMs = workload.remote.latencyMs;
    }
    const instances = workload.instances ?? 1;
    const port = freePort();
    for (let i = 0; i < instances && workload.seed; i++) {
      services.push(await startSeed(dir, redis!));
    }
    for (let i = 0; i < instances && !workload.seed; i++) {
      services.push(
        await startServer(
          [...START_FLAGS, `${ROOT}main.ts`],
          {
            KV_PATH: `${dir}/verve.kv`,
            LOG_LEVEL: "warning",
            ...(instances > 1 ? { REUSE_PORT: "true" } : {}),
            ...(redis ? { STORE: "redis", REDIS_URL: redis.url } : {}),
            ...(remote
              ? { KV_PATH: remote.url, DENO_KV_ACCESS_TOKEN: remote.token }
              : {}),
            ...(cluster
              ? {
                STORE: "redis",
                REDIS_CLUSTER: "true",
                REDIS_URL: cluster.url,
              }
              : {}),
            ...workload.env,
          },
          port,
        ),
      );
    }
    const service = services[0]!;
    const seconds = workload.durationS ?? durationS;
    await runWrk(service.port, workload, 2);
    if (workload.baseline !== false) await runWrk(baseline.port, workload, 2);
    // Throughput runs keep their fastest round; fixed-rate runs, whose
    // point is latency, their calmest.
    const better = workload.script[2] > 0
      ? (x: WrkResult, y: WrkResult) => x.p99_us < y.p99_us
      : (x: WrkResult, y: WrkResult) => rps(x) > rps(y);
    let best: WrkResult | undefined;
    let bestBaseline: WrkResult | undefined;
    for (let round = 0; round < rounds; round++) {
      if (workload.baseline !== false) {
        const b = await runWrk(baseline.port, workload, seconds);
        if (!bestBaseline || better(b, bestBaseline)) bestBaseline = b;
      }
      const s = await runWrk(service.port, workload, seconds);
      if (!best || better(s, best)) best = s;
      if (workload.durationS) break; // a long run: once
    }
    const serviceRps = rps(best!);
    const baselineRps = bestBaseline ? rps(bestBaseline) : null;
    return {
      workload: workload.name,
      description: workload.description,
      service_rps: Math.round(serviceRps),
      baseline_rps: baselineRps === null ? null : Math.round(baselineRps),
      ratio: baselineRps === null
        ? null
        : Math.round(serviceRps / baselineRps * 100) / 100,
      p50_ms: ms(best!.p50_us),
      p99_ms: ms(best!.p99_us),
      errors: best!.socket_errors + best!.status_errors,
      requests: best!.requests,
      peak_rss_mb: Math.max(
        ...await Promise.all(services.map((s) => peakRssMb(s.pid))),
      ),
      ids_per_commit: workload.seed ? null : await idsPerCommit(service.port),
    };
  } finally {
    for (const service of services) await service.stop();
    await redis?.[Symbol.asyncDispose]();
    await remote?.[Symbol.asyncDispose]();
    await cluster?.[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Builds `bench/seed/main.go` in `dir` from Debian's Go packages, with no
 * network (GOPATH mode, chi's `/v5` import path linked to its sources), and
 * starts it on `redis`.
 */
async function startSeed(dir: string, redis: RedisServer): Promise<Server> {
  const gopath = `${dir}/gopath`;
  const chi = `${gopath}/src/github.com/go-chi/chi`;
  await Deno.mkdir(chi, { recursive: true });
  await Deno.symlink(`${GOCODE}/src/github.com/go-chi/chi`, `${chi}/v5`);
  const binary = `${dir}/seed`;
  const built = await new Deno.Command("go", {
    args: ["build", "-o", binary, "."],
    cwd: `${ROOT}bench/seed`,
    env: { GO111MODULE: "off", GOPATH: `${gopath}:${GOCODE}` },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!built.success) {
    throw new Error(
      `Cannot build bench/seed/main.go; on Debian or Ubuntu: apt-get install ${SEED_PACKAGES}`,
    );
  }
  return await startProgram(binary, [], {
    REDIS_ADDR: `127.0.0.1:${redis.port}`,
  }, freePort());
}

/** Ids per commit on average so far, from a service's `/metrics`. */
async function idsPerCommit(port: number): Promise<number | null> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const value = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  const ids = value("verve_store_batch_size_sum");
  const commits = value("verve_store_batch_size_count");
  return commits > 0 ? Math.round(ids / commits) : null;
}

function printTable(rows: Row[]) {
  const header = [
    "workload",
    "service req/s",
    "baseline req/s",
    "ratio",
    "p50 ms",
    "p99 ms",
    "errors",
    "requests",
    "peak RSS MiB",
    "ids/commit",
  ];
  const cells = rows.map((r) => [
    `${r.workload}: ${r.description}`,
    String(r.service_rps),
    r.baseline_rps === null ? "-" : String(r.baseline_rps),
    r.ratio === null ? "-" : r.ratio.toFixed(2),
    r.p50_ms.toFixed(2),
    r.p99_ms.toFixed(2),
    String(r.errors),
    String(r.requests),
    String(r.peak_rss_mb),
    r.ids_per_commit === null ? "-" : String(r.ids_per_commit),
  ]);
  console.log(markdownTable(header, cells));
}

/**
 * The flags `deno task start` gives the service (`deno run <flags> main.ts`),
 * so the bench measures the service as it runs in production.
 */
const START_FLAGS: string[] = (() => {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const words = String(config.tasks.start).trim().split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== "main.ts") {
    throw new Error(`Cannot read the start task: ${config.tasks.start}`);
  }
  return words.slice(2, -1);
})();

const baseline = await startServer([
  "--allow-net",
  "--allow-env",
  `${ROOT}bench/baseline.ts`,
], {});
const rows: Row[] = [];
try {
  for (const workload of selected) {
    console.error(`running ${workload.name}: ${workload.description}`);
    rows.push(await measure(workload, baseline));
  }
} finally {
  await baseline.stop();
}
printTable(rows);

if (values.out) {
  const report = {
    date: new Date().toISOString(),
    deno: Deno.version.deno,
    cpus: navigator.hardwareConcurrency,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    duration_s: durationS,
    rounds,
    rows,
  };
  await Deno.writeTextFile(values.out, JSON.stringify(report, null, 2) + "\n");
  console.error(`wrote ${values.out}`);
}
