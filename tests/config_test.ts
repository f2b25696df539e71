import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  DEFAULT_KV_PATH,
  parseConfig,
} from "../lib/config.ts";
import { settingDocs } from "../lib/config_docs.ts";

const DEFAULTS: Config = {
  host: "0.0.0.0",
  port: 8000,
  reusePort: false,
  tls: undefined,
  store: "kv",
  redisUrls: ["redis://127.0.0.1:6379"],
  redisCluster: false,
  redisWaitReplicas: 0,
  redisTimeoutMs: 1000,
  redisShards: "auto",
  kvPath: "./data/verve.kv",
  kvAccessToken: undefined,
  kvCommitAttempts: 10,
  kvTimeoutMs: 2000,
  windowMs: 60_000,
  kvPartitions: 1,
  kvCommitDepth: 1,
  kvConnections: 1,
  kvMaxWindowIds: 5_000_000,
  shutdownTimeoutMs: 30_000,
  openTelemetry: false,
  reportGraceMs: 2000,
  windowHeader: false,
  clockCheckMs: 1000,
  clockWarnMs: 1000,
  reportEmptyBeforeStart: false,
  retentionWindows: 60,
  maxUrlsPerWindow: 1000,
  webhookTimeoutMs: 5000,
  webhookAttempts: 3,
  webhookConcurrency: 32,
  webhookAllow: [],
  webhookAllowlistOnly: false,
  webhookRejectUndeliverable: false,
  ackMode: "durable",
  bufferMaxIds: 2000,
  bufferFlushMs: 100,
  bufferGatherMs: 10,
  reportSinks: ["log", "webhook"],
  outboxMaxAgeMs: 3_600_000,
  sinkRetryBaseMs: 10_000,
  sinkRetryMaxMs: 300_000,
  kafkaTopic: "verve-unique-ids",
  kafkaRest: {
    url: undefined,
    api: "v2",
    clusterId: undefined,
    username: undefined,
    password: undefined,
    token: undefined,
    timeoutMs: 5000,
  },
  kafka: {
    brokers: [],
    clientId: "verve",
    ssl: false,
    saslMechanism: undefined,
    saslUsername: undefined,
    saslPassword: undefined,
    timeoutMs: 10_000,
  },
  logLevel: "info",
};

Deno.test("parseConfig() returns the defaults for an empty environment", () => {
  assert.equal(DEFAULT_KV_PATH, "./data/verve.kv");
  assert.deepEqual(parseConfig({}), DEFAULTS);
});

