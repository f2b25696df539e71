/**
 * Service configuration, read once from environment variables and validated
 * with zod. Every setting has a default, so an empty environment is valid.
 *
 * @module
 */
import { z } from "zod";
import { parseAllowlist } from "./allowlist.ts";

/**
 * The validated settings of one service instance: what {@link parseConfig}
 * returns, derived from the schema (each setting's meaning is documented
 * there, and in `docs/configuration.md`).
 */
export type Config = ReturnType<typeof toConfig>;

/**
 * How long ids gather between commits in buffered mode by default, in ms
 * (measured with `deno task bench`, BENCHMARKS.md).
 */
export const BUFFER_GATHER_MS = 10;

/** The sinks `REPORT_SINKS` may name. */
export const SINK_NAMES = ["log", "webhook", "kafka-rest", "kafka"] as const;

/** One of {@link SINK_NAMES}. */
export type SinkName = typeof SINK_NAMES[number];

/** The store backends `STORE` accepts. */
export const STORE_KINDS = ["kv", "redis"] as const;

/** One of {@link STORE_KINDS}. */
export type StoreKind = typeof STORE_KINDS[number];

/** The acknowledgement modes `ACK_MODE` accepts. */
export const ACK_MODES = ["durable", "buffered"] as const;

/** One of {@link ACK_MODES}. */
export type AckMode = typeof ACK_MODES[number];

/** The log levels `LOG_LEVEL` accepts. */
export const LOG_LEVELS = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Thrown by {@link parseConfig} for a setting it cannot accept. */
export class ConfigError extends Error {
  /**
   * @param variable The environment variable at fault.
   * @param problem What is wrong with its value.
   */
  constructor(readonly variable: string, problem: string) {
    super(`Cannot parse ${variable}: ${problem}`);
    this.name = "ConfigError";
  }
}

/** A whole number from `min` to `max`, written in decimal digits. */
function wholeNumberIn(min: number, max: number) {
  return z.string().regex(/^\d+$/, "must be a whole number").transform(Number)
    .pipe(z.number().int().min(min).max(max));
}

function integer(min: number, max: number, fallback: number) {
  return z.string().trim().default(String(fallback)).pipe(
    wholeNumberIn(min, max),
  );
}

/**
 * Attaches a setting's documentation to its schema: what it means, and its
 * default as the documentation shows it (Markdown), where that is not the
 * value the schema gives an unset variable (a default that depends on other
 * settings). `deno task docs` writes both to `docs/configuration.md`.
 */
function setting<T extends z.ZodType>(
  schema: T,
  meaning: string,
  shownDefault?: string,
): T {
  return schema.meta({ description: meaning, shownDefault });
}

/** A `true`/`false` (or `1`/`0`) setting, false when unset. */
function boolean() {
  return z.string().trim().default("false").pipe(z.stringbool({
    truthy: ["true", "1"],
    falsy: ["false", "0"],
    error: "must be true or false",
  }));
}

/**
 * Every setting: its schema, with its documentation attached as metadata
 * (`config_docs.ts` turns it into `docs/configuration.md`).
 */
