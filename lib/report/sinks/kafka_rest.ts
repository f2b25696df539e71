/**
 * The Kafka REST proxy sink: produces each report as one record to a Kafka
 * topic through an HTTP REST proxy, with plain `fetch`, so it works where no
 * raw Kafka connection is possible (the edge). Speaks the Confluent REST
 * Proxy API v2 (also Redpanda's HTTP Proxy, Aiven Karapace, Strimzi Kafka
 * Bridge) and v3 (Confluent Platform and Cloud). The record key is the
 * window start, so consumers can dedupe and compaction keeps one record per
 * window.
 *
 * @module
 */
import {
  type MinuteReport,
  PermanentSinkError,
  type SendOutcome,
  type Sink,
} from "../sink.ts";

/** Options of {@link createKafkaRestSink}. */
export interface KafkaRestSinkOptions {
  /**
   * The proxy's base URL, e.g. `http://rest-proxy:8082`; for Confluent Cloud
   * the REST endpoint with its `/kafka` path.
   */
  baseUrl: string;
  /** The API version. Default: `v2`. */
  api?: "v2" | "v3";
  /** The Kafka cluster id, for `v3`. */
  clusterId?: string;
  /** The topic. */
  topic: string;
  /** HTTP Basic credentials (user and password, or API key and secret). */
  basic?: { username: string; password: string };
  /** A bearer token, instead of Basic credentials. */
  token?: string;
  /** The time limit of one request, in ms. Default: 5000. */
  timeoutMs?: number;
  /** The fetch implementation. Default: the global `fetch`. */
  fetch?: typeof fetch;
}

/**
 * Creates the sink. `send` resolves once the proxy acknowledged the record,
 * throws {@link PermanentSinkError} for what retrying cannot fix (401/403,
 * unknown topic, a refused request) and a plain `Error` for the rest (5xx,
 * timeouts, network errors, retriable per-record errors).
 *
 * @example
 * ```ts
 * const sink = createKafkaRestSink({
 *   baseUrl: "http://localhost:8082",
 *   topic: "unique-ids",
 * });
 * ```
 */
export function createKafkaRestSink(options: KafkaRestSinkOptions): Sink {
  const {
    api = "v2",
    topic,
    timeoutMs = 5000,
    fetch: fetchImpl = fetch,
  } = options;
  const base = options.baseUrl.replace(/\/+$/, "");
  if (api === "v3" && !options.clusterId) {
    throw new TypeError("Cannot create Kafka REST sink: v3 needs a cluster id");
  }
  const url = api === "v2"
    ? `${base}/topics/${encodeURIComponent(topic)}`
    : `${base}/v3/clusters/${encodeURIComponent(options.clusterId!)}/topics/${
      encodeURIComponent(topic)
    }/records`;
  const headers: Record<string, string> = api === "v2"
    ? {
      "content-type": "application/vnd.kafka.json.v2+json",
      accept: "application/vnd.kafka.v2+json, application/json",
    }
    : { "content-type": "application/json", accept: "application/json" };
  if (options.basic) {
    const { username, password } = options.basic;
    headers.authorization = `Basic ${btoa(`${username}:${password}`)}`;
  } else if (options.token) {
    headers.authorization = `Bearer ${options.token}`;
  }

  return {
    name: "kafka-rest",
    async send(report: MinuteReport): Promise<SendOutcome> {
      const body = api === "v2"
        ? { records: [{ key: report.minute, value: report }] }
        : {
          key: { type: "STRING", data: report.minute },
          value: { type: "JSON", data: report },
        };
      const response = await fetchImpl(url, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        redirect: "manual",
        signal: AbortSignal.timeout(timeoutMs),
      }).catch((error: Error) => {
        throw new Error(
          error.name === "TimeoutError"
            ? `no answer within ${timeoutMs} ms`
            : error.message,
        );
      });
      const text = await response.text();
      const answer = parseJson(text);
      if (!response.ok) {
        const message = `${response.status} ${
          stringField(answer, "message") ?? (text.slice(0, 200) ||
            response.statusText)
        }`;
        if (retriableStatus(response.status)) throw new Error(message);
        throw new PermanentSinkError(message);
      }
      const failure = api === "v2" ? v2Failure(answer) : v3Failure(answer);
      if (failure) throw failure;
      return "delivered";
    },
  };
}

/** The per-record error of a v2 answer, if any. */
function v2Failure(answer: unknown): Error | undefined {
  const offsets = (answer as { offsets?: unknown[] } | undefined)?.offsets;
  const offset = Array.isArray(offsets) ? offsets[0] : undefined;
  if (offset === undefined) {
    return new Error("the proxy's answer has no offsets");
  }
  const code = (offset as { error_code?: number | null }).error_code;
  if (code === null || code === undefined) return undefined;
  const message = `error_code ${code}: ${
    stringField(offset, "error") ?? "record not produced"
  }`;
  // 5xxxx codes (e.g. 50003, a broker timeout) may pass on a retry; 4xxxx
  // codes (40101/40301 auth, 40403 unknown topic) will not.
  return code >= 50000 ? new Error(message) : new PermanentSinkError(message);
}

/** The error of a v3 delivery report, if any. */
function v3Failure(answer: unknown): Error | undefined {
  const code = (answer as { error_code?: number } | undefined)?.error_code;
  if (code === undefined || code === 200) return undefined;
  const message = `error_code ${code}: ${
    stringField(answer, "message") ?? "record not produced"
  }`;
  return retriableStatus(code)
    ? new Error(message)
    : new PermanentSinkError(message);
}

function retriableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function stringField(value: unknown, name: string): string | undefined {
  const field = (value as Record<string, unknown> | undefined)?.[name];
  return typeof field === "string" ? field : undefined;
}