Deno.test("parseConfig() reads each setting from its variable", async (t) => {
  const cases: [string, string, Partial<Config>][] = [
    ["HOST", "127.0.0.1", { host: "127.0.0.1" }],
    ["HOST", " localhost ", { host: "localhost" }],
    ["PORT", "8080", { port: 8080 }],
    ["PORT", "0", { port: 0 }],
    ["PORT", "65535", { port: 65_535 }],
    ["PORT", " 9000 ", { port: 9000 }],
    ["PORT", "0080", { port: 80 }],
    ["REUSE_PORT", "true", { reusePort: true }],
    ["REUSE_PORT", "1", { reusePort: true }],
    ["REUSE_PORT", "FALSE", { reusePort: false }],
    ["REUSE_PORT", " true ", { reusePort: true }],
    ["STORE", "redis", { store: "redis" }],
    ["STORE", " KV ", { store: "kv" }],
    [
      "REDIS_URL",
      "rediss://user:secret@cache.example.com:6380/2",
      { redisUrls: ["rediss://user:secret@cache.example.com:6380/2"] },
    ],
    ["REDIS_WAIT_REPLICAS", "2", { redisWaitReplicas: 2 }],
    ["KV_TIMEOUT_MS", "100", { kvTimeoutMs: 100 }],
    ["KV_TIMEOUT_MS", "60000", { kvTimeoutMs: 60_000 }],
    ["REDIS_TIMEOUT_MS", "250", { redisTimeoutMs: 250 }],
    ["REPORT_SINKS", "log", { reportSinks: ["log"] }],
    [
      "WEBHOOK_ALLOW",
      "127.0.0.1/32, hooks.internal,10.0.0.0/8,::1",
      { webhookAllow: ["127.0.0.1/32", "hooks.internal", "10.0.0.0/8", "::1"] },
    ],
    ["WEBHOOK_ALLOWLIST_ONLY", "true", { webhookAllowlistOnly: true }],
    ["WEBHOOK_REJECT_UNDELIVERABLE", "1", { webhookRejectUndeliverable: true }],
    ["REPORT_SINKS", " Webhook , log ", { reportSinks: ["webhook", "log"] }],
    ["OUTBOX_MAX_AGE_MS", "60000", { outboxMaxAgeMs: 60_000 }],
    ["SINK_RETRY_BASE_MS", "500", { sinkRetryBaseMs: 500 }],
    ["SINK_RETRY_MAX_MS", "5000", { sinkRetryMaxMs: 5000 }],
    ["KAFKA_TOPIC", "unique.ids-1", { kafkaTopic: "unique.ids-1" }],
    ["KV_PATH", ":memory:", { kvPath: ":memory:" }],
    ["KV_PATH", "/tmp/x.kv", { kvPath: "/tmp/x.kv" }],
    ["KV_ACCESS_TOKEN", " t0ken ", { kvAccessToken: "t0ken" }],
    [
      "KV_PATH",
      "https://api.deno.com/databases/x/connect",
      {
        kvPath: "https://api.deno.com/databases/x/connect",
        kvPartitions: 16,
        kvCommitDepth: 4,
        kvConnections: 64,
      },
    ],
    ["REDIS_SHARDS", "auto", { redisShards: "auto" }],
    ["REDIS_SHARDS", " AUTO ", { redisShards: "auto" }],
    ["REDIS_SHARDS", "1", { redisShards: 1 }],
    ["REDIS_SHARDS", "256", { redisShards: 256 }],
    ["WINDOW_MS", "1000", { windowMs: 1000 }],
    ["KV_COMMIT_ATTEMPTS", "1", { kvCommitAttempts: 1 }],
    ["WINDOW_MS", "100", { windowMs: 100 }],
    ["WINDOW_MS", "3600000", { windowMs: 3_600_000 }],
    ["KV_PARTITIONS", "1", { kvPartitions: 1 }],
    ["KV_PARTITIONS", "256", { kvPartitions: 256 }],
    ["KV_COMMIT_DEPTH", "16", { kvCommitDepth: 16 }],
    ["KV_MAX_WINDOW_IDS", "1000", { kvMaxWindowIds: 1000 }],
    ["SHUTDOWN_TIMEOUT_MS", "1000", { shutdownTimeoutMs: 1000 }],
    ["SHUTDOWN_TIMEOUT_MS", "600000", { shutdownTimeoutMs: 600_000 }],
    ["KV_MAX_WINDOW_IDS", "100000000", { kvMaxWindowIds: 100_000_000 }],
    ["REPORT_GRACE_MS", "0", { reportGraceMs: 0 }],
    ["REPORT_GRACE_MS", "30000", { reportGraceMs: 30_000 }],
    ["CLOCK_CHECK_MS", "0", { clockCheckMs: 0 }],
    ["CLOCK_WARN_MS", "250", { clockWarnMs: 250 }],
    ["RETENTION_WINDOWS", "2", { retentionWindows: 2 }],
    ["RETENTION_WINDOWS", "10080", { retentionWindows: 10_080 }],
    ["MAX_URLS_PER_WINDOW", "0", { maxUrlsPerWindow: 0 }],
    ["MAX_URLS_PER_WINDOW", "100000", { maxUrlsPerWindow: 100_000 }],
    ["WEBHOOK_TIMEOUT_MS", "250", { webhookTimeoutMs: 250 }],
    ["WEBHOOK_ATTEMPTS", "1", { webhookAttempts: 1 }],
    ["WEBHOOK_ATTEMPTS", "10", { webhookAttempts: 10 }],
    ["WEBHOOK_CONCURRENCY", "1", { webhookConcurrency: 1 }],
    ["WEBHOOK_CONCURRENCY", "1000", { webhookConcurrency: 1000 }],
    ["LOG_LEVEL", "trace", { logLevel: "trace" }],
    ["LOG_LEVEL", "debug", { logLevel: "debug" }],
    ["LOG_LEVEL", "warning", { logLevel: "warning" }],
    ["LOG_LEVEL", "error", { logLevel: "error" }],
    ["LOG_LEVEL", "fatal", { logLevel: "fatal" }],
    ["LOG_LEVEL", " DEBUG ", { logLevel: "debug" }],
    ["ACK_MODE", "buffered", { ackMode: "buffered" }],
    ["ACK_MODE", "Durable", { ackMode: "durable" }],
    ["BUFFER_MAX_IDS", "1", { bufferMaxIds: 1 }],
    ["BUFFER_FLUSH_MS", "1", { bufferFlushMs: 1, bufferGatherMs: 0 }],
    ["BUFFER_FLUSH_MS", "15", { bufferFlushMs: 15, bufferGatherMs: 7 }],
    ["BUFFER_GATHER_MS", "0", { bufferGatherMs: 0 }],
    ["BUFFER_GATHER_MS", "50", { bufferGatherMs: 50 }],
  ];
  for (const [variable, value, changed] of cases) {
    await t.step(`${variable}=${JSON.stringify(value)}`, () => {
      assert.deepEqual(
        parseConfig({ [variable]: value }),
        { ...DEFAULTS, ...changed },
      );
    });
  }

  await t.step("all settings at once", () => {
    assert.deepEqual(
      parseConfig({
        HOST: "::1",
        PORT: "1234",
        REUSE_PORT: "1",
        STORE: "redis",
        REDIS_URL: "redis://10.0.0.5:6379",
        REDIS_TIMEOUT_MS: "300",
        KV_PATH: "./other.kv",
        WINDOW_MS: "500",
        KV_PARTITIONS: "8",
        KV_MAX_WINDOW_IDS: "20000",
        REPORT_GRACE_MS: "50",
        RETENTION_WINDOWS: "5",
        MAX_URLS_PER_WINDOW: "7",
        WEBHOOK_TIMEOUT_MS: "300",
        WEBHOOK_ATTEMPTS: "2",
        WEBHOOK_CONCURRENCY: "8",
        ACK_MODE: "buffered",
        BUFFER_MAX_IDS: "10",
        BUFFER_FLUSH_MS: "5",
        BUFFER_GATHER_MS: "2",
        LOG_LEVEL: "error",
      }),
      {
        ...DEFAULTS,
        host: "::1",
        port: 1234,
        reusePort: true,
        store: "redis",
        redisUrls: ["redis://10.0.0.5:6379"],
        redisTimeoutMs: 300,
        kvPath: "./other.kv",
        windowMs: 500,
        kvPartitions: 8,
        kvMaxWindowIds: 20_000,
        reportGraceMs: 50,
        retentionWindows: 5,
        maxUrlsPerWindow: 7,
        webhookTimeoutMs: 300,
        webhookAttempts: 2,
        webhookConcurrency: 8,
        ackMode: "buffered",
        bufferMaxIds: 10,
        bufferFlushMs: 5,
        bufferGatherMs: 2,
        logLevel: "error",
      },
    );
  });
});