export const schema = z.object({
  HOST: setting(
    z.string().trim().min(1).default("0.0.0.0"),
    "Interface to listen on.",
  ),
  PORT: setting(
    integer(0, 65_535, 8000),
    "TCP port; `0` picks a free one (logged at start).",
  ),
  REUSE_PORT: setting(
    boolean(),
    "`true` lets several processes listen on the same port; the kernel spreads connections across them (see [Several instances](deployment.md#several-instances)).",
  ),
  TLS_CERT_FILE: setting(
    z.string().trim().min(1).optional(),
    "A PEM certificate chain, with `TLS_KEY_FILE`: with both, the service speaks HTTPS itself.",
  ),
  TLS_KEY_FILE: setting(
    z.string().trim().min(1).optional(),
    "The PEM key of `TLS_CERT_FILE`: with both, the service speaks HTTPS itself.",
  ),
  STORE: setting(
    z.string().trim().toLowerCase().default("kv").pipe(
      z.enum(STORE_KINDS),
    ),
    "The shared store: `kv` (Deno KV, see `KV_PATH`) or `redis` (see `REDIS_URL`).",
  ),
  REDIS_URL: setting(
    z.string().trim().default("redis://127.0.0.1:6379").transform(
      (value) => value.split(",").map((url) => url.trim()),
    ).pipe(
      z.array(z.url({
        protocol: /^rediss?$/,
        error: "must be redis:// or rediss:// URLs, separated by commas",
      })),
    ),
    "With `STORE=redis`: the server, `redis://` or `rediss://` (TLS), with `user:password@` and a `/db` number if needed; with `REDIS_CLUSTER=true`, seed nodes of the cluster separated by commas (the first one's credentials and TLS serve every node).",
  ),
  REDIS_CLUSTER: setting(
    boolean(),
    "With `STORE=redis`: Redis is a Redis Cluster (see [Redis Cluster](deployment.md#redis-cluster)).",
  ),
  REDIS_WAIT_REPLICAS: setting(
    integer(0, 5, 0),
    "Replicas that must have each write before it counts (0\u20135; Redis `WAIT`, within half of `REDIS_TIMEOUT_MS`); fewer get `503`. A master with fewer replicas left (after a failover) waits for those it has.",
    "`1` with `REDIS_CLUSTER`, else `0`",
  ),
  REDIS_TIMEOUT_MS: setting(
    integer(10, 60_000, 1000),
    "With `STORE=redis`: the time limit of one Redis command (10\u201360000); past it the request gets `503`.",
  ),
  REDIS_SHARDS: setting(
    z.string().trim().toLowerCase().default("auto").refine(
      (value) =>
        value === "auto" ||
        (/^\d+$/.test(value) && Number(value) >= 1 && Number(value) <= 256),
      "must be auto or a whole number from 1 to 256",
    ).transform((value) => value === "auto" ? "auto" as const : Number(value)),
    "With `STORE=redis`: shards of each window's ids, `auto` or 1\u2013256. Each shard's keys sit in a hash slot of its own, the shards spread evenly over the slot range, so every master of a cluster takes an equal share of the window being counted when the masters split the slots evenly and their number divides the shards. `auto`: as many as the cluster's masters when the window starts (one script call per master for each batch), 1 on one server. The first instance to write in a window fixes its number, so instances with different values still agree. See [Redis Cluster](deployment.md#redis-cluster).",
  ),
  KV_PATH: setting(
    z.string().trim().min(1).optional(),
    "Deno KV database: a file path, `:memory:`, or an `https://` KV Connect URL (with `KV_ACCESS_TOKEN` or `DENO_KV_ACCESS_TOKEN`).",
    "`./data/verve.kv` (Deno Deploy: its managed KV)",
  ),
  KV_ACCESS_TOKEN: setting(
    z.string().trim().min(1).optional(),
    "The access token of the KV Connect database of `KV_PATH`, where `DENO_KV_ACCESS_TOKEN` cannot be set (Deno Deploy refuses variables whose names start with `DENO_`); when both are set, this one counts.",
  ),
  KV_COMMIT_ATTEMPTS: setting(
    integer(1, 20, 10),
    "Attempts per Deno KV call that throws, e.g. `database is locked` while another process writes the file (each waits up to 5 s for the lock); then `503`.",
  ),
  KV_TIMEOUT_MS: setting(
    integer(100, 60_000, 2000),
    "With a remote Deno KV (a KV Connect URL, or Deno Deploy's): the time limit of one call (100\u201360000). Deno's client retries a remote database's errors and lost connections without end; past the limit the request gets `503` and the reporter tries again on its next tick. A local file's calls wait at most for its lock.",
  ),
  WINDOW_MS: setting(
    integer(100, 3_600_000, 60_000),
    "Counting window, 100\u20133600000 ms. Keep one minute in production; shorter windows are for tests.",
  ),
  KV_PARTITIONS: setting(
    integer(1, 256, 1),
    "Partitions of each window's id log in Deno KV (1\u2013256). An id's partition is a hash of the id, so instances share every partition; each partition's head takes one commit at a time, and more partitions let more instances' commits through at once. A local file takes one writer at a time whatever the partitions, so there more partitions only mean smaller commits. The first instance to write in a window fixes its number, so instances with different values still agree. See [Several instances](deployment.md#several-instances).",
    "`16` on a remote Deno KV (a KV Connect URL, or Deno Deploy's), else `1`",
  ),
  KV_COMMIT_DEPTH: setting(
    integer(1, 16, 1),
    "The most commits of ids in flight at once in one partition of a window's Deno KV log while this instance owns it (1\u201316): the last instance to commit there owns it, and another instance's commit takes it over. The owner keeps one in flight for every 20 ms its commits have taken lately, up to this many: one on a file or a nearby database, four at +80 ms. On a remote database each commit waits a round trip, and more in flight cut the wait for one's turn; a local file takes one writer at a time. See [Several instances](deployment.md#several-instances).",
    "`4` on a remote Deno KV, else `1`",
  ),
  KV_CONNECTIONS: setting(
    integer(1, 256, 1),
    "Connections to a remote Deno KV that the commits and reads of the id log spread over (1\u2013256), one request on each at a time while one is free; other calls share the first. Deno's KV Connect client sends with Nagle's algorithm on, so a request that follows another on one connection before its answer can wait for the database's delayed ACK (measured at +80 ms: with four commits in flight on one connection half of them took 30\u201340 ms longer, with one connection each none did; see [BENCHMARKS.md](../BENCHMARKS.md#remote-deno-kv)). A local file always takes one.",
    "on a remote Deno KV, the commits in flight: `KV_PARTITIONS` \u00d7 `KV_COMMIT_DEPTH`, at least 4; else `1`",
  ),
  KV_MAX_WINDOW_IDS: setting(
    integer(1000, 100_000_000, 5_000_000),
    "The most ids of one window an instance holds in memory (1000\u2013100000000), at 11.4\u201317.1 bytes each; past it, new ids get `503 failed` (logged at error level once per window, counted in `verve_ids_refused_total`) until the next window.",
  ),
  REPORT_GRACE_MS: setting(
    integer(0, 30_000, 2000),
    "Wait after a window ends before reporting it (0\u201330000), so requests still committing are counted.",
  ),
  WINDOW_HEADER: setting(
    boolean(),
    "`true` names the window every `ok` answer's id counts in, in its `verve-window` header; `false` names it only where it is not the window the request arrived in (see [clocks](deployment.md#clocks)). Deno answers fastest with one header: measured, the header on every answer costs a fifth of the throughput of repeated ids.",
  ),
  CLOCK_CHECK_MS: setting(
    integer(0, 60_000, 1000),
    "How often an instance compares its clock with the fleet's, in ms (0\u201360000; 0: never, each instance follows its own clock): with Redis's clock (`TIME`), or on Deno KV with the median of the instances' clocks, which each writes at every check (one KV write and one list per check). Windows and reports follow the fleet's clock ([clocks](deployment.md#clocks)).",
  ),
  CLOCK_WARN_MS: setting(
    integer(1, 600_000, 1000),
    "How far an instance's clock may be from the fleet's before it is logged at warning level, once per window (1\u2013600000).",
  ),
  RETENTION_WINDOWS: setting(
    integer(2, 10_080, 60),
    "Windows the webhook URLs, report records and delivery records live for, and how far back unreported windows are caught up (2\u201310080). On Deno KV, the id log of a window lives for the window plus 5 minutes (at least 2 windows, at most this); on Redis, a window's ids are deleted once it is reported.",
  ),
  MAX_URLS_PER_WINDOW: setting(
    integer(0, 100_000, 1000),
    "Distinct webhook URLs accepted per window (0\u2013100000); further new URLs get `429`.",
  ),
  WEBHOOK_TIMEOUT_MS: setting(
    integer(100, 60_000, 5000),
    "Time limit of one webhook attempt (100\u201360000).",
  ),
  WEBHOOK_ATTEMPTS: setting(
    integer(1, 10, 3),
    "Attempts per URL in one delivery (1\u201310); a URL that still fails is tried again on later ticks through the outbox.",
  ),
  WEBHOOK_CONCURRENCY: setting(
    integer(1, 1000, 32),
    "Webhook POSTs in flight at once, over all reports (1\u20131000).",
  ),
  WEBHOOK_ALLOW: setting(
    z.string().default("").transform((v) =>
      v.split(",").map((entry) => entry.trim()).filter(Boolean)
    ).pipe(
      z.array(
        z.string().regex(
          /^([A-Za-z0-9.-]+|[0-9A-Fa-f:.]+(\/\d{1,3})?)$/,
          "must list host names, addresses or CIDR ranges",
        ),
      ),
    ),
    "Hosts, addresses and CIDR ranges webhooks may reach even if internal, e.g. `hooks.internal,10.1.0.0/16`.",
  ),
  WEBHOOK_ALLOWLIST_ONLY: setting(
    boolean(),
    "`true`: webhooks may reach only what `WEBHOOK_ALLOW` lists.",
  ),
  WEBHOOK_REJECT_UNDELIVERABLE: setting(
    boolean(),
    "`true`: a request whose `url` can never be delivered to (port 0, an internal address literal, `localhost`, outside the allowlist) gets `400 failed`.",
  ),
  ACK_MODE: setting(
    z.string().trim().toLowerCase().default("durable").pipe(
      z.enum(ACK_MODES),
    ),
    "`durable`: `ok` once the id is committed. `buffered`: `ok` once it is queued for commit (see [Acknowledgement modes](../README.md#acknowledgement-modes)).",
  ),
  BUFFER_MAX_IDS: setting(
    integer(1, 10_000_000, 2000),
    "Buffered mode: ids acknowledged but not yet committed, at most (1\u201310000000). Past it, requests wait for their commit.",
  ),
  BUFFER_FLUSH_MS: setting(
    integer(1, 10_000, 100),
    "Buffered mode: how long an acknowledged id may wait for its commit (1\u201310000); while the oldest has waited longer, requests wait for their commit. Must be below `REPORT_GRACE_MS`.",
  ),
  BUFFER_GATHER_MS: setting(
    // Unset, it follows BUFFER_FLUSH_MS (see toConfig).
    z.string().trim().pipe(wholeNumberIn(0, 5000)).optional(),
    "Buffered mode: the least time between the starts of two commits (0\u20135000; per partition on Deno KV); the next one also waits for the one in progress. Ids gather meanwhile, so that under load commits are fewer and larger and each request costs less CPU. The first commit after a quiet spell starts at once, and so does one when half of `BUFFER_MAX_IDS` wait for their commit (those being committed included; on Redis a full batch of 500 starts at once anyway). 0: a commit starts as soon as the store allows. At most half of `BUFFER_FLUSH_MS`; a clean shutdown commits what gathers at once.",
    `\`${BUFFER_GATHER_MS}\`, or half of \`BUFFER_FLUSH_MS\` where that is less`,
  ),
  REPORT_SINKS: setting(
    z.string().trim().toLowerCase().default("log,webhook")
      .transform((v) => v.split(",").map((name) => name.trim()))
      .pipe(
        z.array(
          z.enum(SINK_NAMES, `must list sinks among ${SINK_NAMES.join(", ")}`),
        )
          .min(1)
          .refine(
            (names) => new Set(names).size === names.length,
            "names a sink twice",
          ),
      ),
    "Where reports go, comma-separated: `log`, `webhook`, `kafka-rest`, `kafka` (see [Kafka](kafka.md)).",
  ),
  OUTBOX_MAX_AGE_MS: setting(
    integer(1000, 604_800_000, 3_600_000),
    "How long a report waits in the outbox for a sink that keeps failing before it is dropped (logged at error level).",
  ),
  SINK_RETRY_BASE_MS: setting(
    integer(10, 3_600_000, 10_000),
    "First retry delay of a failed delivery; doubles per attempt.",
  ),
  SINK_RETRY_MAX_MS: setting(
    integer(10, 3_600_000, 300_000),
    "Longest retry delay of a failed delivery.",
  ),
  KAFKA_TOPIC: setting(
    z.string().trim().regex(
      /^[A-Za-z0-9._-]{1,249}$/,
      "must be a Kafka topic name (letters, digits, . _ -)",
    ).default("verve-unique-ids"),
    "The topic both Kafka sinks produce to.",
  ),
  KAFKA_REST_URL: setting(
    z.url({
      protocol: /^https?$/,
      error: "must be an http:// or https:// URL",
    }).optional(),
    "`kafka-rest`: the proxy's base URL, e.g. `http://rest-proxy:8082`; Confluent Cloud: the REST endpoint with `/kafka`.",
  ),
  KAFKA_REST_API: setting(
    z.string().trim().toLowerCase().default("v2").pipe(
      z.enum(["v2", "v3"]),
    ),
    "`kafka-rest`: `v2` (Confluent v2, Redpanda, Karapace, Strimzi Bridge) or `v3` (Confluent Platform and Cloud).",
  ),
  KAFKA_REST_CLUSTER_ID: setting(
    z.string().trim().min(1).optional(),
    "`kafka-rest` with `v3`: the Kafka cluster id.",
  ),
  KAFKA_REST_USERNAME: setting(
    z.string().optional(),
    "`kafka-rest`: the HTTP Basic user name (or API key), with `KAFKA_REST_PASSWORD`.",
  ),
  KAFKA_REST_PASSWORD: setting(
    z.string().optional(),
    "`kafka-rest`: the HTTP Basic password (or API secret), with `KAFKA_REST_USERNAME`.",
  ),
  KAFKA_REST_TOKEN: setting(
    z.string().optional(),
    "`kafka-rest`: a bearer token instead.",
  ),
  KAFKA_REST_TIMEOUT_MS: setting(
    integer(100, 60_000, 5000),
    "`kafka-rest`: the time limit of one request.",
  ),
  KAFKA_BROKERS: setting(
    z.string().trim().transform((v) =>
      v.split(",").map((b) => b.trim()).filter(Boolean)
    ).pipe(
      z.array(
        z.string().regex(/^[^\s:]+:\d{1,5}$/, "must list host:port pairs"),
      )
        .min(1),
    ).optional(),
    "`kafka`: bootstrap brokers, `host:port,host:port`.",
  ),
  KAFKA_CLIENT_ID: setting(
    z.string().trim().min(1).default("verve"),
    "`kafka`: the client id.",
  ),
  KAFKA_SSL: setting(
    boolean(),
    "`kafka`: connect with TLS.",
  ),
  KAFKA_SASL_MECHANISM: setting(
    z.string().trim().toLowerCase().pipe(
      z.enum(["plain", "scram-sha-256", "scram-sha-512"]),
    ).optional(),
    "`kafka`: SASL `plain`, `scram-sha-256` or `scram-sha-512`.",
  ),
  KAFKA_SASL_USERNAME: setting(
    z.string().optional(),
    "`kafka`: the SASL user name, required with `KAFKA_SASL_MECHANISM`.",
  ),
  KAFKA_SASL_PASSWORD: setting(
    z.string().optional(),
    "`kafka`: the SASL password, required with `KAFKA_SASL_MECHANISM`.",
  ),
  KAFKA_TIMEOUT_MS: setting(
    integer(100, 120_000, 10_000),
    "`kafka`: the time limit of connecting and of one request.",
  ),
  SHUTDOWN_TIMEOUT_MS: setting(
    integer(1000, 600_000, 30_000),
    "How long a shutdown may take (1000\u2013600000). Deno Deploy stops an app with SIGINT and kills it 5 s later, so there the default leaves a second to spare. Past it, the service logs at error level what it abandons (ids not yet committed, deliveries in progress, which stay in the outbox for a later attempt) and exits 1.",
    "`30000` (Deno Deploy: `4000`)",
  ),
  LOG_LEVEL: setting(
    z.string().trim().toLowerCase().default("info").pipe(
      z.enum(LOG_LEVELS),
    ),
    "`trace`, `debug`, `info`, `warning`, `error` or `fatal`.",
  ),
}).superRefine((s, ctx) => {
  const refuse = (variable: string, message: string) =>
    ctx.addIssue({ code: "custom", path: [variable], message });
  if (s.ACK_MODE === "buffered" && s.BUFFER_FLUSH_MS >= s.REPORT_GRACE_MS) {
    // Buffered ids must be committed before their window is reported.
    refuse(
      "BUFFER_FLUSH_MS",
      `must be below REPORT_GRACE_MS (${s.REPORT_GRACE_MS}) with ACK_MODE=buffered`,
    );
  }
  if (
    s.ACK_MODE === "buffered" && s.BUFFER_GATHER_MS !== undefined &&
    s.BUFFER_GATHER_MS * 2 > s.BUFFER_FLUSH_MS
  ) {
    // Ids gathering must leave time for their commit within the flush.
    refuse(
      "BUFFER_GATHER_MS",
      `must be at most half of BUFFER_FLUSH_MS (${s.BUFFER_FLUSH_MS}) with ACK_MODE=buffered`,
    );
  }
  if (s.REDIS_URL.length > 1 && !s.REDIS_CLUSTER) {
    refuse(
      "REDIS_URL",
      "takes one URL unless REDIS_CLUSTER=true, for the cluster's seed nodes",
    );
  }
  if ((s.TLS_CERT_FILE === undefined) !== (s.TLS_KEY_FILE === undefined)) {
    refuse(
      s.TLS_CERT_FILE === undefined ? "TLS_CERT_FILE" : "TLS_KEY_FILE",
      "is required with the other TLS file",
    );
  }
  try {
    parseAllowlist(s.WEBHOOK_ALLOW);
  } catch (error) {
    refuse("WEBHOOK_ALLOW", (error as Error).message);
  }
  const sinks = s.REPORT_SINKS;
  if (sinks.includes("kafka-rest") && !s.KAFKA_REST_URL) {
    refuse("KAFKA_REST_URL", "is required when REPORT_SINKS has kafka-rest");
  }
  if (
    sinks.includes("kafka-rest") && s.KAFKA_REST_API === "v3" &&
    !s.KAFKA_REST_CLUSTER_ID
  ) {
    refuse("KAFKA_REST_CLUSTER_ID", "is required with KAFKA_REST_API=v3");
  }
  if (sinks.includes("kafka") && !s.KAFKA_BROKERS) {
    refuse("KAFKA_BROKERS", "is required when REPORT_SINKS has kafka");
  }
  if (
    s.KAFKA_SASL_MECHANISM &&
    (s.KAFKA_SASL_USERNAME === undefined || s.KAFKA_SASL_PASSWORD === undefined)
  ) {
    refuse(
      "KAFKA_SASL_USERNAME",
      "and KAFKA_SASL_PASSWORD are required with KAFKA_SASL_MECHANISM",
    );
  }
});

