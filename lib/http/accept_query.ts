/**
 * Parsing of the `/api/verve/accept` query string: the `id` and the optional
 * `url` parameters. This runs on every request, so it scans the raw query
 * instead of building `URL`/`URLSearchParams` objects.
 *
 * @module
 */

/** The most characters a `url` parameter may have once decoded. */
export const MAX_URL_LENGTH = 2048;

/** The most parameters a query may carry; more is a bad request. */
export const MAX_QUERY_PARAMS = 8;

/**
 * The most characters a raw query may have: a `url` of the longest kind,
 * percent-encoded, and room for the rest. Longer is a bad request, refused
 * before anything is decoded.
 */
export const MAX_QUERY_LENGTH = 3 * MAX_URL_LENGTH + 512;

const INT64_MAX = "9223372036854775807";
const INT64_MIN_MAGNITUDE = "9223372036854775808";

/** A valid accept query. */
export interface AcceptQuery {
  /** The id in canonical decimal form: no leading zeros, no `-0`. */
  id: string;
  /** The webhook URL, normalised by the WHATWG URL parser, if one was given. */
  url?: string;
}

/**
 * Parses an id: a decimal integer in the signed 64-bit range with an optional
 * leading `-`. Ids compare as integers, so the result is canonical
 * (`"007"` → `"7"`, `"-0"` → `"0"`).
 *
 * @param raw The decoded parameter value.
 * @returns The canonical id, or `undefined` when `raw` is not a valid id.
 *
 * @example
 * ```ts
 * parseId("-0042"); // "-42"
 * parseId("1.5"); // undefined
 * ```
 */
export function parseId(raw: string): string | undefined {
  const negative = raw.charCodeAt(0) === 45; // "-"
  let start = negative ? 1 : 0;
  const end = raw.length;
  if (start === end) return undefined;
  for (let i = start; i < end; i++) {
    const c = raw.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  while (start < end - 1 && raw.charCodeAt(start) === 48) start++;
  const digits = start === 0 ? raw : raw.slice(start);
  if (digits.length > 19) return undefined;
  if (digits.length === 19) {
    const limit = negative ? INT64_MIN_MAGNITUDE : INT64_MAX;
    if (digits > limit) return undefined;
  }
  if (!negative || digits === "0") return digits;
  return "-" + digits;
}

/**
 * Parses a webhook URL: absolute `http:` or `https:`, with a host, at most
 * {@link MAX_URL_LENGTH} characters, no whitespace or control characters.
 *
 * @param raw The decoded parameter value.
 * @returns The normalised URL, or `undefined` when `raw` is not acceptable.
 */
export function parseWebhookUrl(raw: string): string | undefined {
  if (raw.length === 0 || raw.length > MAX_URL_LENGTH) return undefined;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c <= 32 || c === 127) return undefined;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  if (url.hostname === "") return undefined;
  if (url.href.length > MAX_URL_LENGTH) return undefined;
  return url.href;
}

function decodeComponent(raw: string): string | undefined {
  if (raw.indexOf("%") < 0 && raw.indexOf("+") < 0) return raw;
  try {
    return decodeURIComponent(raw.replaceAll("+", " "));
  } catch {
    return undefined;
  }
}

/**
 * Parses the query string of an accept request. `id` is required and `url`
 * optional; each may appear once. Other parameters are ignored, up to
 * {@link MAX_QUERY_PARAMS} in all.
 *
 * @param query The raw query string, without the leading `?`.
 * @returns The parsed query, or `undefined` for a bad request.
 *
 * @example
 * ```ts
 * parseAcceptQuery("id=7&url=https%3A%2F%2Fexample.com%2Fhook");
 * // { id: "7", url: "https://example.com/hook" }
 * ```
 */
export function parseAcceptQuery(query: string): AcceptQuery | undefined {
  if (query.length > MAX_QUERY_LENGTH) return undefined;
  let rawId: string | undefined;
  let rawUrl: string | undefined;
  let params = 0;
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf("&", start);
    if (end < 0) end = query.length;
    if (end > start) {
      if (++params > MAX_QUERY_PARAMS) return undefined;
      const eq = query.indexOf("=", start);
      const nameEnd = eq >= 0 && eq < end ? eq : end;
      const name = decodeComponent(query.slice(start, nameEnd));
      if (name === undefined) return undefined;
      if (name === "id" || name === "url") {
        const value = nameEnd < end
          ? decodeComponent(query.slice(nameEnd + 1, end))
          : "";
        if (value === undefined) return undefined;
        if (name === "id") {
          if (rawId !== undefined) return undefined;
          rawId = value;
        } else {
          if (rawUrl !== undefined) return undefined;
          rawUrl = value;
        }
      }
    }
    start = end + 1;
  }
  if (rawId === undefined) return undefined;
  const id = parseId(rawId);
  if (id === undefined) return undefined;
  if (rawUrl === undefined) return { id };
  const url = parseWebhookUrl(rawUrl);
  if (url === undefined) return undefined;
  return { id, url };
}
