/**
 * Service configuration, read once from environment variables and validated
 * with zod. Every setting has a default, so an empty environment is valid.
 *
 * @module
 */
import { z } from "zod";
import { createAddressPolicy } from "./report/sinks/address_policy.ts";

/** The validated settings of one service instance. */
export interface Config {
  /** `HOST`: the interface to listen on. */
  host: string;
  /** `PORT`: the TCP port to listen on; `0` picks a free one. */
  port: number;
  /**
   * `REUSE_PORT`: lets several processes listen on the same port (Linux
   * `SO_REUSEPORT`); the kernel spreads connections across them.
   */
  reusePort: boolean;
  /**
   * `TLS_CERT_FILE` and `TLS_KEY_FILE`: PEM files; with both, the service
   * speaks HTTPS.
   */
  tls: { certFile: string; keyFile: string } | undefined;
  /** `STORE`: the shared store, `kv` (Deno KV) or `redis`. */
  store: StoreKind;
  /**
   * `REDIS_URL`: the Redis server, `redis://` or `rediss://`, with
   * credentials; with `REDIS_CLUSTER`, the cluster's seed nodes.
   */
  redisUrls: string[];
  /** `REDIS_CLUSTER`: whether Redis is a Redis Cluster. */
  redisCluster: boolean;
  /**
   * `REDIS_WAIT_REPLICAS`: replicas that must have each write before it
   * counts (Redis `WAIT`).
   */
  redisWaitReplicas: number;
  /** `REDIS_TIMEOUT_MS`: the time limit of one Redis command. */
  redisTimeoutMs: number;
  /**
   * `KV_PATH`: the Deno KV database: a file path, `:memory:`, or an
   * `https://` KV Connect URL. Undefined means Deno's default database (the
   * managed KV on Deno Deploy).
   */
  kvPath: string | undefined;
  /** `KV_COMMIT_ATTEMPTS`: attempts per Deno KV commit that throws. */
  kvCommitAttempts: number;
  /**
   * `KV_TIMEOUT_MS`: the time limit of one call to a remote Deno KV (KV
   * Connect, Deno Deploy).
   */
  kvTimeoutMs: number;
  /** `WINDOW_MS`: the counting window; one minute unless testing. */
  windowMs: number;
  /**
   * `KV_PARTITIONS`: partitions of each window's id log in Deno KV; the
   * first instance to write in a window fixes its number.
   */
  kvPartitions: number;
  /**
   * `KV_MAX_WINDOW_IDS`: the most ids of one window an instance holds in
   * memory; past it, new ids are answered 503.
   */
  kvMaxWindowIds: number;
  /** `REPORT_GRACE_MS`: how long after a window closes its report waits. */
  reportGraceMs: number;
  /** `RETENTION_WINDOWS`: how many closed windows are kept and caught up. */
  retentionWindows: number;
  /** `MAX_URLS_PER_WINDOW`: distinct webhook URLs accepted per window. */
  maxUrlsPerWindow: number;
  /** `WEBHOOK_TIMEOUT_MS`: the time limit of one webhook attempt. */
  webhookTimeoutMs: number;
  /** `WEBHOOK_ATTEMPTS`: attempts per webhook URL and report. */
  webhookAttempts: number;
  /** `WEBHOOK_CONCURRENCY`: webhook POSTs in flight at once, in all. */
  webhookConcurrency: number;
  /** `WEBHOOK_ALLOW`: hosts and CIDR ranges webhooks may reach regardless. */
  webhookAllow: string[];
  /** `WEBHOOK_ALLOWLIST_ONLY`: webhooks may reach only `WEBHOOK_ALLOW`. */
  webhookAllowlistOnly: boolean;
  /**
   * `WEBHOOK_REJECT_UNDELIVERABLE`: answer 400 at request time for a `url`
   * whose host can never be delivered to.
   */
  webhookRejectUndeliverable: boolean;
  /**
   * `ACK_MODE`: `durable` answers `ok` once the id is committed; `buffered`
   * once it is queued for commit.
   */
  ackMode: AckMode;
  /** `BUFFER_MAX_IDS`: ids acknowledged but not yet committed, at most. */
  bufferMaxIds: number;
  /**
   * `BUFFER_FLUSH_MS`: how long an acknowledged id may wait for its commit
   * before new requests wait for theirs.
   */
  bufferFlushMs: number;
  /** `REPORT_SINKS`: where reports go, e.g. `log,webhook,kafka-rest`. */
  reportSinks: SinkName[];
  /** `OUTBOX_MAX_AGE_MS`: how long a report waits for a failing sink. */
  outboxMaxAgeMs: number;
  /** `SINK_RETRY_BASE_MS`: the first retry delay of a failed delivery. */
  sinkRetryBaseMs: number;
  /** `SINK_RETRY_MAX_MS`: the longest retry delay of a failed delivery. */
  sinkRetryMaxMs: number;
  /** `KAFKA_TOPIC`: the topic both Kafka sinks produce to. */
  kafkaTopic: string;
  /** The REST proxy sink's settings (`KAFKA_REST_*`). */
  kafkaRest: {
    url: string | undefined;
    api: "v2" | "v3";
    clusterId: string | undefined;
    username: string | undefined;
    password: string | undefined;
    token: string | undefined;
    timeoutMs: number;
  };
  /** The direct Kafka sink's settings (`KAFKA_*`). */
  kafka: {
    brokers: string[];
    clientId: string;
    ssl: boolean;
    saslMechanism: "plain" | "scram-sha-256" | "scram-sha-512" | undefined;
    saslUsername: string | undefined;
    saslPassword: string | undefined;
    timeoutMs: number;
  };
  /**
   * `SHUTDOWN_TIMEOUT_MS`: how long a shutdown may take before the service
   * abandons what is left and exits non-zero.
   */
  shutdownTimeoutMs: number;
  /** `LOG_LEVEL`: the lowest level written to the log. */
  logLevel: LogLevel;
}

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