Deno.test("parseConfig() takes a Redis Cluster's seed nodes, and waits for a replica there by default", () => {
  assert.deepEqual(
    parseConfig({
      REDIS_CLUSTER: "true",
      REDIS_URL: "redis://:pw@10.0.0.1:7000, redis://10.0.0.2:7000",
    }),
    {
      ...DEFAULTS,
      redisCluster: true,
      redisUrls: ["redis://:pw@10.0.0.1:7000", "redis://10.0.0.2:7000"],
      redisWaitReplicas: 1,
    },
  );
  assert.equal(
    parseConfig({ REDIS_CLUSTER: "true", REDIS_WAIT_REPLICAS: "0" })
      .redisWaitReplicas,
    0,
  );
});

Deno.test("parseConfig() gives a remote Deno KV 16 partitions by default, a file 1, and KV_PARTITIONS wherever it is set", () => {
  const remote = "https://api.deno.com/v2/databases/x/connect";
  assert.equal(parseConfig({ KV_PATH: remote }).kvPartitions, 16);
  assert.equal(parseConfig({ DENO_DEPLOYMENT_ID: "d1" }).kvPartitions, 16);
  assert.equal(parseConfig({ KV_PATH: "/data/verve.kv" }).kvPartitions, 1);
  assert.equal(parseConfig({}).kvPartitions, 1);
  assert.equal(
    parseConfig({ KV_PATH: remote, KV_PARTITIONS: "2" }).kvPartitions,
    2,
  );
  assert.equal(
    parseConfig({ DENO_DEPLOYMENT_ID: "d1", KV_PARTITIONS: "1" }).kvPartitions,
    1,
  );
});

