/**
 * A load client for end-to-end tests against real service processes: it
 * sends ids over several keep-alive connections and records every answer,
 * and finds the one report of a window in the services' logs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatMinute } from "../../lib/minute.ts";
import type { Service } from "./service.ts";

/** What a load run sent and what came back. */
export interface Traffic {
  /** Ids answered `ok`. */
  acked: Set<string>;
  /** Ids of requests that got no answer (their process was gone). */
  unanswered: Set<string>;
  /** Ids answered other than `200 ok`. */
  refused: Set<string>;
  /** Answers other than `200 ok`, as `status body`, with their count. */
  other: Map<string, number>;
  requests: number;
  /** When the last answer other than `200 ok` came, or 0. */
  lastNotOkAt: number;
  /**
   * With {@link TrafficOptions.windowMs}, per window start: the ids answered
   * `ok` whose request was sent and answered inside the window, and every
   * id whose request was sent or answered in it (the only ids the window
   * may count).
   */
  windows: Map<number, { acked: Set<string>; touched: Set<string> }>;
}

/** Options of {@link sendTraffic}. */
export interface TrafficOptions {
  /** Requests in flight at once, each on a loop of its own. Default: 16. */
  connections?: number;
  /**
   * Random 53-bit ids to draw from; a small pool makes most ids repeat, on
   * every instance. Default: 20 000.
   */
  pool?: number;
  /** The window length, to attribute requests to windows. */
  windowMs?: number;
  /**
   * With `windowMs`: attribute each id answered `ok` to the window this
   * answer header names (the window the service counted it in), not to the
   * client's clock; an id without an answer may count in the window it was
   * sent in or the next.
   */
  windowHeader?: string;
  /** More query parameters for the `n`th request, e.g. `&url=…`. */
  query?: (n: number) => string;
}

/** How many requests got an answer other than `200 ok`, or none. */
export function answersNotOk(traffic: Traffic): number {
  let count = traffic.unanswered.size;
  for (const times of traffic.other.values()) count += times;
  return count;
}

/**
 * Sends ids drawn at random from a pool to `url`'s accept endpoint until
 * `until` (epoch ms), recording every answer.
 */
export async function sendTraffic(
  url: string,
  until: number,
  options: TrafficOptions = {},
): Promise<Traffic> {
  const traffic: Traffic = {
    acked: new Set(),
    unanswered: new Set(),
    refused: new Set(),
    other: new Map(),
    requests: 0,
    lastNotOkAt: 0,
    windows: new Map(),
  };
  const pool = Array.from(
    { length: options.pool ?? 20_000 },
    () => String(Math.floor(Math.random() * 2 ** 53) - 2 ** 52),
  );
  const { windowMs, windowHeader, query = () => "" } = options;
  const windowOf = (at: number) => {
    const start = at - at % windowMs!;
    let window = traffic.windows.get(start);
    if (!window) {
      window = { acked: new Set(), touched: new Set() };
      traffic.windows.set(start, window);
    }
    return window;
  };
  const loop = async () => {
    while (Date.now() < until) {
      const id = pool[Math.floor(Math.random() * pool.length)]!;
      const n = traffic.requests++;
      const sentAt = Date.now();
      let ok = false;
      let countedIn: number | undefined;
      try {
        const response = await fetch(
          `${url}/api/verve/accept?id=${id}${query(n)}`,
          { signal: AbortSignal.timeout(10_000) },
        );
        const answer = `${response.status} ${await response.text()}`;
        ok = answer === "200 ok";
        const named = windowHeader && response.headers.get(windowHeader);
        if (named) countedIn = Date.parse(named);
        if (ok) traffic.acked.add(id);
        else {
          traffic.refused.add(id);
          traffic.other.set(answer, (traffic.other.get(answer) ?? 0) + 1);
          traffic.lastNotOkAt = Date.now();
        }
      } catch {
        traffic.unanswered.add(id);
        traffic.lastNotOkAt = Date.now();
      }
      if (windowMs === undefined) continue;
      if (windowHeader !== undefined) {
        if (ok && countedIn !== undefined) {
          const counted = windowOf(countedIn);
          counted.acked.add(id);
          counted.touched.add(id);
        } else {
          windowOf(sentAt).touched.add(id);
          windowOf(sentAt + windowMs).touched.add(id);
        }
        continue;
      }
      const sent = windowOf(sentAt);
      const answered = windowOf(Date.now());
      sent.touched.add(id);
      answered.touched.add(id);
      if (ok && sent === answered) sent.acked.add(id);
    }
  };
  await Promise.all(Array.from({ length: options.connections ?? 16 }, loop));
  return traffic;
}

/**
 * Waits for the report of `minute` and returns its count, asserting that
 * exactly one of `services` reported it.
 */
export async function reportedCount(
  services: Service[],
  minute: number,
  timeoutMs: number,
): Promise<number> {
  const iso = formatMinute(minute);
  const isReport = (
    line: { logger: string; properties: { minute?: unknown } },
  ) => line.logger === "verve.report" && line.properties.minute === iso;
  const first = await Promise.any(
    services.map((service) => service.waitForLog(isReport, timeoutMs)),
  );
  // Every instance ticks at the same moment; give the others time to lose.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const reports = services.flatMap((service) => service.lines.filter(isReport));
  assert.equal(reports.length, 1, "one report for the window");
  return first.properties.unique_ids as number;
}

/**
 * Checks a window's reported count against what the load client saw: the
 * ids answered `ok` ≤ the count ≤ those plus the ids that may have been
 * recorded without an `ok` (no answer, or an answer that cannot prove the
 * store did not write, such as a request crossing a window boundary).
 *
 * @returns The invariants that broke, as text; none when all hold.
 */
export function countFaults(
  reported: number,
  acked: Set<string>,
  uncertain: Iterable<string>,
): string[] {
  const uncertainOnly = new Set([...uncertain].filter((id) => !acked.has(id)));
  if (reported < acked.size) {
    return [`reported ${reported} < acked ${acked.size}`];
  }
  if (reported > acked.size + uncertainOnly.size) {
    return [
      `reported ${reported} > acked ${acked.size} + uncertain ${uncertainOnly.size}`,
    ];
  }
  return [];
}