/** The default `KV_PATH` outside Deno Deploy. */
export const DEFAULT_KV_PATH = "./data/verve.kv";

/**
 * Parses the service settings from environment variables.
 *
 * @param env The environment, e.g. `Deno.env.toObject()`. An empty string
 *   counts as unset.
 * @returns The validated settings.
 * @throws {ConfigError} naming the first variable that is not acceptable.
 *
 * @example
 * ```ts
 * const config = parseConfig({ PORT: "8080" });
 * config.windowMs; // 60000
 * ```
 */
export function parseConfig(env: Record<string, string | undefined>): Config {
  const present: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && value !== "" && name in schema.shape) {
      present[name] = value;
    }
  }
  const result = schema.safeParse(present);
  if (!result.success) {
    const issue = result.error.issues[0];
    const variable = String(issue?.path[0] ?? "environment");
    const value = present[variable];
    const shown = value === undefined ? "" : ` (got ${JSON.stringify(value)})`;
    throw new ConfigError(variable, `${issue?.message ?? "invalid"}${shown}`);
  }
  const s = result.data;
  return toConfig(s, {
    onDeploy: !!env.DENO_DEPLOYMENT_ID,
    given: new Set(Object.keys(present)),
    openTelemetry: /^(true|1)$/i.test(env.OTEL_DENO?.trim() ?? ""),
  });
}