Deno.test("parseConfig() gives a remote Deno KV up to 4 commits in flight per partition by default, a file 1, and KV_COMMIT_DEPTH wherever it is set", () => {
  const remote = "https://api.deno.com/v2/databases/x/connect";
  assert.equal(parseConfig({ KV_PATH: remote }).kvCommitDepth, 4);
  assert.equal(parseConfig({ DENO_DEPLOYMENT_ID: "d1" }).kvCommitDepth, 4);
  assert.equal(parseConfig({ KV_PATH: "/data/verve.kv" }).kvCommitDepth, 1);
  assert.equal(parseConfig({}).kvCommitDepth, 1);
  assert.equal(
    parseConfig({ KV_PATH: "/data/verve.kv", KV_COMMIT_DEPTH: "3" })
      .kvCommitDepth,
    3,
  );
  assert.equal(
    parseConfig({ DENO_DEPLOYMENT_ID: "d1", KV_COMMIT_DEPTH: "1" })
      .kvCommitDepth,
    1,
  );
});

Deno.test("parseConfig() gives a remote Deno KV a connection per commit in flight by default, a file one always, and KV_CONNECTIONS on a remote one", () => {
  const remote = "https://api.deno.com/v2/databases/x/connect";
  // 16 partitions, up to 4 commits in flight each.
  assert.equal(parseConfig({ KV_PATH: remote }).kvConnections, 64);
  assert.equal(parseConfig({ DENO_DEPLOYMENT_ID: "d1" }).kvConnections, 64);
  assert.equal(
    parseConfig({ KV_PATH: remote, KV_PARTITIONS: "3", KV_COMMIT_DEPTH: "3" })
      .kvConnections,
    9,
  );
  // At least the 4 commits and reads a store runs at once.
  assert.equal(
    parseConfig({ KV_PATH: remote, KV_PARTITIONS: "1", KV_COMMIT_DEPTH: "1" })
      .kvConnections,
    4,
  );
  assert.equal(
    parseConfig({ KV_PATH: remote, KV_CONNECTIONS: "256" }).kvConnections,
    256,
  );
  assert.equal(parseConfig({}).kvConnections, 1);
  assert.equal(
    parseConfig({ KV_PATH: "/data/verve.kv", KV_CONNECTIONS: "8" })
      .kvConnections,
    1,
  );
});

Deno.test("parseConfig() turns OpenTelemetry on with OTEL_DENO or on Deno Deploy, where a shutdown has 4 s by default", () => {
  assert.equal(parseConfig({ OTEL_DENO: "true" }).openTelemetry, true);
  assert.equal(parseConfig({ OTEL_DENO: "1" }).openTelemetry, true);
  assert.equal(parseConfig({ OTEL_DENO: "false" }).openTelemetry, false);
  assert.equal(parseConfig({}).openTelemetry, false);
  assert.equal(parseConfig({ DENO_DEPLOYMENT_ID: "d1" }).openTelemetry, true);
  assert.equal(parseConfig({}).shutdownTimeoutMs, 30_000);
  assert.equal(
    parseConfig({ DENO_DEPLOYMENT_ID: "d1" }).shutdownTimeoutMs,
    4000,
  );
  assert.equal(
    parseConfig({ DENO_DEPLOYMENT_ID: "d1", SHUTDOWN_TIMEOUT_MS: "2000" })
      .shutdownTimeoutMs,
    2000,
  );
});

Deno.test("parseConfig() reports windows no instance saw as 0 on Deno Deploy only", () => {
  assert.equal(parseConfig({}).reportEmptyBeforeStart, false);
  assert.equal(
    parseConfig({ DENO_DEPLOYMENT_ID: "d1" }).reportEmptyBeforeStart,
    true,
  );
});

