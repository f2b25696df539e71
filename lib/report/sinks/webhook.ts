/**
 * The webhook sink: POSTs each report as JSON to every URL recorded in its
 * window that the report is not yet done with. Each URL is tried a few times
 * with backoff on network errors, timeouts and retriable statuses (5xx, 408,
 * 429); each attempt is logged. A URL that answers 2xx, or refuses for good
 * (another 4xx, or the address policy), is marked done; when a URL still
 * fails after its attempts, the delivery fails, and the outbox tries again
 * on a later tick, for the URLs not yet done only. A URL gets the windows
 * in order: while an earlier window still owes it, a later one waits for
 * it, and for it alone. Deliveries run
 * concurrently under one global limit, so a slow or dead URL holds up
 * neither the other URLs nor the next window.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import { createAddressPolicy } from "./address_policy.ts";
import { backoffDelay, sleep } from "../../backoff.ts";
import {
  createWebhookPost,
  type WebhookPost,
  WebhookRefusedError,
} from "./webhook_post.ts";
import { errorMessage } from "../../telemetry/logging.ts";
import type { ServiceMetrics } from "../../telemetry/service_metrics.ts";
import type { MinuteReport, SendOutcome, Sink } from "../sink.ts";
import type { UrlStore } from "../../store/store.ts";

/** The part of the store the webhook sink uses: the URLs each report owes. */
export type WebhookUrls = Pick<UrlStore, "listOwedUrls" | "markUrlDone">;

/** Options of {@link createWebhookSink}. */
export interface WebhookSinkOptions {
  /**
   * The URLs of each window the report is not yet done with, and where the
   * sink marks a URL done (delivered, or refused for good).
   */
  store: WebhookUrls;
  /** Where delivery attempts are logged. */
  logger: Logger;
  /** The time limit of one attempt, in ms. Default: 5000. */
  timeoutMs?: number;
  /** Attempts per URL. Default: 3. */
  attempts?: number;
  /** POSTs in flight at once, over all reports. Default: 32. */
  concurrency?: number;
  /**
   * The most URLs a window may have (`MAX_URLS_PER_WINDOW`), for the
   * longest a delivery may take. Default: 1000.
   */
  maxUrls?: number;
  /** Base of the retry backoff, in ms. Default: 500. */
  retryBaseMs?: number;
  /**
   * How a POST is made. Default: {@link createWebhookPost} with the default
   * {@link createAddressPolicy} (no private, loopback, link-local … targets).
   */
  post?: WebhookPost;
  /** Aborts deliveries in progress (at shutdown). */
  signal?: AbortSignal;
  /** Metrics to count deliveries in. */
  metrics?: ServiceMetrics;
}

/**
 * The longest one delivery of a window's report may take, in ms: every URL
 * of a window tried `attempts` times, each up to its time limit and a
 * backoff of at most 5 s, `concurrency` at once.
 *
 * @example
 * ```ts
 * webhookDeliveryMs({ attempts: 3, timeoutMs: 5000, concurrency: 32, maxUrls: 1000 });
 * // 3 × 10 000 × 32 = 960 000
 * ```
 */
export function webhookDeliveryMs(
  options: Required<
    Pick<
      WebhookSinkOptions,
      "attempts" | "timeoutMs" | "concurrency" | "maxUrls"
    >
  >,
): number {
  const rounds = Math.ceil(options.maxUrls / options.concurrency);
  return options.attempts * (options.timeoutMs + 5000) * rounds;
}

/**
 * Creates the webhook sink.
 *
 * @example
 * ```ts
 * const sink = createWebhookSink({
 *   store,
 *   logger: getLogger(["verve", "webhook"]),
 * });
 * ```
 */
