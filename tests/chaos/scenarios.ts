/**
 * The chaos scenarios: real service processes of `main.ts` on loopback,
 * three of them on one port (`REUSE_PORT`) and one store (a KV file, or a
 * real redis-server), under duplicate-heavy traffic inside one window, with
 * a fault injected mid-way. Each scenario checks, for its window: distinct
 * ids answered `ok` ≤ the reported count ≤ those plus the ids whose request
 * got no answer (and, where the store itself fails, the ids answered `503`:
 * a write the store made may have lost its answer); exactly one report in
 * the logs of all processes; exactly one POST per webhook URL, carrying the
 * reported count; and what the scenario adds (every answer `ok`, a clean
 * exit on a doubled SIGTERM, `503` while the store is down and only `ok`
 * once it is back). Scenario 5 runs over several windows with its sinks
 * down for two of them instead.
 *
 * @module
 */
import { redisShardKeys, redisWindowKeys } from "../../lib/store/keys.ts";
import { formatMinute } from "../../lib/minute.ts";
import {
  LOOPBACK_ALLOW,
  type Received,
  startReceiver,
} from "../helpers/receiver.ts";
import { tempKvPath } from "../helpers/kv.ts";
import { KAFKA_MOCK_AVAILABLE, startKafkaMock } from "../helpers/kafka_mock.ts";
import { startFakeKafkaRestProxy } from "../helpers/fake_kafka_rest_proxy.ts";
import {
  answersNotOk,
  countFaults,
  reportedCount,
  sendTraffic,
  type Traffic,
} from "../helpers/load_client.ts";
import {
  REDIS_AVAILABLE,
  type RedisServer,
  startRedis,
} from "../helpers/redis.ts";
import { freePort } from "../helpers/requirements.ts";
import {
  REDIS_CLI_AVAILABLE,
  type RedisCluster,
  startRedisCluster,
} from "../helpers/redis_cluster.ts";
import { type Service, startService } from "../helpers/service.ts";
import { nextWindow } from "../helpers/windows.ts";
import { runClockSkew } from "./clock_skew.ts";
import { type ChaosRow, type Scenario, skipped } from "./row.ts";

export type { ChaosRow, Scenario } from "./row.ts";
import { mountSmallDisk, type SmallDisk } from "./small_disk.ts";

const WINDOW_MS = 14_000;
const TRAFFIC_MS = 10_500;
/** When the fault strikes, after the traffic starts. */
const FAULT_AT_MS = 4000;
/** Webhook URLs given in the window, one request each before the traffic. */
const HOOKS = 3;
/**
 * Ids are drawn from a pool this size: most repeat, across processes, and
 * yet the window's count stays well below the pool, so a miscount shows.
 */
const POOL = 50_000;

/** How long redis-server stays down in scenario 4. */
const REDIS_DOWN_MS = 1500;
/** How soon after the store is back every answer must be `ok` again. */
const RECOVERY_MS = 3000;

/** What a fault acts on. */
interface FleetContext {
  /** The processes; a fault may add one. */
  services: Service[];
  /** Their settings. */
  env: Record<string, string>;
  /** Where a fault notes an invariant it saw break. */
  broken: string[];
  redis?: RedisServer;
  cluster?: RedisCluster;
  disk?: SmallDisk;
  /** When a fault that took the store away gave it back. */
  storeBackAt?: number;
  /** The window the traffic falls in, once it started. */
  minute?: number;
}

/** What a fault does to the fleet. */
type Fault = (fleet: FleetContext) => Promise<void>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Kills the second process with SIGKILL, then starts a new one. */
const killAndRestart: Fault = async ({ services, env }) => {
  await services[1]!.stop("SIGKILL");
  await sleep(1000);
  services.push(await startService(env));
};

/**
 * Stops the second process as a process-group SIGTERM does, the signal
 * arriving twice, then starts a new one; the stop must end with exit 0.
 */
const groupTermAndRestart: Fault = async ({ services, env, broken }) => {
  services[1]!.signal("SIGTERM");
  services[1]!.signal("SIGTERM");
  const code = await services[1]!.stop("SIGTERM");
  if (code !== 0) broken.push(`stopped process exited ${code}`);
  services.push(await startService(env));
};