Deno.test("parseConfig() treats empty and undefined values as unset", async (t) => {
  await t.step("empty strings", () => {
    assert.deepEqual(
      parseConfig({
        HOST: "",
        PORT: "",
        REUSE_PORT: "",
        STORE: "",
        REDIS_URL: "",
        REDIS_TIMEOUT_MS: "",
        KV_PATH: "",
        WINDOW_MS: "",
        KV_PARTITIONS: "",
        REPORT_GRACE_MS: "",
        RETENTION_WINDOWS: "",
        MAX_URLS_PER_WINDOW: "",
        WEBHOOK_TIMEOUT_MS: "",
        WEBHOOK_ATTEMPTS: "",
        WEBHOOK_CONCURRENCY: "",
        ACK_MODE: "",
        BUFFER_MAX_IDS: "",
        BUFFER_FLUSH_MS: "",
        LOG_LEVEL: "",
      }),
      DEFAULTS,
    );
  });

  await t.step("undefined values", () => {
    assert.deepEqual(
      parseConfig({ PORT: undefined, LOG_LEVEL: undefined }),
      DEFAULTS,
    );
  });

  await t.step("unknown variables are ignored", () => {
    assert.deepEqual(
      parseConfig({ PATH: "/usr/bin", port: "abc", HOME: "" }),
      DEFAULTS,
    );
  });

  await t.step("an empty DENO_DEPLOYMENT_ID keeps the default KV path", () => {
    assert.equal(
      parseConfig({ DENO_DEPLOYMENT_ID: "" }).kvPath,
      DEFAULT_KV_PATH,
    );
  });
});

Deno.test("parseConfig() leaves kvPath undefined on Deno Deploy", async (t) => {
  await t.step("without KV_PATH", () => {
    assert.deepEqual(
      parseConfig({ DENO_DEPLOYMENT_ID: "abc123" }),
      {
        ...DEFAULTS,
        kvPath: undefined,
        kvPartitions: 16,
        kvCommitDepth: 4,
        kvConnections: 64,
        shutdownTimeoutMs: 4000,
        openTelemetry: true,
        reportEmptyBeforeStart: true,
      },
    );
  });

  await t.step("with an empty KV_PATH", () => {
    assert.equal(
      parseConfig({ DENO_DEPLOYMENT_ID: "abc123", KV_PATH: "" }).kvPath,
      undefined,
    );
  });

  await t.step("an explicit KV_PATH still wins", () => {
    assert.equal(
      parseConfig({ DENO_DEPLOYMENT_ID: "abc123", KV_PATH: ":memory:" })
        .kvPath,
      ":memory:",
    );
  });
});

