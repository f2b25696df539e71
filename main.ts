/**
 * The service's entry point and its only module with side effects: it reads
 * the settings, opens the store, serves HTTP and schedules the reports.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { metrics as otelMetrics } from "@opentelemetry/api";
import {
  type Config,
  ConfigError,
  isRemoteKv,
  parseConfig,
  type SinkName,
} from "./lib/config.ts";
import {
  createBufferedStore,
  createKvClockProbe,
  createKvStore,
  createRedisClockProbe,
  createRedisStore,
  FleetClock,
  idLifetime,
  openRedis,
  type RedisConnection,
  type Store,
  windowOfEarlierVersion,
  withTimeLimit,
} from "./lib/store/mod.ts";
import {
  collectStats,
  createHandler,
  STATUS_PAGE_HTML,
} from "./lib/http/mod.ts";
import {
  configureLogging,
  createServiceMetrics,
  errorMessage,
  LOG_CATEGORY,
} from "./lib/telemetry/mod.ts";
import { MINUTE_MS } from "./lib/minute.ts";
import {
  createAddressPolicy,
  createKafkaRestSink,
  createKafkaSink,
  createLogSink,
  createReporter,
  createWebhookPost,
  createWebhookSink,
  type Sink,
  startWindowTimer,
} from "./lib/report/mod.ts";
import { sleep } from "./lib/backoff.ts";

let config: Config;
try {
  config = parseConfig(Deno.env.toObject());
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(error.message);
  Deno.exit(2);
}

const closeLogging = await configureLogging(config.logLevel, {
  console: config.openTelemetry,
});
const logger = getLogger([LOG_CATEGORY, "service"]);

const metrics = createServiceMetrics();
// Deno's built-in OpenTelemetry exports what the API's meter records; on
// Deno Deploy nothing can scrape /metrics.
if (config.openTelemetry) {
  metrics.registry.exportTo(otelMetrics.getMeter("verve"));
}
const onCommit = (ids: number, seconds: number, ok: boolean) => {
  metrics.batchSize.observe(ids);
  metrics.commitSeconds.observe(seconds);
  if (!ok) metrics.storeErrors.inc();
};
const retentionMs = config.retentionWindows * config.windowMs;
// Buffered answers wait for no commit: under load, ids gather into fewer,
// larger ones, and one starts at once when half the buffer waits.
const gather = config.ackMode === "buffered" && config.bufferGatherMs > 0
  ? { ms: config.bufferGatherMs, ids: Math.ceil(config.bufferMaxIds / 2) }
  : undefined;
/** This instance's name in report claims and clock readings. */
const instanceId = crypto.randomUUID();
let fullWindow: number | undefined;
const redis = config.store === "redis"
  ? await openRedisOfThisVersion()
  : undefined;
const kvs = redis === undefined
  ? await openKv(config.kvPath, config.kvConnections)
  : undefined;
const kv = kvs?.[0];
const backend: Store = redis !== undefined
  ? createRedisStore(redis, {
    retentionMs,
    shards: config.redisShards,
    maxUrlsPerWindow: config.maxUrlsPerWindow,
    timeoutMs: config.redisTimeoutMs,
    waitReplicas: config.redisWaitReplicas,
    ...(gather ? { gather } : {}),
    onCommit,
  })
  : createKvStore(kv!, {
    retentionMs,
    ...idLifetime(config.windowMs, retentionMs),
    windowMs: config.windowMs,
    partitions: config.kvPartitions,
    depth: config.kvCommitDepth,
    ...(kvs!.length > 1 ? { connections: kvs! } : {}),
    maxIdsPerWindow: config.kvMaxWindowIds,
    maxUrlsPerWindow: config.maxUrlsPerWindow,
    commitAttempts: config.kvCommitAttempts,
    ...(gather ? { gather } : {}),
    onCommit,
    onConflict: () => metrics.storeConflicts.inc(),
    onFull: (minute) => {
      metrics.idsRefused.inc();
      // Once per window: every further new id of the window is refused too.
      if (fullWindow === minute) return;
      fullWindow = minute;
      logger.error(
        "Window {minute} holds {max} ids in memory (KV_MAX_WINDOW_IDS): new ids are answered 503 until the next window",
        { minute: new Date(minute).toISOString(), max: config.kvMaxWindowIds },
      );
    },
  });
