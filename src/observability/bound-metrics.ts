/**
 * Metric series bound once per label set (issue 16). prom-client hashes the label object on every
 * `inc`/`observe` (a sort, a string build, a validation), which costs more than the rest of a
 * small command's metrics together; the per-command series here are looked up once per label set
 * and then updated as plain numbers.
 *
 * - `BatchedSeries`: counters and gauges stay prom-client metrics; what was added since the last
 *   read is handed to them (one `inc` per series) from their `collect`, i.e. whenever they are
 *   read: a scrape, `getMetricsAsJSON`, `getSingleMetricAsString`.
 * - `BoundHistogram`: a histogram family of its own, registered in the same registry, that reads
 *   out exactly like prom-client's (same sample names, label order, cumulative buckets).
 *
 * Label values must already be bounded by the caller (BoundedLabel): a series is kept per
 * distinct label set. The caches are capped all the same.
 */
import type { Counter, Gauge, Registry } from 'prom-client';

/** Series kept per family before the least recent are forgotten (their counts are kept: see each class). */
const MAX_SERIES = 10_000;

/** One label set of a counter or gauge: add to `pending`; it reaches prom-client when the metric is read. */
export interface PendingSeries {
  pending: number;
}

interface BatchedEntry<L extends string> extends PendingSeries {
  readonly labels: Partial<Record<L, string>>;
  /** Handed to prom-client at least once (a gauge that went up and down again still shows its 0). */
  shown: boolean;
}

/** One sample as prom-client's registry reads it. */
interface Sample {
  metricName: string;
  labels: Record<string, string | number>;
  /** The series' labels (prom-client's registry writes them after `labels`). */
  sharedLabels?: Record<string, string>;
  value: number;
  /** prom-client's: null on buckets (no exemplars here), undefined on sum and count. */
  exemplar: null | undefined;
}

/** A family as prom-client's registry reads it. */
interface Readout {
  name: string;
  help: string;
  type: 'histogram';
  values: Sample[];
  aggregator: 'sum';
}

export class BatchedSeries<L extends string> {
  readonly #series = new Map<string, BatchedEntry<L>>();
  #metric: Counter<L> | Gauge<L> | undefined;
  /** Bumped whenever series are forgotten: a caller holding one (see `series`) must look it up again. */
  generation = 0;

  /** Set once the metric exists (its `collect` calls `flush`). */
  bind(metric: Counter<L> | Gauge<L>): void {
    this.#metric = metric;
  }

  /** The series of `labels`, identified by `key` (the caller's join of the label values). */
  series(key: string, labels: () => Partial<Record<L, string>>): PendingSeries {
    let entry = this.#series.get(key);
    if (entry === undefined) {
      if (this.#series.size >= MAX_SERIES) this.flush(true);
      entry = { labels: labels(), pending: 0, shown: false };
      this.#series.set(key, entry);
    }
    return entry;
  }

  /** Hands what was added to prom-client; `forget`: the series are dropped too (their totals live on there). */
  flush(forget = false): void {
    const metric = this.#metric;
    if (metric === undefined) return;
    for (const entry of this.#series.values()) {
      if (entry.pending !== 0 || !entry.shown) {
        const delta = entry.pending;
        entry.pending = 0;
        entry.shown = true;
        metric.inc(entry.labels, delta);
      }
    }
    if (forget) {
      this.#series.clear();
      this.generation++;
    }
  }
}

/** One label set of a histogram. */
export class HistogramSeries {
  /** Observations per bucket (not cumulative); the last one counts those above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const { bounds } = this;
    let index = 0;
    while (index < bounds.length && value > bounds[index]!) index++;
    this.counts[index]!++;
    this.sum += value;
    this.count++;
  }
}

export interface BoundHistogramOptions<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  buckets: readonly number[];
  registers: Registry[];
}

/** A histogram family whose series are bound once; read out like prom-client's Histogram. */
export class BoundHistogram<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly labelNames: readonly L[];
  private readonly bounds: readonly number[];
  #series = new Map<string, HistogramSeries>();
  /** Bumped when the series are dropped (`reset`): a caller holding one must look it up again. */
  generation = 0;

  constructor(options: BoundHistogramOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames;
    this.bounds = [...options.buckets].sort((a, b) => a - b);
    // The registry only calls get()/getForPromString()/reset(): any object with them can be registered.
    for (const registry of options.registers) registry.registerMetric(this as never);
  }

  /**
   * The series of `labels`, identified by `key` (the caller's join of the label values). Past
   * MAX_SERIES distinct keys, new label sets share one series per key anyway: label values are
   * bounded by the caller, so this cap is a guard, not a policy.
   */
  series(key: string, labels: () => Record<L, string>): HistogramSeries {
    let series = this.#series.get(key);
    if (series === undefined) {
      series = new HistogramSeries(labels(), this.bounds);
      if (this.#series.size < MAX_SERIES) this.#series.set(key, series);
    }
    return series;
  }

  /** Like prom-client's: labels of the bucket samples are `le` first, then the series' own. */
  getForPromString(): Promise<Readout> {
    const values: Sample[] = [];
    for (const series of this.#series.values()) {
      let cumulative = 0;
      this.bounds.forEach((bound, index) => {
        cumulative += series.counts[index]!;
        values.push(sample(`${this.name}_bucket`, { le: bound }, cumulative, series.labels, null));
      });
      values.push(sample(`${this.name}_bucket`, { le: '+Inf' }, series.count, series.labels, null));
      values.push(sample(`${this.name}_sum`, {}, series.sum, series.labels));
      values.push(sample(`${this.name}_count`, {}, series.count, series.labels));
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator });
  }

  /** For getMetricsAsJSON: each sample's labels with the series' labels merged in. */
  async get(): Promise<Readout> {
    const data = await this.getForPromString();
    data.values = data.values.map(({ sharedLabels, labels, ...rest }) => ({
      ...rest,
      labels: { ...labels, ...sharedLabels },
    }));
    return data;
  }

  reset(): void {
    this.#series = new Map();
    this.generation++;
  }
}

function sample(
  metricName: string,
  labels: Record<string, string | number>,
  value: number,
  sharedLabels: Record<string, string>,
  exemplar: null | undefined = undefined,
): Sample {
  return { labels, sharedLabels, value, metricName, exemplar };
}
