/**
 * Three service processes behind one port (`REUSE_PORT`, the kernel spreads
 * connections as a load balancer would) on one KV file, under duplicate-heavy
 * traffic for seconds inside one window: every answer is `ok` and the report
 * equals the distinct ids acknowledged, in both ack modes; with one process
 * killed and restarted mid-traffic, the report lies between the ids
 * acknowledged and those plus the ids whose requests got no answer.
 */
import assert from "node:assert/strict";
import { formatMinute } from "../lib/minute.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { freePort } from "./helpers/requirements.ts";
import { type Service, startService } from "./helpers/service.ts";
import { nextWindow } from "./helpers/windows.ts";

const WINDOW_MS = 14_000;
const TRAFFIC_MS = 10_500;
const CONNECTIONS = 16;
/** Ids drawn from a pool this size repeat often, on every instance. */
const POOL = 20_000;

interface Traffic {
  /** Ids answered `ok`. */
  acked: Set<string>;
  /** Ids of requests that got no answer (their process was killed). */
  unanswered: Set<string>;
  /** Answers other than `200 ok`, as `status body`, with their count. */
  other: Map<string, number>;
  requests: number;
}

/** Sends random ids of the pool over `CONNECTIONS` loops until `until`. */
async function sendTraffic(url: string, until: number): Promise<Traffic> {
  const traffic: Traffic = {
    acked: new Set(),
    unanswered: new Set(),
    other: new Map(),
    requests: 0,
  };
  const pool = Array.from(
    { length: POOL },
    () => String(Math.floor(Math.random() * 2 ** 53) - 2 ** 52),
  );
  const loop = async () => {
    while (Date.now() < until) {
      const id = pool[Math.floor(Math.random() * POOL)]!;
      traffic.requests++;
      try {
        const response = await fetch(`${url}/api/verve/accept?id=${id}`, {
          signal: AbortSignal.timeout(10_000),
        });
        const answer = `${response.status} ${await response.text()}`;
        if (answer === "200 ok") traffic.acked.add(id);
        else traffic.other.set(answer, (traffic.other.get(answer) ?? 0) + 1);
      } catch {
        traffic.unanswered.add(id);
      }
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, loop));
  return traffic;
}

/** The count reported for `minute`, checking that one instance reported it. */
async function reportedCount(
  services: Service[],
  minute: number,
): Promise<number> {
  const iso = formatMinute(minute);
  const first = await Promise.any(
    services.map((service) =>
      service.waitForLog(
        (line) =>
          line.logger === "verve.report" && line.properties.minute === iso,
        WINDOW_MS + 15_000,
      )
    ),
  );
  // Every instance ticks at the same moment; give the others time to lose.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const reports = services.flatMap((service) =>
    service.lines.filter((line) =>
      line.logger === "verve.report" && line.properties.minute === iso
    )
  );
  assert.equal(reports.length, 1, "one report for the window");
  return first.properties.unique_ids as number;
}

/** The settings of three processes sharing one port and the KV file `path`. */
function fleetEnv(
  path: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    KV_PATH: path,
    PORT: String(freePort()),
    REUSE_PORT: "true",
    WINDOW_MS: String(WINDOW_MS),
    REPORT_GRACE_MS: "500",
    ...extra,
  };
}

async function startFleet(env: Record<string, string>): Promise<Service[]> {
  const services: Service[] = [];
  for (let i = 0; i < 3; i++) services.push(await startService(env));
  return services;
}

Deno.test("three processes behind one port on one KV file answer every duplicate-heavy request ok and report the distinct ids acknowledged", async (t) => {
  for (const ackMode of ["durable", "buffered"]) {
    await t.step(`with ACK_MODE=${ackMode}`, async () => {
      await using file = await tempKvPath();
      const env = fleetEnv(file.path, { ACK_MODE: ackMode });
      const services = await startFleet(env);
      try {
        const minute = await nextWindow(WINDOW_MS, 100);
        const traffic = await sendTraffic(
          services[0]!.url,
          minute + TRAFFIC_MS,
        );
        assert.deepEqual(Object.fromEntries(traffic.other), {});
        assert.equal(traffic.unanswered.size, 0);
        assert.ok(traffic.requests > 5000, `${traffic.requests} requests`);
        // Most ids reached several instances: far fewer ids than requests.
        assert.ok(traffic.acked.size < traffic.requests / 2);
        assert.equal(
          await reportedCount(services, minute),
          traffic.acked.size,
        );
        for (const service of services) {
          assert.equal(await service.stop("SIGTERM"), 0);
        }
      } finally {
        for (const service of services) await service.stop("SIGKILL");
      }
    });
  }
});

Deno.test("with one of three processes killed and restarted mid-traffic, the report counts every id acknowledged, and no id unasked", async () => {
  await using file = await tempKvPath();
  const env = fleetEnv(file.path);
  const services = await startFleet(env);
  try {
    const minute = await nextWindow(WINDOW_MS, 100);
    const sending = sendTraffic(services[0]!.url, minute + TRAFFIC_MS);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    assert.notEqual(await services[1]!.stop("SIGKILL"), 0);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    services.push(await startService(env));
    const traffic = await sending;
    // Every answer that came is ok; only the killed process left some out.
    assert.deepEqual(Object.fromEntries(traffic.other), {});
    const reported = await reportedCount(services, minute);
    const unansweredOnly = [...traffic.unanswered].filter((id) =>
      !traffic.acked.has(id)
    );
    assert.ok(
      reported >= traffic.acked.size,
      `reported ${reported} < acknowledged ${traffic.acked.size}`,
    );
    assert.ok(
      reported <= traffic.acked.size + unansweredOnly.length,
      `reported ${reported} > acknowledged ${traffic.acked.size} + unanswered ${unansweredOnly.length}`,
    );
    for (const service of [services[0]!, services[2]!, services[3]!]) {
      assert.equal(await service.stop("SIGTERM"), 0);
    }
  } finally {
    for (const service of services) await service.stop("SIGKILL");
  }
});