const store = config.ackMode === "buffered"
  ? createBufferedStore(backend, {
    logger: getLogger([LOG_CATEGORY, "store"]),
    maxPending: config.bufferMaxIds,
    maxAgeMs: config.bufferFlushMs,
    windowMs: config.windowMs,
    onMoved: () => metrics.idsMoved.inc(),
  })
  : backend;

const shutdown = new AbortController();

/**
 * The clock windows and reports follow: the fleet's, read through the
 * store every `CLOCK_CHECK_MS`, or this instance's own.
 */
const fleetClock = config.clockCheckMs === 0 ? undefined : new FleetClock({
  probe: redis !== undefined
    ? createRedisClockProbe(redis, { timeoutMs: config.redisTimeoutMs })
    : createKvClockProbe(kv!, { instanceId }),
  logger: getLogger([LOG_CATEGORY, "clock"]),
  windowMs: config.windowMs,
  periodMs: config.clockCheckMs,
  warnMs: config.clockWarnMs,
  onReading: (reading) => metrics.clockSkew.set(reading.offsetMs / 1000),
});
const clock = fleetClock?.now ?? Date.now;
const clockRun = fleetClock?.run(shutdown.signal) ?? Promise.resolve();
// Reports wait for a first reading (a few checks at most): a clock that is
// ahead would report a window the others are still counting.
const clockReady = fleetClock?.ready(3 * config.clockCheckMs) ??
  Promise.resolve();
const startedAt = clock();

/**
 * Opens the Redis connection, and stops the service (exit code 2) when
 * instances of an earlier version, which keep a window's ids in one slot,
 * are writing to the same Redis: the two layouts cannot count one window
 * together. Where Redis cannot be reached yet, the service starts.
 */
async function openRedisOfThisVersion(): Promise<RedisConnection> {
  const redis = openRedis(
    config.redisUrls,
    getLogger([LOG_CATEGORY, "redis"]),
    {
      cluster: config.redisCluster,
      timeoutMs: config.redisTimeoutMs,
    },
  );
  let earlier: number | undefined;
  try {
    earlier = await windowOfEarlierVersion(redis, {
      now: Date.now(),
      windowMs: config.windowMs,
      timeoutMs: config.redisTimeoutMs,
    });
  } catch (error) {
    logger.warn(
      "Cannot check Redis for instances of an earlier version: {error}",
      {
        error: errorMessage(error),
      },
    );
  }
  if (earlier !== undefined) {
    logger.fatal(
      "Cannot start: instances of an earlier version are writing window {minute} to this Redis in the one-slot layout; stop them all, then start this version (docs/deployment.md#upgrading)",
      { minute: new Date(earlier).toISOString() },
    );
    await redis.close();
    await closeLogging();
    Deno.exit(2);
  }
  return redis;
}

/**
 * Opens Deno KV `connections` times (each handle its own connection),
 * making the default `./data` directory when needed. A remote database (a
 * KV Connect URL, or Deno Deploy's when `path` is undefined) gets a time
 * limit on every call; a local file's calls wait at most for its lock.
 */
async function openKv(
  path: string | undefined,
  connections: number,
): Promise<Deno.Kv[]> {
  if (path?.startsWith("./data/")) {
    await Deno.mkdir("./data", { recursive: true });
  }
  // Deno's KV Connect client reads its token from DENO_KV_ACCESS_TOKEN only.
  if (config.kvAccessToken !== undefined && isRemoteKv(path)) {
    Deno.env.set("DENO_KV_ACCESS_TOKEN", config.kvAccessToken);
  }
  let kvs: Deno.Kv[];
  try {
    kvs = await Promise.all(
      Array.from({ length: connections }, () => Deno.openKv(path)),
    );
  } catch (error) {
    // A remote database that refuses the token or cannot be reached.
    logger.error("Cannot open Deno KV {path}: {error}", {
      path: path ?? "(Deno Deploy's)",
      error: errorMessage(error),
    });
    await closeLogging();
    Deno.exit(1);
  }
  return isRemoteKv(path)
    ? kvs.map((kv) => withTimeLimit(kv, config.kvTimeoutMs))
    : kvs;
}