/** Kills redis-server with SIGKILL, then starts it on its append-only file. */
const killRedisAndRestart: Fault = async (fleet) => {
  await fleet.redis!.stop();
  await sleep(REDIS_DOWN_MS);
  await fleet.redis!.start();
  fleet.storeBackAt = Date.now();
};

/**
 * Kills with SIGKILL the Redis Cluster master that holds the window's own keys
 * (its report record, shard count and URLs);
 * the store is back once its replica serves its slots.
 */
const killClusterMaster: Fault = async (fleet) => {
  const master = await fleet.cluster!.masterOf(
    redisWindowKeys(fleet.minute!).report,
  );
  await fleet.cluster!.nodes.find((node) => node.port === master)!.kill();
  await fleet.cluster!.healthy();
  fleet.storeBackAt = Date.now();
};

/**
 * Kills with SIGKILL, as the window's report begins, the master of one of
 * the window's shards (one per master: `REDIS_SHARDS=auto`) other than the
 * master of the window's own keys, so the claim succeeds and closing the
 * shards fails; the report must come once its replica took over.
 */
const killShardMasterAtReport: Fault = async (fleet) => {
  const cluster = fleet.cluster!;
  const minute = fleet.minute!;
  const own = await cluster.masterOf(redisWindowKeys(minute).report);
  let target: number | undefined;
  const masters = (await cluster.masters()).length;
  for (const shard of redisShardKeys(minute, masters)) {
    const master = await cluster.masterOf(shard.ids);
    if (master !== own) target = master;
  }
  if (target === undefined) {
    fleet.broken.push("no shard on a master of its own");
    return;
  }
  // The report starts REPORT_GRACE_MS (500) after the window ends.
  await sleep(minute + WINDOW_MS + 400 - Date.now());
  await cluster.nodes.find((node) => node.port === target)!.kill();
  await cluster.healthy();
  fleet.storeBackAt = Date.now();
};

/**
 * Fills the KV file's disk until a write fails (SQLite still finds room in
 * its write-ahead log for a while), at most 3 s, then frees the space.
 */
const fillDiskAndFree: Fault = async (fleet) => {
  await fleet.disk!.fill();
  const full = Date.now();
  while (
    Date.now() - full < 3000 &&
    !fleet.services.some((service) =>
      service.lines.some((line) =>
        line.message.startsWith("Request not recorded")
      )
    )
  ) await sleep(50);
  await sleep(500);
  await fleet.disk!.free();
  fleet.storeBackAt = Date.now();
};

/** What a fleet scenario runs on and expects. */
interface FleetOptions {
  /**
   * The store: a KV file (default), a KV file on a small disk, Redis, or a
   * Redis Cluster of three masters and three replicas.
   */
  store?: "kv" | "small-disk" | "redis" | "redis-cluster";
  /** More settings of every process. */
  env?: Record<string, string>;
  fault?: Fault;
  /** When the fault strikes, after the traffic starts. Default: `FAULT_AT_MS`. */
  faultAtMs?: number;
  /** No answer may be other than `200 ok`. */
  everyAnswerOk?: boolean;
  /** A first attempt at the window's report must have failed, logged. */
  reportRetried?: boolean;
  /**
   * The fault takes the store away: answers other than `ok` must be
   * `503 failed`, there must be some, every answer from `RECOVERY_MS` after
   * the store is back must be `ok`, and ids answered `503` may have been
   * recorded.
   */
  storeDown?: boolean;
}

/**
 * Runs one scenario: three processes, webhook URLs, duplicate-heavy traffic
 * for `TRAFFIC_MS` from the start of a window, the fault after
 * `FAULT_AT_MS`, then the window's report and webhook POSTs.
 */
