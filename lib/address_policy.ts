/**
 * Which addresses webhooks may reach. Webhook URLs come from anonymous
 * callers, so by default deliveries to loopback, private (RFC 1918), carrier
 * grade NAT, link-local (with 169.254.169.254, the cloud metadata address),
 * unique-local and site-local IPv6, multicast, broadcast and unspecified
 * addresses, and IPv6 forms that carry one of these (IPv4-mapped, NAT64,
 * 6to4, IPv4-compatible), are refused. Operators can
 * allow hosts or CIDR ranges, or accept only listed hosts.
 *
 * @module
 */
import { isIP } from "node:net";

/** A CIDR range, parsed. */
interface Range {
  bytes: Uint8Array;
  prefix: number;
}

/** Ranges never reached unless allowed, with the reason given in logs. */
const BLOCKED: [string, string][] = [
  ["0.0.0.0/8", "unspecified"],
  ["10.0.0.0/8", "private"],
  ["100.64.0.0/10", "carrier-grade NAT"],
  ["127.0.0.0/8", "loopback"],
  ["192.0.0.0/24", "reserved"],
  ["198.18.0.0/15", "reserved"],
  ["169.254.0.0/16", "link-local"],
  ["172.16.0.0/12", "private"],
  ["192.168.0.0/16", "private"],
  ["224.0.0.0/4", "multicast"],
  ["255.255.255.255/32", "broadcast"],
  ["240.0.0.0/4", "reserved"],
  ["::/128", "unspecified"],
  ["::1/128", "loopback"],
  ["fc00::/7", "unique-local"],
  ["fe80::/10", "link-local"],
  ["fec0::/10", "site-local"],
  ["ff00::/8", "multicast"],
].map(([cidr, reason]) => [cidr!, reason!]);

const BLOCKED_RANGES = BLOCKED.map(([cidr, reason]) => ({
  range: parseCidr(cidr)!,
  reason,
}));

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
  const hosts = new Set<string>();
  const ranges: Range[] = [];
  for (const entry of options.allow ?? []) {
    const value = entry.trim().toLowerCase();
    if (value.includes("/")) {
      const range = parseCidr(value);
      if (!range) {
        throw new TypeError(
          `Cannot parse allowed range: ${JSON.stringify(entry)}`,
        );
      }
      ranges.push(range);
    } else if (isIP(value) !== 0) {
      ranges.push(parseCidr(`${value}/${isIP(value) === 4 ? 32 : 128}`)!);
    } else if (/^[a-z0-9.-]+$/.test(value)) {
      hosts.add(value.replace(/\.$/, ""));
    } else {
      throw new TypeError(
        `Cannot parse allowed host: ${JSON.stringify(entry)}`,
      );
    }
  }
  const hostAllowed = (hostname: string) => hosts.has(normalHost(hostname));
  const addressAllowed = (address: string) => {
    const bytes = addressBytes(address);
    return bytes !== undefined && ranges.some((range) => inRange(bytes, range));
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
  const bytes = addressBytes(address);
  if (bytes === undefined) return "not an IP address";
  for (const { range, reason } of BLOCKED_RANGES) {
    if (inRange(bytes, range)) return reason;
  }
  // IPv6 forms that carry an IPv4 address are judged by that address.
  const embedded = embeddedIpv4(bytes);
  if (embedded === undefined) return undefined;
  for (const { range, reason } of BLOCKED_RANGES) {
    if (inRange(embedded, range)) return reason;
  }
  return undefined;
}

/** IPv6 prefixes whose addresses embed an IPv4 address, and where. */
const EMBEDDING: { range: Range; offset: number }[] = [
  ["::ffff:0:0/96", 12], // IPv4-mapped
  ["::ffff:0:0:0/96", 12], // IPv4-translated
  ["::/96", 12], // IPv4-compatible (deprecated)
  ["64:ff9b::/96", 12], // NAT64
  ["64:ff9b:1::/48", 12], // local NAT64
  ["2002::/16", 2], // 6to4
].map(([cidr, offset]) => ({
  range: parseCidr(cidr as string)!,
  offset: offset as number,
}));

function embeddedIpv4(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length !== 16) return undefined;
  for (const { range, offset } of EMBEDDING) {
    if (inRange(bytes, range)) return bytes.slice(offset, offset + 4);
  }
  return undefined;
}

function normalHost(hostname: string): string {
  return hostname.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
}

function inRange(bytes: Uint8Array, range: Range): boolean {
  if (bytes.length !== range.bytes.length) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i]! & mask) !== (range.bytes[i]! & mask)) return false;
  }
  return true;
}

function parseCidr(cidr: string): Range | undefined {
  const [address, prefixText] = cidr.split("/");
  const bytes = addressBytes(address ?? "");
  const prefix = Number(prefixText);
  if (
    bytes === undefined || !/^\d{1,3}$/.test(prefixText ?? "") ||
    prefix > bytes.length * 8
  ) {
    return undefined;
  }
  return { bytes, prefix };
}

/** The bytes of an IPv4 (4) or IPv6 (16) address, or `undefined`. */
function addressBytes(address: string): Uint8Array | undefined {
  let text = normalHost(address);
  const version = isIP(text);
  if (version === 4) return new Uint8Array(text.split(".").map(Number));
  if (version !== 6) return undefined;
  // A dotted IPv4 tail (::ffff:127.0.0.1) becomes two hex groups.
  text = text.replace(
    /(\d+)\.(\d+)\.(\d+)\.(\d+)$/,
    (_, a, b, c, d) =>
      `${((+a << 8) | +b).toString(16)}:${((+c << 8) | +d).toString(16)}`,
  );
  const [head = "", tail] = text.split("::");
  const groups = (part: string) =>
    part === "" ? [] : part.split(":").map((g) => parseInt(g, 16));
  const first = groups(head);
  const last = tail === undefined ? [] : groups(tail);
  const words = tail === undefined
    ? first
    : [...first, ...Array(8 - first.length - last.length).fill(0), ...last];
  const bytes = new Uint8Array(16);
  words.forEach((word, i) => {
    bytes[2 * i] = word >> 8;
    bytes[2 * i + 1] = word & 0xff;
  });
  return bytes;
}
