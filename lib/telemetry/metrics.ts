/**
 * Metrics in the Prometheus text exposition format (version 0.0.4):
 * counters, gauges and histograms with labels, kept in a registry that
 * renders them for `GET /metrics`, and that can export the same metrics
 * through the OpenTelemetry API (`Registry.exportTo`), which Deno's
 * built-in OpenTelemetry sends over OTLP. Small on purpose: updating a
 * metric is a map lookup and an addition, cheap enough for every request.
 *
 * @module
 */
import type {
  Attributes,
  Histogram as OtelHistogram,
  Meter,
  Observable,
} from "@opentelemetry/api";

/** The content type of {@link Registry.render}'s output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Kind = "counter" | "gauge" | "histogram";

interface Metric {
  name: string;
  help: string;
  kind: Kind;
  render(lines: string[]): void;
  exportTo(meter: Meter): void;
}

/** Holds metrics and renders them. */
export class Registry {
  readonly #metrics: Metric[] = [];

  /** Creates and registers a counter. */
  counter(name: string, help: string, labelNames: string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  /** Creates and registers a gauge. */
  gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labelNames));
  }

  /** Creates and registers a histogram with upper bucket bounds `buckets`. */
  histogram(
    name: string,
    help: string,
    buckets: number[],
    labelNames: string[] = [],
  ): Histogram {
    return this.#add(new Histogram(name, help, buckets, labelNames));
  }

  /**
   * Exports every metric through `meter` as well: counters and gauges as
   * observable instruments read at each collection, histograms as
   * OpenTelemetry histograms with the same buckets, recorded from then on.
   * Label names become attribute keys.
   */
  exportTo(meter: Meter): void {
    for (const metric of this.#metrics) metric.exportTo(meter);
  }

  /** Every metric, in the text exposition format. */
  render(): string {
    const lines: string[] = [];
    for (const metric of this.#metrics) {
      lines.push(`# HELP ${metric.name} ${escapeHelp(metric.help)}`);
      lines.push(`# TYPE ${metric.name} ${metric.kind}`);
      metric.render(lines);
    }
    return lines.join("\n") + "\n";
  }

  #add<T extends Metric>(metric: T): T {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(metric.name)) {
      throw new TypeError(`Cannot register metric: bad name ${metric.name}`);
    }
    if (this.#metrics.some((m) => m.name === metric.name)) {
      throw new TypeError(`Cannot register metric: ${metric.name} exists`);
    }
    this.#metrics.push(metric);
    return metric;
  }
}

/**
 * Values per label combination. Updates find their values through one map
 * per label, so no label string is built per update; the rendered label set
 * is built once, when a combination first appears.
 */
abstract class Labelled<T> {
  readonly #tree = new Map<string, unknown>();
  readonly #children: [string, T, Attributes][] = [];

  constructor(readonly labelNames: string[]) {
    for (const name of labelNames) {
      if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name) || name.startsWith("__")) {
        throw new TypeError(`Cannot register metric: bad label ${name}`);
      }
    }
  }

  protected child(values: string[], create: () => T): T {
    if (values.length !== this.labelNames.length) {
      throw new TypeError(
        `Cannot update metric: expected ${this.labelNames.length} label values, got ${values.length}`,
      );
    }
    const last = values.length - 1;
    let node = this.#tree;
    for (let i = 0; i < last; i++) {
      let next = node.get(values[i]!) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(values[i]!, next);
      }
      node = next;
    }
    const leaf = last < 0 ? "" : values[last]!;
    let child = node.get(leaf) as T | undefined;
    if (child === undefined) {
      child = create();
      node.set(leaf, child);
      this.#children.push([
        this.#render(values),
        child,
        this.attributes(values),
      ]);
    }
    return child;
  }

  protected entries(): [string, T, Attributes][] {
    return this.#children;
  }

  /** The OpenTelemetry attributes of a label combination. */
  protected attributes(values: string[]): Attributes {
    return Object.fromEntries(
      this.labelNames.map((name, i) => [name, values[i]!]),
    );
  }

  #render(values: string[]): string {
    return this.labelNames
      .map((name, i) => `${name}="${escapeLabel(values[i]!)}"`)
      .join(",");
  }
}