Deno.test("parseConfig() throws ConfigError naming the bad variable", async (t) => {
  const cases: [string, string][] = [
    ["ACK_MODE", "sometimes"],
    ["REUSE_PORT", "yes"],
    ["STORE", "postgres"],
    ["REDIS_URL", "http://cache.example.com"],
    ["REDIS_URL", "not a url"],
    ["REDIS_URL", "redis://a:6379,redis://b:6379"],
    ["REDIS_URL", "redis://a:6379,"],
    ["REDIS_WAIT_REPLICAS", "6"],
    ["REDIS_CLUSTER", "yes"],
    ["KV_TIMEOUT_MS", "99"],
    ["KV_TIMEOUT_MS", "60001"],
    ["REDIS_TIMEOUT_MS", "5"],
    ["REPORT_SINKS", "log,carrier-pigeon"],
    ["WEBHOOK_ALLOW", "http://x"],
    ["WEBHOOK_ALLOWLIST_ONLY", "maybe"],
    ["REPORT_SINKS", "log,log"],
    ["KAFKA_TOPIC", "no spaces"],
    ["KAFKA_REST_URL", "ftp://proxy"],
    ["KAFKA_REST_API", "v4"],
    ["KAFKA_BROKERS", "kafka-1"],
    ["KAFKA_SASL_MECHANISM", "gssapi"],
    ["BUFFER_MAX_IDS", "0"],
    ["BUFFER_FLUSH_MS", "0"],
    ["BUFFER_GATHER_MS", "-1"],
    ["BUFFER_GATHER_MS", "5001"],
    ["BUFFER_GATHER_MS", "2.5"],
    ["PORT", "abc"],
    ["PORT", "70000"],
    ["PORT", "65536"],
    ["PORT", "-1"],
    ["PORT", "80.0"],
    ["PORT", "0x10"],
    ["PORT", "1e3"],
    ["PORT", " "],
    ["HOST", "   "],
    ["KV_PATH", " "],
    ["WINDOW_MS", "5"],
    ["WINDOW_MS", "99"],
    ["WINDOW_MS", "3600001"],
    ["KV_PARTITIONS", "0"],
    ["KV_PARTITIONS", "257"],
    ["KV_COMMIT_DEPTH", "0"],
    ["KV_COMMIT_DEPTH", "17"],
    ["KV_CONNECTIONS", "0"],
    ["KV_CONNECTIONS", "257"],
    ["REDIS_SHARDS", "0"],
    ["REDIS_SHARDS", "257"],
    ["REDIS_SHARDS", "some"],
    ["REDIS_SHARDS", "1.5"],
    ["KV_MAX_WINDOW_IDS", "999"],
    ["SHUTDOWN_TIMEOUT_MS", "999"],
    ["SHUTDOWN_TIMEOUT_MS", "600001"],
    ["REPORT_GRACE_MS", "30001"],
    ["RETENTION_WINDOWS", "1"],
    ["MAX_URLS_PER_WINDOW", "100001"],
    ["WEBHOOK_TIMEOUT_MS", "99"],
    ["WEBHOOK_ATTEMPTS", "0"],
    ["WEBHOOK_ATTEMPTS", "1.5"],
    ["WEBHOOK_ATTEMPTS", "11"],
    ["WEBHOOK_CONCURRENCY", "0"],
    ["WEBHOOK_CONCURRENCY", "1001"],
    ["LOG_LEVEL", "loud"],
    ["LOG_LEVEL", "warn"],
  ];
  for (const [variable, value] of cases) {
    await t.step(`${variable}=${JSON.stringify(value)}`, () => {
      let caught: unknown;
      try {
        parseConfig({ [variable]: value });
      } catch (error) {
        caught = error;
      }
      assert.ok(caught instanceof ConfigError, `no ConfigError: ${caught}`);
      assert.equal(caught.name, "ConfigError");
      assert.equal(caught.variable, variable);
      assert.ok(
        caught.message.startsWith(`Cannot parse ${variable}: `),
        caught.message,
      );
      assert.ok(
        caught.message.endsWith(` (got ${JSON.stringify(value)})`),
        caught.message,
      );
    });
  }

  await t.step("the message says what is wrong", () => {
    assert.throws(
      () => parseConfig({ PORT: "abc" }),
      {
        name: "ConfigError",
        variable: "PORT",
        message: 'Cannot parse PORT: must be a whole number (got "abc")',
      },
    );
  });

  await t.step("valid variables do not hide a bad one", () => {
    assert.throws(
      () => parseConfig({ PORT: "8080", KV_PARTITIONS: "0", HOST: "h" }),
      { name: "ConfigError", variable: "KV_PARTITIONS" },
    );
  });
});

Deno.test("parseConfig() wants buffered ids committed before their window is reported", () => {
  assert.throws(
    () =>
      parseConfig({
        ACK_MODE: "buffered",
        BUFFER_FLUSH_MS: "500",
        REPORT_GRACE_MS: "500",
      }),
    (error) =>
      error instanceof ConfigError && error.variable === "BUFFER_FLUSH_MS" &&
      /REPORT_GRACE_MS/.test(error.message),
  );
  // In durable mode the buffer settings are unused.
  assert.equal(
    parseConfig({ BUFFER_FLUSH_MS: "500", REPORT_GRACE_MS: "500" })
      .bufferFlushMs,
    500,
  );
});

Deno.test("parseConfig() wants buffered ids to gather for at most half of BUFFER_FLUSH_MS", () => {
  assert.throws(
    () =>
      parseConfig({
        ACK_MODE: "buffered",
        BUFFER_FLUSH_MS: "100",
        BUFFER_GATHER_MS: "51",
      }),
    (error) =>
      error instanceof ConfigError && error.variable === "BUFFER_GATHER_MS" &&
      /half of BUFFER_FLUSH_MS \(100\)/.test(error.message),
  );
  const config = parseConfig({
    ACK_MODE: "buffered",
    BUFFER_FLUSH_MS: "100",
    BUFFER_GATHER_MS: "50",
  });
  assert.equal(config.bufferGatherMs, 50);
  // Unset, it is the default or half of BUFFER_FLUSH_MS, whichever is less.
  assert.equal(
    parseConfig({ ACK_MODE: "buffered", BUFFER_FLUSH_MS: "4" }).bufferGatherMs,
    2,
  );
  // In durable mode it is unused.
  assert.equal(
    parseConfig({ BUFFER_FLUSH_MS: "100", BUFFER_GATHER_MS: "60" })
      .bufferGatherMs,
    60,
  );
});