async function runFleet(
  scenario: string,
  options: FleetOptions,
): Promise<ChaosRow> {
  const store = options.store ?? "kv";
  if (store.startsWith("redis") && !REDIS_AVAILABLE) {
    return skipped(scenario, "redis-server is not installed");
  }
  if (store === "redis-cluster" && !REDIS_CLI_AVAILABLE) {
    return skipped(scenario, "redis-cli is not installed");
  }
  let disk: SmallDisk | undefined;
  if (store === "small-disk") {
    const mounted = await mountSmallDisk(16 * 2 ** 20);
    if (typeof mounted === "string") return skipped(scenario, mounted);
    disk = mounted;
  }
  await using _disk = disk;
  await using file = await tempKvPath();
  await using redis = store === "redis"
    ? await startRedis({ appendFsync: "always" })
    : undefined;
  await using cluster = store === "redis-cluster"
    ? await startRedisCluster()
    : undefined;
  await using receiver = startReceiver();
  const env = {
    ...(redis
      ? { STORE: "redis", REDIS_URL: redis.url }
      : cluster
      ? { STORE: "redis", REDIS_CLUSTER: "true", REDIS_URL: cluster.url }
      : { KV_PATH: disk ? `${disk.path}/verve.sqlite` : file.path }),
    PORT: String(freePort()),
    REUSE_PORT: "true",
    WINDOW_MS: String(WINDOW_MS),
    REPORT_GRACE_MS: "500",
    ...LOOPBACK_ALLOW,
    ...options.env,
  };
  const fleet: FleetContext = {
    services: [],
    env,
    broken: [],
    ...(redis ? { redis } : {}),
    ...(cluster ? { cluster } : {}),
    ...(disk ? { disk } : {}),
  };
  const { services, broken } = fleet;
  try {
    for (let i = 0; i < 3; i++) services.push(await startService(env));
    const url = services[0]!.url;
    const minute = await nextWindow(WINDOW_MS, 100);
    fleet.minute = minute;
    /** The ids of the webhook requests answered `ok`. */
    const hooksAcked: string[] = [];
    for (let hook = 0; hook < HOOKS; hook++) {
      const target = encodeURIComponent(`${receiver.url}/hook-${hook}`);
      const response = await fetch(
        `${url}/api/verve/accept?id=${hook}&url=${target}`,
      );
      const answer = `${response.status} ${await response.text()}`;
      if (answer === "200 ok") hooksAcked.push(String(hook));
      else broken.push(`webhook URL answered ${answer}`);
    }
    const end = minute + TRAFFIC_MS;
    const sending = sendTraffic(url, end, { pool: POOL });
    if (options.fault) {
      await sleep(options.faultAtMs ?? FAULT_AT_MS);
      await options.fault(fleet);
    }
    const traffic = await sending;
    // The webhook requests' ids count too.
    for (const id of hooksAcked) traffic.acked.add(id);

    let reported = -1;
    let reports = 0;
    try {
      reported = await reportedCount(services, minute, WINDOW_MS + 15_000);
      reports = 1;
    } catch (error) {
      broken.push((error as Error).message);
    }
    if (
      options.reportRetried &&
      !services.some((service) =>
        service.lines.some((line) => line.message.startsWith("Cannot report"))
      )
    ) {
      broken.push("no report attempt failed");
    }
    const notOk = answersNotOk(traffic);
    const faults = answerFaults(traffic, options, end, fleet.storeBackAt);
    if (faults.length > 0) faults.push(notRecordedReasons(services));
    broken.push(...faults);
    // Ids that may be counted though not acked: no answer, or, where the
    // store failed, a 503 whose write the store may have made.
    const uncertain = new Set(traffic.unanswered);
    if (options.storeDown) {
      for (const id of traffic.refused) uncertain.add(id);
    }
    broken.push(...countFaults(reported, traffic.acked, uncertain));

    // Every webhook URL gets the report once.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      receiver.waitFor(HOOKS),
      new Promise((resolve) => timer = setTimeout(resolve, 10_000)),
    ]);
    clearTimeout(timer);
    await sleep(1000);
    const posts = Array.from(
      { length: HOOKS },
      (_, hook) =>
        receiver.received.filter((request) => request.path === `/hook-${hook}`),
    );
    for (const [hook, requests] of posts.entries()) {
      if (requests.length !== 1) {
        broken.push(`hook-${hook} got ${requests.length} POSTs`);
      }
      for (const request of requests) {
        const count = JSON.parse(request.body).unique_ids;
        if (count !== reported) {
          broken.push(`hook-${hook} got count ${count}`);
        }
      }
    }

    return {
      scenario,
      requests: traffic.requests + HOOKS,
      ok: traffic.requests + HOOKS - notOk,
      notOk,
      ackedDistinct: traffic.acked.size,
      reported,
      reports,
      posts: posts.map((requests) => requests.length).join(","),
      verdict: broken.length === 0 ? "ok" : broken.join("; "),
    };
  } finally {
    for (const service of services) await service.stop("SIGKILL");
  }
}