function integer(min: number, max: number, fallback: number) {
  return z.string().trim().default(String(fallback)).pipe(
    z.string().regex(/^\d+$/, "must be a whole number").transform(Number)
      .pipe(z.number().int().min(min).max(max)),
  );
}

/** A `true`/`false` (or `1`/`0`) setting, false when unset. */
function boolean() {
  return z.string().trim().toLowerCase().default("false").pipe(
    z.enum(["true", "false", "1", "0"], "must be true or false"),
  ).transform((v) => v === "true" || v === "1");
}

const schema = z.object({
  HOST: z.string().trim().min(1).default("0.0.0.0"),
  PORT: integer(0, 65_535, 8000),
  REUSE_PORT: boolean(),
  TLS_CERT_FILE: z.string().trim().min(1).optional(),
  TLS_KEY_FILE: z.string().trim().min(1).optional(),
  STORE: z.string().trim().toLowerCase().default("kv").pipe(
    z.enum(STORE_KINDS),
  ),
  REDIS_URL: z.string().trim().default("redis://127.0.0.1:6379").transform(
    (value) => value.split(",").map((url) => url.trim()),
  ).pipe(
    z.array(z.url({
      protocol: /^rediss?$/,
      error: "must be redis:// or rediss:// URLs, separated by commas",
    })),
  ),
  REDIS_CLUSTER: boolean(),
  REDIS_WAIT_REPLICAS: integer(0, 5, 0),
  REDIS_TIMEOUT_MS: integer(10, 60_000, 1000),
  KV_PATH: z.string().trim().min(1).optional(),
  KV_COMMIT_ATTEMPTS: integer(1, 20, 10),
  KV_TIMEOUT_MS: integer(100, 60_000, 2000),
  WINDOW_MS: integer(100, 3_600_000, 60_000),
  KV_PARTITIONS: integer(1, 256, 1),
  KV_MAX_WINDOW_IDS: integer(1000, 100_000_000, 5_000_000),
  REPORT_GRACE_MS: integer(0, 30_000, 2000),
  RETENTION_WINDOWS: integer(2, 10_080, 60),
  MAX_URLS_PER_WINDOW: integer(0, 100_000, 1000),
  WEBHOOK_TIMEOUT_MS: integer(100, 60_000, 5000),
  WEBHOOK_ATTEMPTS: integer(1, 10, 3),
  WEBHOOK_CONCURRENCY: integer(1, 1000, 32),
  WEBHOOK_ALLOW: z.string().default("").transform((v) =>
    v.split(",").map((entry) => entry.trim()).filter(Boolean)
  ).pipe(
    z.array(
      z.string().regex(
        /^([A-Za-z0-9.-]+|[0-9A-Fa-f:.]+(\/\d{1,3})?)$/,
        "must list host names, addresses or CIDR ranges",
      ),
    ),
  ),
  WEBHOOK_ALLOWLIST_ONLY: boolean(),
  WEBHOOK_REJECT_UNDELIVERABLE: boolean(),
  ACK_MODE: z.string().trim().toLowerCase().default("durable").pipe(
    z.enum(ACK_MODES),
  ),
  BUFFER_MAX_IDS: integer(1, 10_000_000, 2000),
  BUFFER_FLUSH_MS: integer(1, 10_000, 100),
  REPORT_SINKS: z.string().trim().toLowerCase().default("log,webhook")
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
  OUTBOX_MAX_AGE_MS: integer(1000, 604_800_000, 3_600_000),
  SINK_RETRY_BASE_MS: integer(10, 3_600_000, 10_000),
  SINK_RETRY_MAX_MS: integer(10, 3_600_000, 300_000),
  KAFKA_TOPIC: z.string().trim().regex(
    /^[A-Za-z0-9._-]{1,249}$/,
    "must be a Kafka topic name (letters, digits, . _ -)",
  ).default("verve-unique-ids"),
  KAFKA_REST_URL: z.url({
    protocol: /^https?$/,
    error: "must be an http:// or https:// URL",
  }).optional(),
  KAFKA_REST_API: z.string().trim().toLowerCase().default("v2").pipe(
    z.enum(["v2", "v3"]),
  ),
  KAFKA_REST_CLUSTER_ID: z.string().trim().min(1).optional(),
  KAFKA_REST_USERNAME: z.string().optional(),
  KAFKA_REST_PASSWORD: z.string().optional(),
  KAFKA_REST_TOKEN: z.string().optional(),
  KAFKA_REST_TIMEOUT_MS: integer(100, 60_000, 5000),
  KAFKA_BROKERS: z.string().trim().transform((v) =>
    v.split(",").map((b) => b.trim()).filter(Boolean)
  ).pipe(
    z.array(z.string().regex(/^[^\s:]+:\d{1,5}$/, "must list host:port pairs"))
      .min(1),
  ).optional(),
  KAFKA_CLIENT_ID: z.string().trim().min(1).default("verve"),
  KAFKA_SSL: boolean(),
  KAFKA_SASL_MECHANISM: z.string().trim().toLowerCase().pipe(
    z.enum(["plain", "scram-sha-256", "scram-sha-512"]),
  ).optional(),
  KAFKA_SASL_USERNAME: z.string().optional(),
  KAFKA_SASL_PASSWORD: z.string().optional(),
  KAFKA_TIMEOUT_MS: integer(100, 120_000, 10_000),
  SHUTDOWN_TIMEOUT_MS: integer(1000, 600_000, 30_000),
  LOG_LEVEL: z.string().trim().toLowerCase().default("info").pipe(
    z.enum(LOG_LEVELS),
  ),
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
  if (s.ACK_MODE === "buffered" && s.BUFFER_FLUSH_MS >= s.REPORT_GRACE_MS) {
    // Buffered ids must be committed before their window is reported.
    throw new ConfigError(
      "BUFFER_FLUSH_MS",
      `must be below REPORT_GRACE_MS (${s.REPORT_GRACE_MS}) with ACK_MODE=buffered (got "${s.BUFFER_FLUSH_MS}")`,
    );
  }
  if (s.REDIS_URL.length > 1 && !s.REDIS_CLUSTER) {
    throw new ConfigError(
      "REDIS_URL",
      `takes one URL unless REDIS_CLUSTER=true, for the cluster's seed nodes (got ${
        JSON.stringify(present.REDIS_URL)
      })`,
    );
  }
  if ((s.TLS_CERT_FILE === undefined) !== (s.TLS_KEY_FILE === undefined)) {
    throw new ConfigError(
      s.TLS_CERT_FILE === undefined ? "TLS_CERT_FILE" : "TLS_KEY_FILE",
      "is required with the other TLS file",
    );
  }
  try {
    createAddressPolicy({ allow: s.WEBHOOK_ALLOW });
  } catch (error) {
    throw new ConfigError("WEBHOOK_ALLOW", (error as Error).message);
  }
  const sinks = s.REPORT_SINKS;
  if (sinks.includes("kafka-rest") && !s.KAFKA_REST_URL) {
    throw new ConfigError(
      "KAFKA_REST_URL",
      "is required when REPORT_SINKS has kafka-rest",
    );
  }
  if (
    sinks.includes("kafka-rest") && s.KAFKA_REST_API === "v3" &&
    !s.KAFKA_REST_CLUSTER_ID
  ) {
    throw new ConfigError(
      "KAFKA_REST_CLUSTER_ID",
      "is required with KAFKA_REST_API=v3",
    );
  }
  if (sinks.includes("kafka") && !s.KAFKA_BROKERS) {
    throw new ConfigError(
      "KAFKA_BROKERS",
      "is required when REPORT_SINKS has kafka",
    );
  }
  if (
    s.KAFKA_SASL_MECHANISM &&
    (s.KAFKA_SASL_USERNAME === undefined || s.KAFKA_SASL_PASSWORD === undefined)
  ) {
    throw new ConfigError(
      "KAFKA_SASL_USERNAME",
      "and KAFKA_SASL_PASSWORD are required with KAFKA_SASL_MECHANISM",
    );
  }
  const onDeploy = !!env.DENO_DEPLOYMENT_ID;
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
    redisWaitReplicas: present.REDIS_WAIT_REPLICAS !== undefined
      ? s.REDIS_WAIT_REPLICAS
      : s.REDIS_CLUSTER
      ? 1
      : 0,
    redisTimeoutMs: s.REDIS_TIMEOUT_MS,
    kvPath: s.KV_PATH ?? (onDeploy ? undefined : DEFAULT_KV_PATH),
    kvCommitAttempts: s.KV_COMMIT_ATTEMPTS,
    kvTimeoutMs: s.KV_TIMEOUT_MS,
    windowMs: s.WINDOW_MS,
    kvPartitions: s.KV_PARTITIONS,
    kvMaxWindowIds: s.KV_MAX_WINDOW_IDS,
    reportGraceMs: s.REPORT_GRACE_MS,
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
    reportSinks: sinks,
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
    shutdownTimeoutMs: s.SHUTDOWN_TIMEOUT_MS,
    logLevel: s.LOG_LEVEL,
  };
}
