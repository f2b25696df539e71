/**
 * Which addresses webhooks may reach. Webhook URLs come from anonymous
 * callers, so by default only plain global unicast addresses are reached:
 * every range of IANA's special-purpose registries that is not (loopback,
 * private, carrier-grade NAT, link-local with 169.254.169.254, the cloud
 * metadata address, unique-local, multicast, documentation, benchmarking,
 * discard-only, ORCHID, segment routing and the rest, as `ipaddr.js`
 * classifies them) is refused, with the reason. IPv6 forms that carry an
 * IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64
 * `64:ff9b::/96`, 6to4, and Teredo's server and client) are judged by the
 * addresses they carry; local-use NAT64 (`64:ff9b:1::/48`), whose layouts
 * put the IPv4 address in several places, is refused whole. Operators can
 * allow hosts or CIDR ranges, or accept only listed hosts.
 *
 * @module
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

import {
  inRange,
  normalHost,
  parseAddress,
  parseAllowlist,
} from "../../allowlist.ts";

/** Words for the logs, by `ipaddr.js` range name. */
const REASONS: Record<string, string> = {
  unspecified: "unspecified",
  broadcast: "broadcast",
  multicast: "multicast",
  linkLocal: "link-local",
  loopback: "loopback",
  carrierGradeNat: "carrier-grade NAT",
  private: "private",
  reserved: "reserved",
  uniqueLocal: "unique-local",
  deprecatedSiteLocal: "site-local",
  discard: "discard-only",
  benchmarking: "for benchmarking",
  amt: "AMT",
  as112: "AS112",
  as112v6: "AS112",
  orchid2: "ORCHIDv2",
  deprecatedOrchid: "ORCHID",
  segmentRouting: "an SRv6 segment",
};

/** Options of {@link createAddressPolicy}. */
export interface AddressPolicyOptions {
  /**
   * Hosts (`hooks.example.com`) and CIDR ranges (`10.1.0.0/16`,
   * `127.0.0.1/32`) allowed even when they would be refused.
   */
  allow?: string[];
  /** Accept only hosts and ranges in `allow`. Default: false. */
  allowlistOnly?: boolean;
}

/** Decides whether a webhook may be delivered to a host and its addresses. */
export interface AddressPolicy {
  /**
   * Checks a host name before resolution.
   *
   * @returns Why it is refused, or `undefined` when it may be resolved.
   */
  checkHost(hostname: string): string | undefined;
  /**
   * Checks a whole URL before any delivery: its scheme, its port and its
   * host (as {@link AddressPolicy.checkHost}).
   *
   * @returns Why it can never be delivered to, or `undefined`.
   */
  checkUrl(url: string): string | undefined;
  /**
   * Checks one resolved address of `hostname`.
   *
   * @returns Why it is refused, or `undefined` when it may be reached.
   */
  checkAddress(hostname: string, address: string): string | undefined;
}

/**
 * Creates a policy.
 *
 * @throws {TypeError} for an entry of `allow` that is neither a host name
 *   nor a CIDR range.
 *
 * @example
 * ```ts
 * const policy = createAddressPolicy({ allow: ["127.0.0.1/32"] });
 * policy.checkAddress("example.com", "10.0.0.1"); // "10.0.0.1 is private"
 * ```
 */
export function createAddressPolicy(
  options: AddressPolicyOptions = {},
): AddressPolicy {
  const { hosts, ranges } = parseAllowlist(options.allow ?? []);
  const hostAllowed = (hostname: string) => hosts.has(normalHost(hostname));
  const addressAllowed = (address: string) => {
    const parsed = parseAddress(address);
    return parsed !== undefined &&
      ranges.some((range) => inRange(parsed, range));
  };

  return {
    checkUrl(url) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        return "not a URL";
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
        return `${parsed.protocol} is not http or https`;
      }
      if (parsed.port === "0") return "port 0 cannot be reached";
      return this.checkHost(parsed.hostname);
    },
    checkHost(hostname) {
      const host = normalHost(hostname);
      if (hostAllowed(host)) return undefined;
      if (isIP(host) !== 0) {
        if (options.allowlistOnly && !addressAllowed(host)) {
          return `${host} is not in the allowlist`;
        }
        return this.checkAddress(host, host);
      }
      if (options.allowlistOnly) return `${host} is not in the allowlist`;
      if (host === "localhost" || host.endsWith(".localhost")) {
        return `${host} is loopback`;
      }
      return undefined;
    },
    checkAddress(hostname, address) {
      if (hostAllowed(hostname) || addressAllowed(address)) return undefined;
      if (options.allowlistOnly) return `${address} is not in the allowlist`;
      const reason = blockedReason(address);
      return reason ? `${address} is ${reason}` : undefined;
    },
  };
}

/** Why `address` is refused by default, or `undefined`. */
export function blockedReason(address: string): string | undefined {
  const parsed = parseAddress(address);
  if (parsed === undefined) return "not an IP address";
  const range = parsed.range();
  if (parsed.kind() === "ipv6") {
    const carried = carriedIpv4(parsed as ipaddr.IPv6, range);
    if (typeof carried === "string") return carried;
    if (carried !== undefined) {
      for (const ipv4 of carried) {
        const reason = blockedReason(ipv4.toString());
        if (reason) return reason;
      }
      return undefined;
    }
  }
  if (range === "unicast") return undefined;
  return REASONS[range] ?? `${range}, not global unicast`;
}

/**
 * The IPv4 addresses an IPv6 address of `range` carries; a reason when the
 * form is refused whole; `undefined` when it carries none.
 */
function carriedIpv4(
  address: ipaddr.IPv6,
  range: string,
): ipaddr.IPv4[] | string | undefined {
  const bytes = address.toByteArray();
  const ipv4 = (at: number, flip = 0) =>
    new ipaddr.IPv4(bytes.slice(at, at + 4).map((b) => b ^ flip));
  // IPv4-compatible ::/96 (deprecated), which ipaddr.js calls unicast:
  // `::a9fe:a9fe` is 169.254.169.254. `::` and `::1` have ranges of their own.
  if (
    range !== "unspecified" && range !== "loopback" &&
    bytes.slice(0, 12).every((byte) => byte === 0)
  ) {
    return [ipv4(12)];
  }
  switch (range) {
    case "ipv4Mapped": // ::ffff:0:0/96, and IPv4-compatible ::/96
    case "rfc6145": // ::ffff:0:0:0/96
      return [ipv4(12)];
    case "rfc6052":
      // 64:ff9b::/96 carries it last; local-use 64:ff9b:1::/48 has layouts
      // for /48 to /96 prefixes, with the address in different places.
      return bytes[4] === 0 && bytes[5] === 0 ? [ipv4(12)] : "local-use NAT64";
    case "6to4": // 2002:AABB:CCDD::/48
      return [ipv4(2)];
    case "teredo": // 2001:0:<server>:<flags>:<port>:<client, inverted>
      return [ipv4(4), ipv4(12, 0xff)];
  }
  return undefined;
}
