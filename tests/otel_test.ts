/**
 * The service with Deno's built-in OpenTelemetry on, as Deno Deploy runs
 * it: each window's report arrives at an OTLP/HTTP receiver as a log
 * record, and the service's own metrics arrive as metrics.
 */
import assert from "node:assert/strict";
import { startOtlpReceiver } from "./helpers/otlp_receiver.ts";
import { tempKvPath } from "./helpers/kv.ts";
import { startService } from "./helpers/service.ts";
import { nextWindow } from "./helpers/windows.ts";

const WINDOW_MS = 1000;

Deno.test("with OTEL_DENO=true, a window's report is an OpenTelemetry log record and the service's metrics are exported", async () => {
  await using receiver = startOtlpReceiver();
  await using file = await tempKvPath();
  await using service = await startService({
    KV_PATH: file.path,
    WINDOW_MS: String(WINDOW_MS),
    REPORT_GRACE_MS: "200",
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_METRIC_EXPORT_INTERVAL: "200",
  });
  const minute = await nextWindow(WINDOW_MS, 50);
  for (const id of ["1", "2", "3", "2"]) {
    const answer = await fetch(`${service.url}/api/verve/accept?id=${id}`);
    assert.equal(await answer.text(), "ok");
  }
  const heading = `Window ${new Date(minute).toISOString()} had 3 unique ids`;
  const record = await receiver.waitFor(() =>
    receiver.logs.find((log) => log.body?.stringValue?.includes(heading))
  );
  assert.equal(record.severityText, "INFO");
  const line = JSON.parse(record.body!.stringValue!);
  assert.equal(line.logger, "verve.report");
  assert.equal(line.properties.unique_ids, 3);
  // The same line once on stdout, not twice.
  const lines = service.lines.filter((l) => l.message === heading);
  assert.equal(lines.length, 1);

  const ids = await receiver.waitFor(() =>
    receiver.metrics.findLast((metric) =>
      metric.name === "verve_ids_total" &&
      metric.sum?.dataPoints.some((point) =>
        point.attributes?.some((a) => a.value.stringValue === "new") &&
        point.asDouble === 3
      )
    )
  );
  assert.equal(
    ids.description,
    "Accepted ids by outcome: new in their window, or a repeat.",
  );
  await receiver.waitFor(() =>
    receiver.metrics.find((metric) =>
      metric.name === "verve_store_batch_size" &&
      Number(metric.histogram?.dataPoints[0]?.count) > 0
    )
  );
});
