/**
 * A real local HTTP server that receives webhook POSTs, for tests.
 *
 * @module
 */

import { createAddressPolicy } from "../../lib/report/sinks/address_policy.ts";
import { createWebhookPost } from "../../lib/report/sinks/webhook_post.ts";

/**
 * Webhook POSTs allowed to reach receivers on 127.0.0.1, which the default
 * address policy refuses (loopback).
 */
export const LOOPBACK_POST = createWebhookPost(
  createAddressPolicy({ allow: ["127.0.0.1/32"] }),
);

/** The service setting that lets webhooks reach test receivers. */
export const LOOPBACK_ALLOW = { WEBHOOK_ALLOW: "127.0.0.1/32" };

/** One request the receiver got. */
export interface Received {
  path: string;
  method: string;
  contentType: string | null;
  host: string | null;
  body: string;
}

/** A running receiver. */
export interface Receiver extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:43210`. */
  url: string;
  received: Received[];
  /** Resolves once `count` requests have arrived in all. */
  waitFor(count: number): Promise<void>;
}

/**
 * Starts a receiver on 127.0.0.1 and a free port. `respond` picks each
 * answer; by default every request gets 204. Returning `"hang"` keeps the
 * request open until the receiver is closed.
 */
export function startReceiver(
  respond: (request: Received, index: number) => number | "hang" | Response =
    () => 204,
): Receiver {
  const received: Received[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  const hanging = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, async (request) => {
    const entry: Received = {
      path: new URL(request.url).pathname,
      method: request.method,
      contentType: request.headers.get("content-type"),
      host: request.headers.get("host"),
      body: await request.text(),
    };
    const index = received.push(entry) - 1;
    for (const waiter of waiters.filter((w) => received.length >= w.count)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
    const answer = respond(entry, index);
    if (answer === "hang") {
      await new Promise((resolve) =>
        hanging.signal.addEventListener("abort", resolve, { once: true })
      );
      return new Response("late", { status: 200 });
    }
    if (answer instanceof Response) return answer;
    return new Response(null, { status: answer });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    received,
    waitFor(count) {
      if (received.length >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
    async [Symbol.asyncDispose]() {
      hanging.abort();
      await server.shutdown();
    },
  };
}
