/**
 * The clock skew scenarios: three processes on one port and one store, one
 * with its clock 5 s behind and one 5 s ahead (libfaketime), each process
 * in the ack mode the scenario gives it, under
 * duplicate-heavy traffic across several window ends. Every answer must be
 * `ok`; each window is reported once; per window, the ids answered `ok`
 * that the answer's `verve-window` header names it for ≤ its count ≤ those
 * plus the ids without an answer; and the two skewed processes, and only
 * they, log that their clock is off.
 *
 * @module
 */
import { formatMinute } from "../../lib/minute.ts";
import { WINDOW_HEADER } from "../../lib/http/handler.ts";
import { tempKvPath } from "../helpers/kv.ts";
import { FAKETIME_AVAILABLE, shiftedClock } from "../helpers/faketime.ts";
import {
  answersNotOk,
  countFaults,
  reportedCount,
  sendTraffic,
} from "../helpers/load_client.ts";
import { REDIS_AVAILABLE, startRedis } from "../helpers/redis.ts";
import { freePort } from "../helpers/requirements.ts";
import { type Service, startService } from "../helpers/service.ts";
import { nextWindow } from "../helpers/windows.ts";
import { type ChaosRow, skipped } from "./row.ts";

/** Short windows, so that traffic crosses several window ends soon. */
const SKEW_WINDOW_MS = 4000;
/** Windows with traffic. */
const SKEW_WINDOWS = 3;
/** The clocks of the three processes, in ms from the real one. */
const SKEWS = [0, -5000, 5000];

type AckMode = "durable" | "buffered";

/** Whether a log line says the process's clock is off. */
const clockWarning = (line: { logger: string; level: string }) =>
  line.logger === "verve.clock" && line.level === "WARNING";

/** Runs one clock skew scenario on a KV file or on Redis. */
export async function runClockSkew(
  scenario: string,
  options: {
    store: "kv" | "redis";
    /** The ack mode of each process, in the order of {@link SKEWS}. */
    ackModes: readonly AckMode[];
  },
): Promise<ChaosRow> {
  const skip = !FAKETIME_AVAILABLE
    ? "faketime is not installed"
    : options.store === "redis" && !REDIS_AVAILABLE
    ? "redis-server is not installed"
    : undefined;
  if (skip !== undefined) return skipped(scenario, skip);
  await using file = await tempKvPath();
  await using redis = options.store === "redis"
    ? await startRedis()
    : undefined;
  const env = {
    ...(redis ? { STORE: "redis", REDIS_URL: redis.url } : {
      KV_PATH: file.path,
    }),
    PORT: String(freePort()),
    REUSE_PORT: "true",
    WINDOW_MS: String(SKEW_WINDOW_MS),
    REPORT_GRACE_MS: "2000",
    WINDOW_HEADER: "true",
  };
  const services: Service[] = [];
  const broken: string[] = [];
  try {
    for (const [i, skew] of SKEWS.entries()) {
      services.push(
        await startService({
          ...env,
          ACK_MODE: options.ackModes[i]!,
          ...shiftedClock(skew),
        }),
      );
    }
    // The skewed processes have compared their clocks with the fleet's.
    await Promise.all(
      services.slice(1).map((service) =>
        service.waitForLog(clockWarning, 10_000)
      ),
    );
    const first = await nextWindow(SKEW_WINDOW_MS, 100);
    const traffic = await sendTraffic(
      services[0]!.url,
      first + SKEW_WINDOWS * SKEW_WINDOW_MS,
      { pool: 10_000, windowMs: SKEW_WINDOW_MS, windowHeader: WINDOW_HEADER },
    );
    const notOk = answersNotOk(traffic);
    if (notOk > 0) {
      broken.push(
        `${notOk} answers not ok: ${
          JSON.stringify(Object.fromEntries(traffic.other))
        }`,
      );
    }
    let reported = 0;
    let reports = 0;
    // The windows the answers named: those of the traffic, maybe one more.
    const windows = [...traffic.windows.keys()].sort((a, b) => a - b);
    for (const minute of windows) {
      const { acked, touched } = traffic.windows.get(minute)!;
      try {
        const count = await reportedCount(
          services,
          minute,
          4 * SKEW_WINDOW_MS,
        );
        reported += count;
        reports++;
        const faults = countFaults(count, acked, touched);
        broken.push(
          ...faults.map((fault) => `${formatMinute(minute)}: ${fault}`),
        );
      } catch (error) {
        broken.push(`${formatMinute(minute)}: ${(error as Error).message}`);
      }
    }
    for (const [i, service] of services.entries()) {
      const warned = service.lines.some(clockWarning);
      if (warned !== (SKEWS[i] !== 0)) {
        broken.push(
          `the process ${SKEWS[i]} ms off ${
            warned ? "warned" : "did not warn"
          }`,
        );
      }
    }
    return {
      scenario,
      requests: traffic.requests,
      ok: traffic.requests - notOk,
      notOk,
      ackedDistinct: traffic.acked.size,
      reported,
      reports,
      posts: "",
      verdict: broken.length === 0 ? "ok" : broken.join("; "),
    };
  } finally {
    for (const service of services) await service.stop("SIGKILL");
  }
}