/** What is wrong with the answers a fleet scenario got. */
function answerFaults(
  traffic: Traffic,
  options: FleetOptions,
  end: number,
  storeBackAt = end,
): string[] {
  const faults: string[] = [];
  const notOk = answersNotOk(traffic);
  if (options.everyAnswerOk && notOk > 0) {
    faults.push(`${notOk} answers not ok`);
  }
  const unexpected = [...traffic.other.keys()].filter((answer) =>
    !options.storeDown || answer !== "503 failed"
  );
  if (unexpected.length > 0) {
    faults.push(
      `answers: ${JSON.stringify(Object.fromEntries(traffic.other))}`,
    );
  }
  if (options.storeDown) {
    if (!traffic.other.has("503 failed")) {
      faults.push("no 503 while the store was down");
    }
    const recovered = storeBackAt + RECOVERY_MS;
    if (recovered > end - 1000) {
      faults.push("the store came back too late to see the service recover");
    }
    if (traffic.lastNotOkAt > recovered) {
      faults.push(
        `an answer other than ok ${
          traffic.lastNotOkAt - storeBackAt
        } ms after the store was back`,
      );
    }
  }
  return faults;
}

/** Why the services answered requests `failed`, as they logged it. */
function notRecordedReasons(services: Service[]): string {
  const reasons = new Set(
    services.flatMap((service) => service.lines).filter((line) =>
      line.message.startsWith("Request not recorded")
    ).map((line) => String(line.properties.error)),
  );
  return `logged: ${JSON.stringify([...reasons].slice(0, 3))}`;
}

/** Scenario 5's window: short, so that two windows of outage pass soon. */
const OUTAGE_WINDOW_MS = 3000;
/** Scenario 5's windows with traffic. */
const OUTAGE_WINDOWS = 5;
const TOPIC = "verve-reports";

/**
 * Scenario 5: three processes on one KV file, traffic for five windows
 * with the webhook URLs given throughout; the webhook receiver answers 503
 * for the reports of the first two windows, the Kafka REST proxy double
 * refuses connections for the two after. Every window must be reported
 * once, and delivered once per URL and once to Kafka, in order of windows,
 * with the reported count.
 */
