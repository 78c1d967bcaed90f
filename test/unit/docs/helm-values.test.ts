// Every chart value the docs' Kubernetes (docs/deploy.md), scraping and dashboard (docs/metrics.md),
// runbook (docs/runbook.md) and hot-reload (docs/hot-reload.md) sections name (in backticks or in
// `--set` flags) exists in helm/mongo-tenant-proxy/values.yaml, so an operator following the docs
// never sets a key the chart ignores.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const page = (name: string): string => readFileSync(`${root}docs/${name}`, 'utf8');
const values = parse(readFileSync(`${root}helm/mongo-tenant-proxy/values.yaml`, 'utf8')) as Record<string, unknown>;

/** The text of `doc` from `start` up to `end` (or to the end of the page). */
const between = (doc: string, start: string, end?: string): string => {
  const from = doc.indexOf(start);
  expect(from, start).toBeGreaterThanOrEqual(0);
  if (end === undefined) return doc.slice(from);
  const to = doc.indexOf(end, from);
  expect(to, end).toBeGreaterThan(from);
  return doc.slice(from, to);
};

const sections = [
  between(page('deploy.md'), '## Kubernetes (Helm chart)'),
  between(page('metrics.md'), '## Scrape with Prometheus', '## Metrics reference'),
  between(page('metrics.md'), '## Dashboard'),
  page('runbook.md'),
  between(page('hot-reload.md'), 'In Kubernetes the kubelet'),
].join('\n');

/** Dotted names whose first part is a top-level chart value (others are proxy settings, labels…). */
function mentionedValueKeys(): string[] {
  const keys = new Set<string>();
  for (const [, key] of sections.matchAll(/`([A-Za-z][\w.[\]]*)(?:=[^`]*)?`/g)) keys.add(key!);
  for (const [, key] of sections.matchAll(/--set '?([A-Za-z][\w.[\]]*)=/g)) keys.add(key!);
  for (const [, key] of sections.matchAll(/,([A-Za-z][\w.[\]]*)=/g)) keys.add(key!);
  return [...keys].map((key) => key.replace(/\[\d+\]/g, '')).filter((key) => key.split('.')[0]! in values);
}

/** The proxy's configuration schema: what `config.…` (the proxy's YAML in the values) may hold. */
const schema = JSON.parse(readFileSync(`${root}config/schema.json`, 'utf8')) as SchemaNode;
interface SchemaNode {
  properties?: Record<string, SchemaNode>;
}

/**
 * Whether `path` exists; below an empty map or list (labels, secretEnv…) any key may be set, and
 * below `config` the proxy's settings are looked up in its schema.
 */
function exists(path: string): boolean {
  const [first, ...rest] = path.split('.');
  if (first === 'config') {
    let setting: SchemaNode | undefined = schema;
    for (const segment of rest) setting = setting?.properties?.[segment];
    return setting !== undefined;
  }
  let node: unknown = values;
  for (const segment of path.split('.')) {
    if (Array.isArray(node) || (node !== null && typeof node === 'object' && Object.keys(node).length === 0))
      return true;
    if (node === null || typeof node !== 'object' || !(segment in node)) return false;
    node = (node as Record<string, unknown>)[segment];
  }
  return true;
}

describe('chart values named in the docs', () => {
  const keys = mentionedValueKeys();

  it('finds the ones the deploy and scrape sections are about', () => {
    expect(keys).toEqual(
      expect.arrayContaining([
        'image.repository',
        'secretEnv.name',
        'networkPolicy.enabled',
        'tls.secrets',
        'credentials.secretName',
        'serviceMonitor.enabled',
        'podMonitor.selector',
        'prometheusRule.thresholds',
        'prometheusRule.runbookUrl',
        'dashboards.enabled',
        'rollOnConfigChange',
      ]),
    );
  });

  it.each(keys)('%s exists in values.yaml', (key) => {
    expect(exists(key)).toBe(true);
  });
});
