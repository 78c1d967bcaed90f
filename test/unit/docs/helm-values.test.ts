// Every chart value the README's Kubernetes, scraping, runbook and hot-reload sections name (in
// backticks or in `--set` flags) exists in helm/mongo-tenant-proxy/values.yaml, so an operator
// following the README never sets a key the chart ignores.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const readme = readFileSync(`${root}README.md`, 'utf8');
const values = parse(readFileSync(`${root}helm/mongo-tenant-proxy/values.yaml`, 'utf8')) as Record<string, unknown>;

const between = (start: string, end: string): string => {
  const from = readme.indexOf(start);
  const to = readme.indexOf(end, from);
  expect(from, start).toBeGreaterThanOrEqual(0);
  expect(to, end).toBeGreaterThan(from);
  return readme.slice(from, to);
};

const sections = [
  between('### Kubernetes (Helm chart)', '## Tests'),
  between('### Scrape with Prometheus', '### Metrics reference'),
  between('### Dashboard', '## Logs and audit'),
  between('In Kubernetes the kubelet', '## How the proxy presents itself'),
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

describe('chart values named in the README', () => {
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
