/**
 * The chaos scenarios: real service processes of `main.ts` on loopback,
 * three of them on one port (`REUSE_PORT`) and one KV file, under
 * duplicate-heavy traffic inside one window, with a fault injected mid-way.
 * Each scenario checks, for its window: distinct ids answered `ok` ≤ the
 * reported count ≤ those plus the ids whose request got no answer; exactly
 * one report in the logs of all processes; exactly one POST per webhook URL,
 * carrying the reported count; and what the scenario adds (every answer
 * `ok`, a clean exit on a doubled SIGTERM).
 *
 * @module
 */
import { LOOPBACK_ALLOW, startReceiver } from "../helpers/receiver.ts";
import { tempKvPath } from "../helpers/kv.ts";
import { reportedCount, sendTraffic } from "../helpers/load_client.ts";
import { freePort } from "../helpers/requirements.ts";
import { type Service, startService } from "../helpers/service.ts";
import { nextWindow } from "../helpers/windows.ts";

/** One scenario's outcome: one row of the chaos table. */
export interface ChaosRow {
  scenario: string;
  requests: number;
  ok: number;
  notOk: number;
  ackedDistinct: number;
  reported: number;
  reports: number;
  /** POSTs per webhook URL, e.g. `1,1,1`. */
  posts: string;
  /** `ok`, or the invariants that broke. */
  verdict: string;
}

/** A scenario to run. */
export interface Scenario {
  name: string;
  run(): Promise<ChaosRow>;
}

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

/** What a fault does to the fleet: it may replace a service in the list. */
type Fault = (
  services: Service[],
  env: Record<string, string>,
  broken: string[],
) => Promise<void>;

/** Kills the second process with SIGKILL, then starts a new one. */
const killAndRestart: Fault = async (services, env) => {
  await services[1]!.stop("SIGKILL");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  services.push(await startService(env));
};

/**
 * Stops the second process as a process-group SIGTERM does, the signal
 * arriving twice, then starts a new one; the stop must end with exit 0.
 */
const groupTermAndRestart: Fault = async (services, env, broken) => {
  services[1]!.signal("SIGTERM");
  services[1]!.signal("SIGTERM");
  const code = await services[1]!.stop("SIGTERM");
  if (code !== 0) broken.push(`stopped process exited ${code}`);
  services.push(await startService(env));
};

/**
 * Runs one scenario: three processes, webhook URLs, duplicate-heavy traffic
 * for `TRAFFIC_MS` from the start of a window, the fault after
 * `FAULT_AT_MS`, then the window's report and webhook POSTs.
 */
async function runFleet(
  scenario: string,
  extraEnv: Record<string, string>,
  options: { fault?: Fault; everyAnswerOk: boolean },
): Promise<ChaosRow> {
  await using file = await tempKvPath();
  await using receiver = startReceiver();
  const env = {
    KV_PATH: file.path,
    PORT: String(freePort()),
    REUSE_PORT: "true",
    WINDOW_MS: String(WINDOW_MS),
    REPORT_GRACE_MS: "500",
    ...LOOPBACK_ALLOW,
    ...extraEnv,
  };
  const services: Service[] = [];
  const broken: string[] = [];
  try {
    for (let i = 0; i < 3; i++) services.push(await startService(env));
    const url = services[0]!.url;
    const minute = await nextWindow(WINDOW_MS, 100);
    for (let hook = 0; hook < HOOKS; hook++) {
      const target = encodeURIComponent(`${receiver.url}/hook-${hook}`);
      const response = await fetch(
        `${url}/api/verve/accept?id=${hook}&url=${target}`,
      );
      const answer = `${response.status} ${await response.text()}`;
      if (answer !== "200 ok") broken.push(`webhook URL answered ${answer}`);
    }
    const sending = sendTraffic(url, minute + TRAFFIC_MS, { pool: POOL });
    if (options.fault) {
      await new Promise((resolve) => setTimeout(resolve, FAULT_AT_MS));
      await options.fault(services, env, broken);
    }
    const traffic = await sending;
    // The webhook requests' ids count too.
    for (let hook = 0; hook < HOOKS; hook++) traffic.acked.add(String(hook));

    let reported = -1;
    let reports = 0;
    try {
      reported = await reportedCount(services, minute, WINDOW_MS + 15_000);
      reports = 1;
    } catch (error) {
      broken.push((error as Error).message);
    }
    const notOk = [...traffic.other.values()].reduce((a, b) => a + b, 0) +
      traffic.unanswered.size;
    if (options.everyAnswerOk && notOk > 0) {
      broken.push(`${notOk} answers not ok`);
    }
    if ([...traffic.other.keys()].length > 0) {
      broken.push(
        `answers: ${JSON.stringify(Object.fromEntries(traffic.other))}`,
      );
    }
    const unansweredOnly = [...traffic.unanswered].filter((id) =>
      !traffic.acked.has(id)
    ).length;
    if (reported < traffic.acked.size) {
      broken.push(`reported ${reported} < acked ${traffic.acked.size}`);
    }
    if (reported > traffic.acked.size + unansweredOnly) {
      broken.push(
        `reported ${reported} > acked ${traffic.acked.size} + unanswered ${unansweredOnly}`,
      );
    }

    // Every webhook URL gets the report once.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      receiver.waitFor(HOOKS),
      new Promise((resolve) => timer = setTimeout(resolve, 10_000)),
    ]);
    clearTimeout(timer);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const posts = Array.from({ length: HOOKS }, (_, hook) =>
      receiver.received.filter((request) =>
        request.path === `/hook-${hook}`
      ));
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

/** Scenarios 1–3, on a KV file: the short form runs in the test suite. */
export const SCENARIOS: Scenario[] = [
  {
    name: "1. 3 processes, duplicates, durable",
    run: () =>
      runFleet("1. 3 processes, duplicates, durable", {}, {
        everyAnswerOk: true,
      }),
  },
  {
    name: "1. 3 processes, duplicates, buffered",
    run: () =>
      runFleet("1. 3 processes, duplicates, buffered", {
        ACK_MODE: "buffered",
      }, { everyAnswerOk: true }),
  },
  {
    name: "2. one process killed (SIGKILL) and restarted",
    run: () =>
      runFleet("2. one process killed (SIGKILL) and restarted", {}, {
        fault: killAndRestart,
        everyAnswerOk: false,
      }),
  },
  {
    name: "3. process-group SIGTERM (twice) and restart, buffered",
    run: () =>
      runFleet("3. process-group SIGTERM (twice) and restart, buffered", {
        ACK_MODE: "buffered",
      }, { fault: groupTermAndRestart, everyAnswerOk: false }),
  },
];
