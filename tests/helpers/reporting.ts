/**
 * Fixtures of the reporter's and the sinks' tests: one-minute windows from
 * 2026-01-01T12:00Z, a KV store, and a reporter whose clock the test moves.
 *
 * @module
 */
import { createReporter } from "../../lib/report/reporter.ts";
import type { MinuteReport, Sink } from "../../lib/report/sink.ts";
import { createLogSink } from "../../lib/report/sinks/log.ts";
import { createKvStore } from "../../lib/store/kv/store_kv.ts";
import type { Store } from "../../lib/store/store.ts";
import type { CapturedLogs } from "./logs.ts";

export const WINDOW = 60_000;
export const M0 = Date.UTC(2026, 0, 1, 12, 0);
export const M1 = M0 + WINDOW;
export const M2 = M1 + WINDOW;
export const M3 = M2 + WINDOW;
export const GRACE = 2000;

/** A KV store on `kv` with the reporter tests' retention. */
export function kvStore(kv: Deno.Kv): Store {
  return createKvStore(kv, { retentionMs: 3_600_000, retryBaseMs: 1 });
}

/** A reporter with a log sink and a clock the test moves. */
export function reporterFor(
  store: Store,
  logs: CapturedLogs,
  options: { sinks?: Sink[]; instanceId?: string; leaseMs?: number } = {},
) {
  const clock = { now: M0 };
  const reporter = createReporter({
    store,
    logger: logs.logger("reporter"),
    sinks: options.sinks ?? [createLogSink(logs.logger("report"))],
    clock: () => clock.now,
    windowMs: WINDOW,
    graceMs: GRACE,
    ...(options.instanceId ? { instanceId: options.instanceId } : {}),
    ...(options.leaseMs ? { leaseMs: options.leaseMs } : {}),
  });
  return { reporter, clock };
}

/** Reports as `[minute, unique_ids]` pairs, to compare. */
export function summary(reports: MinuteReport[]) {
  return reports.map((r) => [r.minute, r.unique_ids]);
}
