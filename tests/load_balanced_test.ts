/**
 * Three service processes behind one port (`REUSE_PORT`, the kernel spreads
 * connections as a load balancer would) on one KV file, under duplicate-heavy
 * traffic for seconds inside one window: every answer is `ok` and the report
 * equals the distinct ids acknowledged, in both ack modes; with one process
 * killed and restarted mid-traffic, the report lies between the ids
 * acknowledged and those plus the ids whose requests got no answer.
 */
import assert from "node:assert/strict";
import { tempKvPath } from "./helpers/kv.ts";
import {
  checkCount,
  reportedCount,
  sendTraffic,
} from "./helpers/load_client.ts";
import { freePort } from "./helpers/requirements.ts";
import { type Service, startService } from "./helpers/service.ts";
import { nextWindow } from "./helpers/windows.ts";

const WINDOW_MS = 14_000;
const TRAFFIC_MS = 10_500;
/** How long after the traffic a report may take to appear. */
const REPORT_WAIT_MS = WINDOW_MS + 15_000;

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
          await reportedCount(services, minute, REPORT_WAIT_MS),
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
    checkCount(traffic, await reportedCount(services, minute, REPORT_WAIT_MS));
    for (const service of [services[0]!, services[2]!, services[3]!]) {
      assert.equal(await service.stop("SIGTERM"), 0);
    }
  } finally {
    for (const service of services) await service.stop("SIGKILL");
  }
});
