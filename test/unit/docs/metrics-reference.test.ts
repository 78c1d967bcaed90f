// The metrics reference (docs/metrics.md) lists exactly the metric families a fresh ProxyMetrics registry
// exposes, each with its type and label names, plus every Node.js process metric by name.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { METRIC_PREFIX, ProxyMetrics } from '../../../src/observability/metrics.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const page = readFileSync(`${root}docs/metrics.md`, 'utf8');
const section = page.slice(page.indexOf('## Metrics reference'), page.indexOf('## Dashboard'));

interface Row {
  type: string;
  labels: string[];
  meaning: string;
}

/** `| \`name\` | type | \`a\`, \`b\` | meaning |` rows of the reference table. */
function tableRows(): Map<string, Row> {
  const rows = new Map<string, Row>();
  for (const line of section.split('\n')) {
    const match = /^\| `([a-z0-9_]+)` \| (\w+) \|([^|]*)\| (.+) \|$/.exec(line);
    if (match === null) continue;
    expect(rows.has(match[1]!), `${match[1]} listed twice`).toBe(false);
    const labels = [...match[3]!.matchAll(/`([a-z_]+)`/g)].map((label) => label[1]!);
    rows.set(match[1]!, { type: match[2]!, labels, meaning: match[4]!.trim() });
  }
  return rows;
}

interface Family {
  type: string;
  labels: string[];
}

async function ownFamilies(): Promise<Map<string, Family>> {
  const metrics = new ProxyMetrics({ processMetrics: false });
  const families = new Map<string, Family>();
  const types = new Map((await metrics.registry.getMetricsAsJSON()).map((metric) => [metric.name, `${metric.type}`]));
  for (const metric of metrics.registry.getMetricsAsArray()) {
    const labels = (metric as unknown as { labelNames: string[] }).labelNames;
    families.set(metric.name, { type: types.get(metric.name)!, labels: [...labels] });
  }
  return families;
}

describe('docs/metrics.md metrics reference', () => {
  it('lists exactly the families the registry exposes, with their type and labels', async () => {
    const rows = tableRows();
    const families = await ownFamilies();
    expect([...rows.keys()].sort()).toEqual([...families.keys()].sort());
    for (const [name, family] of families) {
      const row = rows.get(name)!;
      expect({ name, type: row.type, labels: row.labels }).toEqual({ name, type: family.type, labels: family.labels });
      expect(row.meaning.length, `${name} has no meaning`).toBeGreaterThan(10);
    }
  });

  it('names every Node.js process metric', async () => {
    const own = await ownFamilies();
    const all = new ProxyMetrics();
    const processFamilies = (await all.registry.getMetricsAsJSON())
      .map((metric) => metric.name)
      .filter((name) => !own.has(name));
    expect(processFamilies.length).toBeGreaterThan(10);
    for (const name of processFamilies) expect(section, name).toContain(`\`${name.slice(METRIC_PREFIX.length)}\``);
  });
});
