import assert from "node:assert/strict";
import { Registry } from "../../lib/telemetry/metrics.ts";

Deno.test("Registry renders counters, gauges and histograms in the Prometheus text format", () => {
  const registry = new Registry();
  const requests = registry.counter(
    "app_requests_total",
    "Requests.\nAll of them.",
    [
      "route",
      "status",
    ],
  );
  const depth = registry.gauge("app_depth", "Depth.");
  const sizes = registry.histogram("app_size", "Sizes.", [10, 1, 5]);
  requests.inc(["accept", "200"]);
  // A value kept from labels() is the one inc() adds to.
  requests.labels(["accept", "200"]).inc(2);
  requests.inc(['we"ird\\', "4\n00"]);
  // Label values that would join to the same text stay apart.
  requests.inc(["a,b", "c"]);
  requests.inc(["a", "b,c"]);
  depth.set(7);
  depth.set(3);
  for (const value of [0.5, 1, 3, 20]) sizes.observe(value);
  assert.equal(
    registry.render(),
    [
      "# HELP app_requests_total Requests.\\nAll of them.",
      "# TYPE app_requests_total counter",
      'app_requests_total{route="accept",status="200"} 3',
      'app_requests_total{route="we\\"ird\\\\",status="4\\n00"} 1',
      'app_requests_total{route="a,b",status="c"} 1',
      'app_requests_total{route="a",status="b,c"} 1',
      "# HELP app_depth Depth.",
      "# TYPE app_depth gauge",
      "app_depth 3",
      "# HELP app_size Sizes.",
      "# TYPE app_size histogram",
      'app_size_bucket{le="1"} 2',
      'app_size_bucket{le="5"} 3',
      'app_size_bucket{le="10"} 3',
      'app_size_bucket{le="+Inf"} 4',
      "app_size_sum 24.5",
      "app_size_count 4",
      "",
    ].join("\n"),
  );
});

Deno.test("Registry refuses bad names, duplicates and wrong label counts", () => {
  const registry = new Registry();
  registry.counter("ok_total", "Fine.", ["a"]);
  assert.throws(() => registry.counter("ok_total", "Again."), TypeError);
  assert.throws(() => registry.counter("1bad", "Bad."), TypeError);
  assert.throws(() => registry.gauge("g", "Bad label.", ["__x"]), TypeError);
  const counter = registry.counter("two_total", "Two labels.", ["a", "b"]);
  assert.throws(() => counter.inc(["only one"]), TypeError);
});