const addressPolicy = createAddressPolicy({
  allow: config.webhookAllow,
  allowlistOnly: config.webhookAllowlistOnly,
});

/** Builds the sink `REPORT_SINKS` names. */
function createSink(name: SinkName): Sink {
  switch (name) {
    case "log":
      return createLogSink(getLogger([LOG_CATEGORY, "report"]));
    case "webhook":
      return createWebhookSink({
        store,
        logger: getLogger([LOG_CATEGORY, "webhook"]),
        timeoutMs: config.webhookTimeoutMs,
        attempts: config.webhookAttempts,
        concurrency: config.webhookConcurrency,
        maxUrls: config.maxUrlsPerWindow,
        post: createWebhookPost(addressPolicy),
        metrics,
        signal: shutdown.signal,
      });
    case "kafka-rest": {
      const rest = config.kafkaRest;
      return createKafkaRestSink({
        baseUrl: rest.url!,
        api: rest.api,
        topic: config.kafkaTopic,
        timeoutMs: rest.timeoutMs,
        ...(rest.clusterId ? { clusterId: rest.clusterId } : {}),
        ...(rest.username !== undefined
          ? {
            basic: { username: rest.username, password: rest.password ?? "" },
          }
          : {}),
        ...(rest.token ? { token: rest.token } : {}),
      });
    }
    case "kafka": {
      const kafka = config.kafka;
      return createKafkaSink({
        brokers: kafka.brokers,
        topic: config.kafkaTopic,
        clientId: kafka.clientId,
        ssl: kafka.ssl,
        timeoutMs: kafka.timeoutMs,
        logger: getLogger([LOG_CATEGORY, "kafka"]),
        ...(kafka.saslMechanism
          ? {
            sasl: {
              mechanism: kafka.saslMechanism,
              username: kafka.saslUsername!,
              password: kafka.saslPassword!,
            },
          }
          : {}),
      });
    }
  }
}

const sinks = config.reportSinks.map(createSink);
const reporter = createReporter({
  store,
  sinks,
  logger: getLogger([LOG_CATEGORY, "reporter"]),
  clock,
  instanceId,
  windowMs: config.windowMs,
  graceMs: config.reportGraceMs,
  ...(config.reportEmptyBeforeStart ? {} : { startedAt }),
  delivery: {
    maxAgeMs: config.outboxMaxAgeMs,
    retryBaseMs: config.sinkRetryBaseMs,
    retryMaxMs: config.sinkRetryMaxMs,
  },
  metrics,
  signal: shutdown.signal,
});

const tls = config.tls && {
  cert: await readSetting("TLS_CERT_FILE", config.tls.certFile),
  key: await readSetting("TLS_KEY_FILE", config.tls.keyFile),
};

/** Reads a file a setting names; stops the service when it cannot. */
async function readSetting(variable: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    console.error(`Cannot read ${variable}: ${(error as Error).message}`);
    Deno.exit(2);
  }
}

/** The cron job's run under way, which a shutdown waits for. */
let cronRun: Promise<void> = Promise.resolve();
// Registered at the top level before the server starts, whatever the
// window: Deno Deploy finds cron jobs only there, at deployment time.
Deno.cron(
  "report-unique-ids",
  "* * * * *",
  { signal: shutdown.signal },
  () => {
    // Other windows than a minute are served by the window timer.
    if (config.windowMs !== MINUTE_MS) return;
    cronRun = (async () => {
      await clockReady;
      // The cron job fires by this instance's clock; the window is due by
      // the fleet's, at the window end nearest to now plus the grace.
      const now = clock();
      const end = Math.round(now / MINUTE_MS) * MINUTE_MS;
      const wait = Math.max(0, end + config.reportGraceMs - now);
      // A shutdown during the grace leaves the window to the next instance.
      if (!await sleep(wait, shutdown.signal)) return;
      await reporter.reportDue();
    })();
    return cronRun;
  },
);

