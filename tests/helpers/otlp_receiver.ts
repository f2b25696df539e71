/**
 * An OTLP/HTTP receiver for tests, JSON protocol only
 * (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`): what Deno's built-in
 * OpenTelemetry exports, as Deno Deploy collects it. It keeps the log
 * records of `POST /v1/logs` and the metrics of `POST /v1/metrics`, and
 * answers every export `200 {}`.
 *
 * @module
 */

/** One OTLP log record, as the JSON protocol carries it. */
export interface OtlpLogRecord {
  severityNumber?: number;
  severityText?: string;
  body?: { stringValue?: string };
  attributes?: { key: string; value: Record<string, unknown> }[];
}

/** One OTLP metric, as the JSON protocol carries it. */
export interface OtlpMetric {
  name: string;
  description?: string;
  sum?: { dataPoints: OtlpDataPoint[] };
  gauge?: { dataPoints: OtlpDataPoint[] };
  histogram?: { dataPoints: { count: string; sum?: number }[] };
}

/** One data point of a sum or a gauge. */
export interface OtlpDataPoint {
  asDouble?: number;
  asInt?: string | number;
  attributes?: { key: string; value: { stringValue?: string } }[];
}

/** A running receiver. */
export interface OtlpReceiver extends AsyncDisposable {
  /** The endpoint, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  url: string;
  /** Every log record so far. */
  logs: OtlpLogRecord[];
  /** Every metric so far, in every export (a metric recurs per export). */
  metrics: OtlpMetric[];
  /** Resolves with the first record or metric `test` accepts, within `timeoutMs`. */
  waitFor<T>(find: () => T | undefined, timeoutMs?: number): Promise<T>;
}

/** Starts a receiver on 127.0.0.1 and a free port. */
export function startOtlpReceiver(): OtlpReceiver {
  const logs: OtlpLogRecord[] = [];
  const metrics: OtlpMetric[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      const body = await request.json().catch(() => ({}));
      if (path === "/v1/logs") {
        for (const resource of body.resourceLogs ?? []) {
          for (const scope of resource.scopeLogs ?? []) {
            logs.push(...(scope.logRecords ?? []));
          }
        }
      } else if (path === "/v1/metrics") {
        for (const resource of body.resourceMetrics ?? []) {
          for (const scope of resource.scopeMetrics ?? []) {
            metrics.push(...(scope.metrics ?? []));
          }
        }
      }
      return Response.json({});
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    logs,
    metrics,
    async waitFor(find, timeoutMs = 15_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = find();
        if (found !== undefined) return found;
        if (Date.now() > until) {
          throw new Error(
            `Nothing arrived at the OTLP receiver in ${timeoutMs} ms`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}
