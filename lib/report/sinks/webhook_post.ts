/**
 * POSTing a webhook safely: the host is checked against an
 * {@link AddressPolicy} before resolution, every resolved address after it,
 * and the connection goes to an address that passed (so a DNS answer cannot
 * change between check and use). Redirects are never followed. Built on
 * `node:http` and `node:https`, whose `lookup` hook makes the connection use
 * the checked address while TLS still verifies the host name.
 *
 * @module
 */
import { lookup as dnsLookup } from "node:dns";
import http from "node:http";
import https from "node:https";
import type { AddressPolicy } from "./address_policy.ts";

/** A delivery the address policy refused; never retried. */
export class WebhookRefusedError extends Error {
  /** @param reason Why, e.g. `10.0.0.1 is private`. */
  constructor(reason: string) {
    super(reason);
    this.name = "WebhookRefusedError";
  }
}

/** Options of one POST. */
export interface PostOptions {
  timeoutMs: number;
  signal?: AbortSignal;
}

/** POSTs `body` as JSON to `url` and resolves with the HTTP status. */
export type WebhookPost = (
  url: string,
  body: string,
  options: PostOptions,
) => Promise<number>;

type LookupCallback = (
  error: Error | null,
  address: string | { address: string; family: number }[],
  family?: number,
) => void;

/**
 * Creates a POST function that obeys `policy`.
 *
 * @example
 * ```ts
 * const post = createWebhookPost(createAddressPolicy());
 * // `resolve` replaces DNS, e.g. to pin a name in tests.
 * await post("https://hooks.example.com/verve", "{}", { timeoutMs: 5000 });
 * ```
 */
export function createWebhookPost(
  policy: AddressPolicy,
  options: { resolve?: typeof dnsLookup } = {},
): WebhookPost {
  const resolve = options.resolve ?? dnsLookup;
  return (url, body, { timeoutMs, signal }) => {
    if (signal?.aborted) return Promise.reject(new Error("aborted"));
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      return Promise.reject(new WebhookRefusedError("not a URL"));
    }
    if (target.protocol !== "http:" && target.protocol !== "https:") {
      return Promise.reject(
        new WebhookRefusedError(`${target.protocol} is not http or https`),
      );
    }
    const hostname = target.hostname.replace(/^\[|\]$/g, "");
    const refused = policy.checkHost(hostname);
    if (refused) return Promise.reject(new WebhookRefusedError(refused));

    const lookup = (
      name: string,
      options: { all?: boolean | undefined },
      callback: LookupCallback,
    ) => {
      resolve(name, { all: true }, (error, addresses) => {
        if (error) return callback(error, []);
        const reasons: string[] = [];
        const allowed = addresses.filter(({ address }) => {
          const reason = policy.checkAddress(name, address);
          if (reason) reasons.push(reason);
          return reason === undefined;
        });
        if (allowed.length === 0) {
          const why = reasons.length > 0
            ? reasons.join("; ")
            : `${name} resolves to no address`;
          return callback(new WebhookRefusedError(why), []);
        }
        if (options?.all) return callback(null, allowed);
        callback(null, allowed[0]!.address, allowed[0]!.family);
      });
    };

    return new Promise<number>((resolve, reject) => {
      const request = (target.protocol === "https:" ? https : http).request({
        protocol: target.protocol,
        hostname,
        port: target.port || undefined,
        path: `${target.pathname}${target.search}`,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": String(new TextEncoder().encode(body).length),
          "user-agent": "verve-webhook",
        },
        lookup,
        // One connection per delivery: a hung receiver must not hold up
        // requests queued behind it on a shared connection.
        agent: false,
      }, (response) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        // Only the status matters: close at once, so a receiver that
        // trickles its body cannot hold the connection.
        response.destroy();
        resolve(response.statusCode ?? 0);
      });
      const fail = (error: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        reject(error);
      };
      const timer = setTimeout(() => {
        const timeout = new Error(`timed out after ${timeoutMs} ms`);
        timeout.name = "TimeoutError";
        request.destroy(timeout);
      }, timeoutMs);
      const onAbort = () => request.destroy(new Error("aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      request.on("error", fail);
      request.end(body);
    });
  };
}