/** The shutdown's time limit on Deno Deploy, which kills an app 5 s after SIGINT. */
export const DEPLOY_SHUTDOWN_TIMEOUT_MS = 4000;

/**
 * The partitions of a window's Deno KV log on a remote database when
 * `KV_PARTITIONS` is not given: enough that instances racing to commit
 * all get their turn (measured with three instances at +20 ms, BENCHMARKS.md).
 */
export const REMOTE_KV_PARTITIONS = 16;

/**
 * Commits in flight per owned partition on a remote Deno KV when
 * `KV_COMMIT_DEPTH` is not given (measured at +80 ms, BENCHMARKS.md).
 */
export const REMOTE_KV_COMMIT_DEPTH = 4;

/**
 * Commits and reads of ids a Deno KV store runs at once, over all
 * partitions, by default: enough for every partition's `depth`, at least 4.
 */
export function commitsInFlight(partitions: number, depth: number): number {
  return Math.max(4, partitions * depth);
}

/**
 * Whether the Deno KV at `path` is remote: a KV Connect URL, or Deno
 * Deploy's own (`undefined`), rather than a local file.
 */
export function isRemoteKv(path: string | undefined): boolean {
  return path === undefined || /^https?:\/\//i.test(path);
}

/**
 * The settings as the service uses them, from the parsed environment.
 *
 * @param s The schema's output.
 * @param context Where the service runs, whether OpenTelemetry is on, and
 *   which settings were given: `REDIS_WAIT_REPLICAS`, `KV_PARTITIONS`,
 *   `KV_COMMIT_DEPTH`, `KV_CONNECTIONS` and `SHUTDOWN_TIMEOUT_MS` have defaults
 *   that depend on other settings or on the platform.
 */
