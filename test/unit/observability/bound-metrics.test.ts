/** The bound series read out exactly as prom-client's own metrics would with the same updates (issue 16). */
import { describe, expect, it } from 'vitest';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { BatchedSeries, BoundHistogram } from '../../../src/observability/bound-metrics.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVATIONS: Array<[string, string, number]> = [
  ['find', 'ok', 0.0005],
  ['find', 'ok', 0.001],
  ['find', 'ok', 0.05],
  ['insert', 'denied', 3],
  ['find', 'ok', 1],
  ['insert', 'denied', 0],
];

describe('BoundHistogram', () => {
  it('reads out like a prom-client Histogram (text and JSON)', async () => {
    const theirs = new Registry();
    const ours = new Registry();
    const reference = new Histogram({
      name: 'h',
      help: 'help',
      labelNames: ['command', 'outcome'],
      buckets: BUCKETS,
      registers: [theirs],
    });
    const bound = new BoundHistogram({
      name: 'h',
      help: 'help',
      labelNames: ['command', 'outcome'] as const,
      buckets: BUCKETS,
      registers: [ours],
    });
    for (const [command, outcome, value] of OBSERVATIONS) {
      reference.observe({ command, outcome }, value);
      bound.series(`${command}\0${outcome}`, () => ({ command, outcome })).observe(value);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.getMetricsAsJSON()).toEqual(await theirs.getMetricsAsJSON());
    ours.resetMetrics();
    theirs.resetMetrics();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});

describe('BatchedSeries', () => {
  it('hands counters and gauges what was added, whenever they are read', async () => {
    const theirs = new Registry();
    const ours = new Registry();
    const counterSeries = new BatchedSeries<'command'>();
    const gaugeSeries = new BatchedSeries<'tenant'>();
    const referenceCounter = new Counter({ name: 'c', help: 'h', labelNames: ['command'], registers: [theirs] });
    const referenceGauge = new Gauge({ name: 'g', help: 'h', labelNames: ['tenant'], registers: [theirs] });
    counterSeries.bind(
      new Counter({
        name: 'c',
        help: 'h',
        labelNames: ['command'],
        registers: [ours],
        collect: () => counterSeries.flush(),
      }),
    );
    gaugeSeries.bind(
      new Gauge({
        name: 'g',
        help: 'h',
        labelNames: ['tenant'],
        registers: [ours],
        collect: () => gaugeSeries.flush(),
      }),
    );
    for (let round = 0; round < 3; round++) {
      for (const command of ['find', 'insert', 'find']) {
        referenceCounter.inc({ command });
        counterSeries.series(command, () => ({ command })).pending++;
      }
      // A gauge that went up and down again shows its 0.
      referenceGauge.inc({ tenant: 'acme' });
      referenceGauge.dec({ tenant: 'acme' });
      gaugeSeries.series('acme', () => ({ tenant: 'acme' })).pending++;
      gaugeSeries.series('acme', () => ({ tenant: 'acme' })).pending--;
      referenceGauge.inc({ tenant: 'bob' });
      gaugeSeries.series('bob', () => ({ tenant: 'bob' })).pending++;
      expect(await ours.metrics()).toBe(await theirs.metrics());
    }
  });
});