async function runSinkOutage(scenario: string): Promise<ChaosRow> {
  if (!KAFKA_MOCK_AVAILABLE) {
    return skipped(scenario, "librdkafka is not installed");
  }
  using kafka = startKafkaMock();
  kafka.createTopic(TOPIC, 1);
  await using proxy = await startFakeKafkaRestProxy({
    brokers: kafka.brokers,
    topics: [TOPIC],
  });
  let receiverDown = false;
  /** The POSTs the receiver took (answered 204). */
  const taken: Received[] = [];
  await using receiver = startReceiver((request) => {
    if (receiverDown) return 503;
    taken.push(request);
    return 204;
  });
  await using file = await tempKvPath();
  const env = {
    KV_PATH: file.path,
    PORT: String(freePort()),
    REUSE_PORT: "true",
    WINDOW_MS: String(OUTAGE_WINDOW_MS),
    REPORT_GRACE_MS: "1000",
    REPORT_SINKS: "log,webhook,kafka-rest",
    KAFKA_REST_URL: proxy.url,
    KAFKA_TOPIC: TOPIC,
    WEBHOOK_ATTEMPTS: "1",
    SINK_RETRY_BASE_MS: "300",
    SINK_RETRY_MAX_MS: "1000",
    ...LOOPBACK_ALLOW,
  };
  const services: Service[] = [];
  const broken: string[] = [];
  const timers: ReturnType<typeof setTimeout>[] = [];
  try {
    for (let i = 0; i < 3; i++) services.push(await startService(env));
    const first = await nextWindow(OUTAGE_WINDOW_MS, 100);
    const at = (offset: number, action: () => unknown) =>
      timers.push(setTimeout(action, first + offset - Date.now()));
    // The receiver is down for the reports of windows 0 and 1, the proxy
    // for those of windows 1 and 2.
    const w = OUTAGE_WINDOW_MS;
    at(w, () => receiverDown = true);
    at(3 * w, () => receiverDown = false);
    at(w + w / 2, () => proxy.stop());
    at(3 * w + w / 2, () => proxy.start());
    const hooks = Array.from(
      { length: HOOKS },
      (_, hook) => encodeURIComponent(`${receiver.url}/hook-${hook}`),
    );
    const traffic = await sendTraffic(
      services[0]!.url,
      first + OUTAGE_WINDOWS * w,
      {
        // Smaller than the fleet scenarios' pool: windows are shorter.
        pool: 10_000,
        windowMs: w,
        // One request in 20 gives a webhook URL, the URLs in turn.
        query: (n) => n % 20 === 0 ? `&url=${hooks[(n / 20) % HOOKS]}` : "",
      },
    );
    const windows = Array.from(
      { length: OUTAGE_WINDOWS },
      (_, i) => first + i * w,
    );

    // Each window is reported once, within its bounds.
    const counts = new Map<string, number>();
    for (const minute of windows) {
      try {
        const count = await reportedCount(services, minute, 4 * w);
        counts.set(formatMinute(minute), count);
        const { acked, touched } = traffic.windows.get(minute)!;
        for (const fault of countFaults(count, acked, touched)) {
          broken.push(`${formatMinute(minute)}: ${fault}`);
        }
      } catch (error) {
        broken.push(`${formatMinute(minute)}: ${(error as Error).message}`);
      }
    }

    // Every window reaches every URL and Kafka once, in order, once both
    // are back (the retries back off to 1 s at most).
    const deadline = Date.now() + 15_000;
    const postsTo = (hook: number) =>
      taken.filter((request) => request.path === `/hook-${hook}`)
        .map((request) => JSON.parse(request.body));
    const allPosted = () =>
      Array.from({ length: HOOKS }, (_, hook) => hook).every((hook) =>
        windows.every((minute) =>
          postsTo(hook).some((report) => report.minute === formatMinute(minute))
        )
      );
    while (!allPosted() && Date.now() < deadline) await sleep(200);
    await sleep(2000);
    for (let hook = 0; hook < HOOKS; hook++) {
      broken.push(
        ...deliveryFaults(`hook-${hook}`, postsTo(hook), counts, first),
      );
    }
    const messages = await kafka.consume(
      TOPIC,
      counts.size,
      Math.max(1000, deadline - Date.now()),
    );
    broken.push(
      ...deliveryFaults(
        "kafka",
        messages.map((message) => JSON.parse(message.value)),
        counts,
        first,
      ),
    );

    const notOk = answersNotOk(traffic);
    if (notOk > 0) {
      broken.push(
        `${notOk} answers not ok: ${
          JSON.stringify(Object.fromEntries(traffic.other))
        }`,
        notRecordedReasons(services),
      );
    }
    const sum = (sizes: number[]) => sizes.reduce((a, b) => a + b, 0);
    return {
      scenario,
      requests: traffic.requests,
      ok: traffic.requests - notOk,
      notOk,
      ackedDistinct: sum(
        windows.map((minute) => traffic.windows.get(minute)!.acked.size),
      ),
      reported: sum([...counts.values()]),
      reports: counts.size,
      posts: Array.from(
        { length: HOOKS },
        (_, hook) =>
          postsTo(hook).filter((report) => counts.has(report.minute)).length,
      ).join(","),
      verdict: broken.length === 0 ? "ok" : broken.join("; "),
    };
  } finally {
    for (const timer of timers) clearTimeout(timer);
    for (const service of services) await service.stop("SIGKILL");
  }
}