export function createWebhookSink(options: WebhookSinkOptions): Sink {
  const {
    store,
    logger,
    timeoutMs = 5000,
    attempts = 3,
    concurrency = 32,
    maxUrls = 1000,
    retryBaseMs = 500,
    post = createWebhookPost(createAddressPolicy()),
    signal,
    metrics,
  } = options;
  const slots = new Slots(concurrency);

  /**
   * POSTs to one URL, with retries.
   *
   * @returns Whether the report is done with the URL: delivered, or refused
   *   for good.
   */
  async function deliver(
    url: string,
    body: string,
    minute: string,
  ): Promise<boolean> {
    let attempt = 1;
    for (;; attempt++) {
      if (signal?.aborted) return false;
      let retriable: boolean;
      await slots.acquire();
      try {
        const status = await post(url, body, {
          timeoutMs,
          ...(signal ? { signal } : {}),
        });
        const statusClass = `${Math.floor(status / 100)}xx`;
        if (status >= 200 && status < 300) {
          metrics?.webhookDeliveries.inc(["delivered", statusClass]);
          logger.info("Webhook {url} answered {status} for {minute}", {
            url,
            status,
            minute,
            attempt,
          });
          return true;
        }
        retriable = status >= 500 || status === 408 || status === 429;
        metrics?.webhookDeliveries.inc(["failed", statusClass]);
        logger.warn("Webhook {url} answered {status} for {minute}", {
          url,
          status,
          minute,
          attempt,
          retriable,
        });
      } catch (error) {
        if (error instanceof WebhookRefusedError) {
          metrics?.webhookDeliveries.inc(["refused", "none"]);
          logger.error("Webhook {url} refused for {minute}: {reason}", {
            url,
            minute,
            reason: error.message,
          });
          return true;
        }
        retriable = true;
        metrics?.webhookDeliveries.inc(["failed", "none"]);
        logger.warn("Webhook {url} failed for {minute}: {error}", {
          url,
          minute,
          attempt,
          error: describe(error),
        });
      } finally {
        slots.release();
      }
      if (!retriable) {
        logger.error("Webhook {url} refused {minute} for good", {
          url,
          minute,
          attempt,
        });
        return true;
      }
      if (attempt >= attempts) break;
      await sleep(backoffDelay(attempt - 1, { baseMs: retryBaseMs }), signal);
    }
    logger.warn(
      "Webhook {url} failed on {minute} {attempt} times; the outbox tries it again later",
      { url, minute, attempt },
    );
    return false;
  }

  return {
    name: "webhook",
    ordersPerTarget: true,
    longestSendMs: webhookDeliveryMs({
      attempts,
      timeoutMs,
      concurrency,
      maxUrls,
    }),
    async send(
      report: MinuteReport,
      minute: number,
      earlier: number[] = [],
    ): Promise<SendOutcome> {
      // A store that cannot list the URLs now fails the delivery, which the
      // outbox retries on a later tick.
      const urls = await store.listOwedUrls(minute);
      // A URL still owed an earlier window gets that one first.
      const waiting = new Set<string>();
      for (const before of earlier) {
        for (const url of await store.listOwedUrls(before)) waiting.add(url);
      }
      const ready = urls.filter((url) => !waiting.has(url));
      const body = JSON.stringify(report);
      const done = await Promise.all(ready.map(async (url) => {
        if (!await deliver(url, body, report.minute)) return false;
        await store.markUrlDone(minute, url);
        return true;
      }));
      const failed = done.filter((isDone) => !isDone).length;
      const held = urls.length - ready.length;
      if (failed > 0) {
        throw new Error(
          `${failed + held} of ${urls.length} webhook URLs not delivered yet` +
            (held > 0 ? ` (${held} wait for an earlier window)` : ""),
        );
      }
      return held > 0 ? "waiting" : "delivered";
    },
  };
}

function describe(error: unknown): string {
  if (error instanceof Error && error.name === "TimeoutError") {
    return "timed out";
  }
  return errorMessage(error);
}

/** A counting semaphore: at most `size` holders at once, FIFO. */
class Slots {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    this.#free = size;
  }

  acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}