Deno.test("parseConfig() reads the Kafka sinks' settings and wants what each sink needs", async (t) => {
  await t.step("a REST proxy with API v3 and a bearer token", () => {
    const config = parseConfig({
      REPORT_SINKS: "log,kafka-rest",
      KAFKA_REST_URL: "https://pkc-1.confluent.cloud/kafka",
      KAFKA_REST_API: "V3",
      KAFKA_REST_CLUSTER_ID: "lkc-123",
      KAFKA_REST_TOKEN: "t0ken",
      KAFKA_REST_TIMEOUT_MS: "2000",
    });
    assert.deepEqual(config.reportSinks, ["log", "kafka-rest"]);
    assert.deepEqual(config.kafkaRest, {
      url: "https://pkc-1.confluent.cloud/kafka",
      api: "v3",
      clusterId: "lkc-123",
      username: undefined,
      password: undefined,
      token: "t0ken",
      timeoutMs: 2000,
    });
  });

  await t.step("brokers with SASL and TLS", () => {
    const config = parseConfig({
      REPORT_SINKS: "kafka",
      KAFKA_BROKERS: "k1:9092, k2:9093",
      KAFKA_SSL: "true",
      KAFKA_SASL_MECHANISM: "SCRAM-SHA-512",
      KAFKA_SASL_USERNAME: "svc",
      KAFKA_SASL_PASSWORD: "pw",
    });
    assert.deepEqual(config.kafka.brokers, ["k1:9092", "k2:9093"]);
    assert.equal(config.kafka.ssl, true);
    assert.equal(config.kafka.saslMechanism, "scram-sha-512");
  });

  const missing: [Record<string, string>, string][] = [
    [{ REPORT_SINKS: "kafka-rest" }, "KAFKA_REST_URL"],
    [{
      REPORT_SINKS: "kafka-rest",
      KAFKA_REST_URL: "http://proxy:8082",
      KAFKA_REST_API: "v3",
    }, "KAFKA_REST_CLUSTER_ID"],
    [{ REPORT_SINKS: "kafka" }, "KAFKA_BROKERS"],
    [{ KAFKA_SASL_MECHANISM: "plain" }, "KAFKA_SASL_USERNAME"],
  ];
  for (const [env, variable] of missing) {
    await t.step(`${variable} is required`, () => {
      assert.throws(
        () => parseConfig(env),
        (error) => error instanceof ConfigError && error.variable === variable,
      );
    });
  }
});

Deno.test("parseConfig() wants both TLS files or neither", () => {
  assert.deepEqual(
    parseConfig({
      TLS_CERT_FILE: "/etc/tls/cert.pem",
      TLS_KEY_FILE: "/etc/tls/key.pem",
    }).tls,
    { certFile: "/etc/tls/cert.pem", keyFile: "/etc/tls/key.pem" },
  );
  assert.throws(
    () => parseConfig({ TLS_CERT_FILE: "/etc/tls/cert.pem" }),
    (error) =>
      error instanceof ConfigError && error.variable === "TLS_KEY_FILE",
  );
  assert.throws(
    () => parseConfig({ TLS_KEY_FILE: "/etc/tls/key.pem" }),
    (error) =>
      error instanceof ConfigError && error.variable === "TLS_CERT_FILE",
  );
});

Deno.test("settingDocs() shows the default the schema gives an unset variable, or the rule where it depends on others", () => {
  const shown = new Map(
    settingDocs().map(({ name, shownDefault }) => [name, shownDefault]),
  );
  assert.equal(shown.get("PORT"), "`8000`");
  assert.equal(shown.get("REUSE_PORT"), "`false`");
  assert.equal(shown.get("REPORT_SINKS"), "`log,webhook`");
  assert.equal(shown.get("REDIS_URL"), "`redis://127.0.0.1:6379`");
  assert.equal(shown.get("TLS_CERT_FILE"), "-");
  assert.equal(shown.get("WEBHOOK_ALLOW"), "-");
  assert.equal(
    shown.get("REDIS_WAIT_REPLICAS"),
    "`1` with `REDIS_CLUSTER`, else `0`",
  );
  // Every shown default of a plain setting is what parseConfig({}) gives.
  assert.equal(shown.get("WINDOW_MS"), `\`${DEFAULTS.windowMs}\``);
  assert.equal(shown.get("CLOCK_CHECK_MS"), `\`${DEFAULTS.clockCheckMs}\``);
});
