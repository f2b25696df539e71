/**
 * Allowlists of webhook hosts and address ranges (`WEBHOOK_ALLOW`): their
 * parsing, shared by the settings (which refuse a bad entry at start) and
 * the address policy of the webhook sink (which applies them), and the
 * address arithmetic both need. It imports nothing of the service.
 *
 * @module
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/** An IPv4 or IPv6 address. */
export type Address = ipaddr.IPv4 | ipaddr.IPv6;
/** A CIDR range: its base address and prefix length. */
export type Range = [Address, number];

/** What an allowlist allows: host names, and address ranges. */
export interface Allowlist {
  /** Host names, lower case, without a trailing dot. */
  hosts: Set<string>;
  /** CIDR ranges; a single address is a /32 or /128. */
  ranges: Range[];
}

/**
 * Parses allowlist entries: host names (`hooks.example.com`), addresses
 * (`127.0.0.1`) and CIDR ranges (`10.1.0.0/16`).
 *
 * @throws {TypeError} for an entry that is none of those.
 *
 * @example
 * ```ts
 * parseAllowlist(["hooks.example.com", "10.1.0.0/16"]).ranges.length; // 1
 * ```
 */
export function parseAllowlist(entries: readonly string[]): Allowlist {
  const hosts = new Set<string>();
  const ranges: Range[] = [];
  for (const entry of entries) {
    const value = entry.trim().toLowerCase();
    if (value.includes("/")) {
      const range = parseRange(value);
      if (!range) {
        throw new TypeError(
          `Cannot parse allowed range: ${JSON.stringify(entry)}`,
        );
      }
      ranges.push(range);
    } else if (isIP(value) !== 0) {
      ranges.push(parseRange(`${value}/${isIP(value) === 4 ? 32 : 128}`)!);
    } else if (/^[a-z0-9.-]+$/.test(value)) {
      hosts.add(value.replace(/\.$/, ""));
    } else {
      throw new TypeError(
        `Cannot parse allowed host: ${JSON.stringify(entry)}`,
      );
    }
  }
  return { hosts, ranges };
}

/** An address given as text, or `undefined` when it is not one. */
export function parseAddress(text: string): Address | undefined {
  const host = normalHost(text);
  if (isIP(host) === 0) return undefined;
  try {
    return ipaddr.parse(host);
  } catch {
    // Forms node:net accepts and ipaddr.js does not, e.g. zone names.
    return undefined;
  }
}

/** A CIDR range given as text, or `undefined` when it is not one. */
function parseRange(text: string): Range | undefined {
  const [address, prefix] = text.split("/");
  if (parseAddress(address ?? "") === undefined) return undefined;
  if (!/^\d{1,3}$/.test(prefix ?? "")) return undefined;
  try {
    return ipaddr.parseCIDR(text);
  } catch {
    return undefined;
  }
}

/** Whether `address` lies in `range`; IPv4-mapped IPv6 as its IPv4. */
export function inRange(address: Address, [base, bits]: Range): boolean {
  const plain = address.kind() === "ipv6" &&
      (address as ipaddr.IPv6).isIPv4MappedAddress()
    ? (address as ipaddr.IPv6).toIPv4Address()
    : address;
  return plain.kind() === base.kind() && plain.match(base, bits);
}

/** A host name or address as compared: lower case, no brackets, no trailing dot. */
export function normalHost(hostname: string): string {
  return hostname.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
}