/**
 * What is wrong with the reports one destination got: each of `counts`'
 * windows once, with its count, and all windows from `first` on in order.
 */
function deliveryFaults(
  destination: string,
  reports: { minute: string; unique_ids: number }[],
  counts: Map<string, number>,
  first: number,
): string[] {
  const faults: string[] = [];
  for (const [minute, count] of counts) {
    const got = reports.filter((report) => report.minute === minute);
    if (got.length !== 1) {
      faults.push(`${destination} got ${minute} ${got.length} times`);
    }
    if (got.some((report) => report.unique_ids !== count)) {
      faults.push(`${destination} got ${minute} with another count`);
    }
  }
  const order = reports.map((report) => report.minute).filter((minute) =>
    minute >= formatMinute(first)
  );
  if (order.some((minute, i) => i > 0 && minute <= order[i - 1]!)) {
    faults.push(`${destination} got windows out of order: ${order}`);
  }
  return faults;
}

/** The scenarios of the short form, which runs in the test suite. */
export const SHORT_FORM = ["1", "2", "3"];

/** A scenario run by {@link runFleet}. */
function fleet(name: string, options: FleetOptions): Scenario {
  return { name, run: () => runFleet(name, options) };
}

/** Every chaos scenario, numbered as in `docs/faults.md`. */
export const SCENARIOS: Scenario[] = [
  fleet("1. 3 processes, duplicates, durable", { everyAnswerOk: true }),
  fleet("1. 3 processes, duplicates, buffered", {
    env: { ACK_MODE: "buffered" },
    everyAnswerOk: true,
  }),
  fleet("2. one process killed (SIGKILL) and restarted", {
    fault: killAndRestart,
  }),
  fleet("3. process-group SIGTERM (twice) and restart, buffered", {
    env: { ACK_MODE: "buffered" },
    fault: groupTermAndRestart,
  }),
  fleet("4. redis-server killed (SIGKILL) and restarted, appendfsync always", {
    store: "redis",
    fault: killRedisAndRestart,
    storeDown: true,
  }),
  {
    name: "5. webhook receiver and Kafka REST proxy down two windows each",
    run: () =>
      runSinkOutage(
        "5. webhook receiver and Kafka REST proxy down two windows each",
      ),
  },
  fleet("6. the KV file's disk full, then space freed", {
    store: "small-disk",
    fault: fillDiskAndFree,
    storeDown: true,
  }),
  fleet("7. Redis Cluster, 3 masters and 3 replicas, duplicates", {
    store: "redis-cluster",
    everyAnswerOk: true,
  }),
  fleet("8. a Redis Cluster master killed (SIGKILL), its replica promoted", {
    store: "redis-cluster",
    fault: killClusterMaster,
    // Early: the failover takes the node timeout and an election.
    faultAtMs: 2000,
    storeDown: true,
  }),
  fleet("9. a shard's master killed (SIGKILL) as its window is reported", {
    store: "redis-cluster",
    // The fault waits for the window's end itself.
    faultAtMs: 0,
    fault: killShardMasterAtReport,
    everyAnswerOk: true,
    reportRetried: true,
  }),
  // Between the two, each skewed clock runs in both ack modes.
  {
    name: "10. clocks 5 s behind and 5 s ahead, KV file, both ack modes",
    run: () =>
      runClockSkew(
        "10. clocks 5 s behind and 5 s ahead, KV file, both ack modes",
        { store: "kv", ackModes: ["durable", "buffered", "buffered"] },
      ),
  },
  {
    name: "11. clocks 5 s behind and 5 s ahead, Redis, both ack modes",
    run: () =>
      runClockSkew(
        "11. clocks 5 s behind and 5 s ahead, Redis, both ack modes",
        { store: "redis", ackModes: ["buffered", "durable", "durable"] },
      ),
  },
];