function toConfig(
  s: z.output<typeof schema>,
  context: {
    onDeploy: boolean;
    /** The settings the environment gives: the others take defaults. */
    given: ReadonlySet<string>;
    openTelemetry: boolean;
  },
) {
  const kvPath = s.KV_PATH ?? (context.onDeploy ? undefined : DEFAULT_KV_PATH);
  const remoteKv = isRemoteKv(kvPath);
  // A file has one writer at a time: more partitions only mean more,
  // smaller commits. A remote database has many.
  const kvPartitions = context.given.has("KV_PARTITIONS")
    ? s.KV_PARTITIONS
    : remoteKv
    ? REMOTE_KV_PARTITIONS
    : 1;
  const kvCommitDepth = context.given.has("KV_COMMIT_DEPTH")
    ? s.KV_COMMIT_DEPTH
    : remoteKv
    ? REMOTE_KV_COMMIT_DEPTH
    : 1;
  return {
    host: s.HOST,
    port: s.PORT,
    reusePort: s.REUSE_PORT,
    tls: s.TLS_CERT_FILE && s.TLS_KEY_FILE
      ? { certFile: s.TLS_CERT_FILE, keyFile: s.TLS_KEY_FILE }
      : undefined,
    store: s.STORE,
    redisUrls: s.REDIS_URL,
    redisCluster: s.REDIS_CLUSTER,
    // On a cluster, a write counts once its master's replica has it.
    redisWaitReplicas: context.given.has("REDIS_WAIT_REPLICAS")
      ? s.REDIS_WAIT_REPLICAS
      : s.REDIS_CLUSTER
      ? 1
      : 0,
    redisTimeoutMs: s.REDIS_TIMEOUT_MS,
    redisShards: s.REDIS_SHARDS,
    kvPath,
    kvAccessToken: s.KV_ACCESS_TOKEN,
    kvCommitAttempts: s.KV_COMMIT_ATTEMPTS,
    kvTimeoutMs: s.KV_TIMEOUT_MS,
    windowMs: s.WINDOW_MS,
    kvPartitions,
    kvCommitDepth,
    kvConnections: !remoteKv
      ? 1
      : context.given.has("KV_CONNECTIONS")
      ? s.KV_CONNECTIONS
      : commitsInFlight(kvPartitions, kvCommitDepth),
    kvMaxWindowIds: s.KV_MAX_WINDOW_IDS,
    reportGraceMs: s.REPORT_GRACE_MS,
    windowHeader: s.WINDOW_HEADER,
    clockCheckMs: s.CLOCK_CHECK_MS,
    clockWarnMs: s.CLOCK_WARN_MS,
    // On Deno Deploy an instance runs whenever a request comes, so a window
    // that no instance saw had no requests: it is reported as 0.
    reportEmptyBeforeStart: context.onDeploy,
    retentionWindows: s.RETENTION_WINDOWS,
    maxUrlsPerWindow: s.MAX_URLS_PER_WINDOW,
    webhookTimeoutMs: s.WEBHOOK_TIMEOUT_MS,
    webhookAttempts: s.WEBHOOK_ATTEMPTS,
    webhookConcurrency: s.WEBHOOK_CONCURRENCY,
    webhookAllow: s.WEBHOOK_ALLOW,
    webhookAllowlistOnly: s.WEBHOOK_ALLOWLIST_ONLY,
    webhookRejectUndeliverable: s.WEBHOOK_REJECT_UNDELIVERABLE,
    ackMode: s.ACK_MODE,
    bufferMaxIds: s.BUFFER_MAX_IDS,
    bufferFlushMs: s.BUFFER_FLUSH_MS,
    bufferGatherMs: s.BUFFER_GATHER_MS ??
      Math.min(BUFFER_GATHER_MS, Math.floor(s.BUFFER_FLUSH_MS / 2)),
    reportSinks: s.REPORT_SINKS,
    outboxMaxAgeMs: s.OUTBOX_MAX_AGE_MS,
    sinkRetryBaseMs: s.SINK_RETRY_BASE_MS,
    sinkRetryMaxMs: s.SINK_RETRY_MAX_MS,
    kafkaTopic: s.KAFKA_TOPIC,
    kafkaRest: {
      url: s.KAFKA_REST_URL,
      api: s.KAFKA_REST_API,
      clusterId: s.KAFKA_REST_CLUSTER_ID,
      username: s.KAFKA_REST_USERNAME,
      password: s.KAFKA_REST_PASSWORD,
      token: s.KAFKA_REST_TOKEN,
      timeoutMs: s.KAFKA_REST_TIMEOUT_MS,
    },
    kafka: {
      brokers: s.KAFKA_BROKERS ?? [],
      clientId: s.KAFKA_CLIENT_ID,
      ssl: s.KAFKA_SSL,
      saslMechanism: s.KAFKA_SASL_MECHANISM,
      saslUsername: s.KAFKA_SASL_USERNAME,
      saslPassword: s.KAFKA_SASL_PASSWORD,
      timeoutMs: s.KAFKA_TIMEOUT_MS,
    },
    shutdownTimeoutMs: context.given.has("SHUTDOWN_TIMEOUT_MS") ||
        !context.onDeploy
      ? s.SHUTDOWN_TIMEOUT_MS
      : DEPLOY_SHUTDOWN_TIMEOUT_MS,
    // Deno Deploy collects logs and metrics through OpenTelemetry.
    openTelemetry: context.openTelemetry || context.onDeploy,
    logLevel: s.LOG_LEVEL,
  };
}