const server = Deno.serve(
  {
    hostname: config.host,
    port: config.port,
    reusePort: config.reusePort,
    signal: shutdown.signal,
    ...tls,
    onListen({ hostname, port }) {
      logger.info("Listening on {scheme}://{hostname}:{port}/", {
        scheme: tls ? "https" : "http",
        hostname,
        port,
        store: config.store === "redis"
          ? config.redisUrls.map(redactUrl).join(",")
          : config.kvPath ?? "(default KV)",
        windowMs: config.windowMs,
        ackMode: config.ackMode,
      });
    },
  },
  createHandler({
    store,
    logger: getLogger([LOG_CATEGORY, "http"]),
    clock,
    windowMs: config.windowMs,
    windowHeader: config.windowHeader,
    metrics,
    stats: (minutes) =>
      collectStats(minutes, {
        store,
        sinks: sinks.map((sink) => sink.name),
        windowMs: config.windowMs,
      }),
    statusPage: STATUS_PAGE_HTML,
    ...(config.webhookRejectUndeliverable
      ? {
        refuseUrl: (url: string) => addressPolicy.checkUrl(url),
      }
      : {}),
  }),
);

// Catch up on windows left unreported while no instance was running.
const catchUp = clockReady.then(() => reporter.reportDue());

const timer: Promise<void> = config.windowMs === MINUTE_MS
  ? Promise.resolve()
  : clockReady.then(() =>
    startWindowTimer({
      windowMs: config.windowMs,
      delayMs: config.reportGraceMs,
      onTick: () => reporter.reportDue(),
      signal: shutdown.signal,
      clock,
    })
  );

let stopping = false;
let abandoned = false;

/**
 * Shuts down once: stops accepting, commits queued ids, finishes due
 * reports, closes sinks and the store, flushes the log and exits 0. A signal
 * that arrives meanwhile (a process-group signal reaches both `deno task`
 * and the service) is logged and ignored. A step that fails is logged and
 * the next still runs (the store is always closed), and the exit code is 1.
 * Past `SHUTDOWN_TIMEOUT_MS` what is left is logged at error level and the
 * service exits 1.
 */
async function stop(signal: string) {
  if (stopping) {
    logger.info("Received {signal} again; the shutdown under way goes on", {
      signal,
    });
    return;
  }
  stopping = true;
  logger.info("Received {signal}, shutting down", { signal });
  const deadline = setTimeout(abandon, config.shutdownTimeoutMs);
  const steps: [string, () => Promise<unknown>][] = [
    ["stop serving", async () => {
      shutdown.abort();
      await server.finished;
    }],
    ["finish the reports under way", async () => {
      await Promise.all([catchUp, timer, cronRun]);
      await reporter.idle();
    }],
    ["close the sinks", () => Promise.all(sinks.map((sink) => sink.close?.()))],
    ["withdraw the clock reading", () => clockRun],
    ["commit queued ids and close the store", () => store.close()],
  ];
  let code = 0;
  for (const [step, run] of steps) {
    try {
      await run();
    } catch (error) {
      logger.error("Shutdown could not {step}: {error}", {
        step,
        error: errorMessage(error),
      });
      code = 1;
    }
  }
  await Promise.race([closeLogging(), sleep(1000)]);
  clearTimeout(deadline);
  // Past the deadline, abandon() decides the exit.
  if (!abandoned) Deno.exit(code);
}

/** Ends a shutdown that outlived `SHUTDOWN_TIMEOUT_MS`, saying what it leaves. */
function abandon() {
  abandoned = true;
  logger.error(
    "Shutdown did not finish within {timeoutMs} ms; abandoning {queuedIds} ids not yet committed and the deliveries in progress, which stay in the outbox: {deliveries}",
    {
      timeoutMs: config.shutdownTimeoutMs,
      queuedIds: store.queuedIds(),
      deliveries: reporter.deliveriesInProgress(),
    },
  );
  // The log gets a moment to flush, not a chance to hang the exit.
  void Promise.race([closeLogging(), sleep(1000)]).finally(() => Deno.exit(1));
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, () => void stop(signal));
}

/** A URL without its password, for the log. */
function redactUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = "***";
  return parsed.href;
}