/** A counter's value for one label combination. */
export class CounterValue {
  value = 0;

  /** Adds `by` (default 1). */
  inc(by = 1): void {
    this.value += by;
  }
}

const newCounterValue = () => new CounterValue();
const newValue = () => ({ value: 0 });

/** A value that only goes up. */
export class Counter extends Labelled<CounterValue> implements Metric {
  readonly kind = "counter";

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: string[],
  ) {
    super(labelNames);
  }

  /** Adds `by` (default 1) to the value for `labels`. */
  inc(labels: string[] = [], by = 1): void {
    this.labels(labels).inc(by);
  }

  /**
   * The value for `labels`, to update without looking it up again: what a
   * hot path keeps for the combinations it counts most.
   */
  labels(labels: string[]): CounterValue {
    return this.child(labels, newCounterValue);
  }

  exportTo(meter: Meter): void {
    observeValues(
      meter.createObservableCounter(this.name, { description: this.help }),
      this.entries(),
    );
  }

  render(lines: string[]): void {
    for (const [key, { value }] of this.entries()) {
      lines.push(`${this.name}${braces(key)} ${value}`);
    }
  }
}

/** A value that goes up and down. */
export class Gauge extends Labelled<{ value: number }> implements Metric {
  readonly kind = "gauge";

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: string[],
  ) {
    super(labelNames);
  }

  /** Sets the value for `labels`. */
  set(value: number, labels: string[] = []): void {
    this.child(labels, newValue).value = value;
  }

  exportTo(meter: Meter): void {
    observeValues(
      meter.createObservableGauge(this.name, { description: this.help }),
      this.entries(),
    );
  }

  render(lines: string[]): void {
    for (const [key, { value }] of this.entries()) {
      lines.push(`${this.name}${braces(key)} ${value}`);
    }
  }
}

interface HistogramValues {
  counts: number[];
  sum: number;
  count: number;
}

/** Observations counted into buckets, with their sum and count. */
export class Histogram extends Labelled<HistogramValues> implements Metric {
  readonly kind = "histogram";
  readonly #buckets: number[];
  /** Where observations go too, once exported. */
  #otel: OtelHistogram | undefined;

  constructor(
    readonly name: string,
    readonly help: string,
    buckets: number[],
    labelNames: string[],
  ) {
    super(labelNames);
    this.#buckets = [...buckets].sort((a, b) => a - b);
  }

  /** Records one observation for `labels`. */
  observe(value: number, labels: string[] = []): void {
    const values = this.child(labels, () => ({
      counts: this.#buckets.map(() => 0),
      sum: 0,
      count: 0,
    }));
    for (let i = 0; i < this.#buckets.length; i++) {
      if (value <= this.#buckets[i]!) values.counts[i]!++;
    }
    values.sum += value;
    values.count++;
    this.#otel?.record(
      value,
      labels.length === 0 ? undefined : this.attributes(labels),
    );
  }

  exportTo(meter: Meter): void {
    this.#otel = meter.createHistogram(this.name, {
      description: this.help,
      advice: { explicitBucketBoundaries: this.#buckets },
    });
  }

  render(lines: string[]): void {
    for (const [key, { counts, sum, count }] of this.entries()) {
      const prefix = key === "" ? "" : `${key},`;
      this.#buckets.forEach((bound, i) => {
        lines.push(`${this.name}_bucket{${prefix}le="${bound}"} ${counts[i]}`);
      });
      lines.push(`${this.name}_bucket{${prefix}le="+Inf"} ${count}`);
      lines.push(`${this.name}_sum${braces(key)} ${sum}`);
      lines.push(`${this.name}_count${braces(key)} ${count}`);
    }
  }
}

/**
 * Reports every label combination's value to `instrument` at each
 * collection. `entries` is the metric's own list, which grows as
 * combinations appear.
 */
function observeValues(
  instrument: Observable,
  entries: readonly [string, { value: number }, Attributes][],
): void {
  instrument.addCallback((result) => {
    for (const [, { value }, attributes] of entries) {
      result.observe(value, attributes);
    }
  });
}

function braces(key: string): string {
  return key === "" ? "" : `{${key}}`;
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll(
    "\n",
    "\\n",
  );
}

function escapeHelp(help: string): string {
  return help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}
