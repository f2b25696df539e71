/**
 * Several service processes sharing one store, driven by a known workload
 * spread round-robin across them, for the multi-instance tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatMinute } from "../../lib/minute.ts";
import { LOOPBACK_ALLOW, startReceiver } from "./receiver.ts";
import { type LogLine, type Service, startService } from "./service.ts";
import { withinOneWindow } from "./windows.ts";

/** The window length the fleet tests run with. */
export const FLEET_WINDOW_MS = 2000;

/**
 * Starts `instances` services with `env` (which names the shared store),
 * sends every id of a known set to several of them, with bad requests mixed
 * in and one webhook URL given to each instance, and asserts that the window
 * is reported once, with the exact count, to the log and to the webhook; the
 * following, empty window too.
 */
export async function checkFleet(
  env: Record<string, string>,
  instances = 3,
): Promise<void> {
  await using receiver = startReceiver();
  const services: Service[] = [];
  try {
    for (let i = 0; i < instances; i++) {
      services.push(
        await startService({
          WINDOW_MS: String(FLEET_WINDOW_MS),
          REPORT_GRACE_MS: "300",
          ...LOOPBACK_ALLOW,
          ...env,
        }),
      );
    }
    const distinct = 150;
    const bad = ["id=abc", "id=", "id=1&id=2", `id=${"9".repeat(30)}`];
    const queries: string[] = [];
    for (let copy = 0; copy < 3; copy++) {
      for (let id = 0; id < distinct; id++) queries.push(`id=${id * 7919}`);
      queries.push(...bad);
    }
    const hook = encodeURIComponent(`${receiver.url}/fleet`);
    for (let i = 0; i < instances; i++) queries.push(`id=0&url=${hook}`);

    const window = await withinOneWindow(FLEET_WINDOW_MS, async () => {
      for (let i = 0; i < queries.length; i += 40) {
        const answers = await Promise.all(
          queries.slice(i, i + 40).map(async (query, j) => {
            const service = services[(i + j) % services.length]!;
            const response = await fetch(
              `${service.url}/api/verve/accept?${query}`,
            );
            return {
              query,
              status: response.status,
              body: await response.text(),
            };
          }),
        );
        for (const { query, status, body } of answers) {
          assert.deepEqual(
            { status, body },
            bad.includes(query)
              ? { status: 400, body: "failed" }
              : { status: 200, body: "ok" },
            query,
          );
        }
      }
    });

    const reports = await reportsOf(services, window);
    assert.equal(reports.length, 1, "one report for the window");
    assert.equal(reports[0]!.properties.unique_ids, distinct);
    await receiver.waitFor(1);
    const empty = await reportsOf(services, window + FLEET_WINDOW_MS);
    assert.equal(empty.length, 1, "one report for the empty window");
    assert.equal(empty[0]!.properties.unique_ids, 0);
    // A late duplicate delivery would have arrived by now.
    assert.equal(receiver.received.length, 1);
    assert.deepEqual(
      JSON.parse(receiver.received[0]!.body),
      reports[0]!.properties,
    );
    for (const service of services) {
      assert.equal(await service.stop("SIGTERM"), 0);
    }
  } finally {
    for (const service of services) await service.stop("SIGKILL");
  }
}

/**
 * Waits until some instance logged the report of `minute`, then a little
 * longer, and returns every instance's report lines for it.
 */
async function reportsOf(services: Service[], minute: number) {
  const iso = formatMinute(minute);
  const isReport = (line: LogLine) =>
    line.logger === "verve.report" && line.properties.minute === iso;
  const deadline = Date.now() + 15_000;
  while (!services.some((s) => s.lines.some(isReport))) {
    assert.ok(Date.now() < deadline, `no report of ${iso}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // Every instance ticks at the same moment; give the others time to lose.
  await new Promise((resolve) => setTimeout(resolve, 500));
  return services.flatMap((s) => s.lines.filter(isReport));
}
