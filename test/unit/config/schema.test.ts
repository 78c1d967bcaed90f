import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { describe, expect, it } from 'vitest';
import {
  configSchema,
  defaultConfig,
  envNameOf,
  loadConfig,
  schemaFields,
  type SchemaNode,
} from '../../../src/config/index.js';

const root = (path: string): string => fileURLToPath(new URL(`../../../${path}`, import.meta.url));
const SCHEMA_JSON = root('config/schema.json');
const EXAMPLE_YAML = root('config/example.yaml');

describe('config/schema.json', () => {
  it('is the exported schema, written out', () => {
    const expected = `${JSON.stringify(configSchema, null, 2)}\n`;
    // Regenerate with: UPDATE_CONFIG_SCHEMA=1 npx vitest run test/unit/config/schema.test.ts
    if (process.env['UPDATE_CONFIG_SCHEMA'] === '1') writeFileSync(SCHEMA_JSON, expected);
    const written = JSON.parse(readFileSync(SCHEMA_JSON, 'utf8')) as unknown;
    expect(written, 'config/schema.json is stale: run UPDATE_CONFIG_SCHEMA=1 npx vitest run test/unit/config/schema.test.ts').toEqual(
      JSON.parse(expected),
    );
  });
});

describe('the schema', () => {
  const objects: [string, SchemaNode][] = [];
  const walk = (node: SchemaNode, path: string): void => {
    if (node.type === 'object' || (Array.isArray(node.type) && node.type.includes('object'))) objects.push([path || '(root)', node]);
    for (const [name, child] of Object.entries(node.properties ?? {})) walk(child, path ? `${path}.${name}` : name);
    if (node.items) walk(node.items, `${path}[]`);
  };
  walk(configSchema, '');

  it.each(objects)('%s rejects unknown keys', (_path, node) => {
    expect(node.additionalProperties).toBe(false);
  });

  it.each(schemaFields().map((field) => [field.path.join('.'), field.node] as const))(
    '%s has a description and a default',
    (_path, node) => {
      expect(node.description?.length).toBeGreaterThan(10);
      expect(node).toHaveProperty('default');
    },
  );

  it('gives every field a distinct environment variable', () => {
    const names = schemaFields().map((field) => envNameOf(field.path));
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain('MTP_UPSTREAM__CONNECT_TIMEOUT_MS');
    expect(names).toContain('MTP_LIMITS__MAX_MESSAGE_SIZE_BYTES');
    expect(names).toContain('MTP_LISTENERS');
    expect(names).toContain('MTP_IDENTITY__CERTIFICATE_RULES');
    expect(names).toContain('MTP_IDENTITY__PASSTHROUGH__RULES');
    expect(names).toContain('MTP_IDENTITY__FAILURE_DELAY__BASE_MS');
    expect(names).toContain('MTP_IDENTITY__JWT__CLOCK_TOLERANCE_SECONDS');
  });

  it('describes every property of list items and TLS', () => {
    const listener = configSchema.properties?.['listeners']?.items;
    const tls = listener?.properties?.['tls'];
    for (const node of [listener, tls]) {
      for (const [name, child] of Object.entries(node?.properties ?? {})) {
        expect(child.description?.length, name).toBeGreaterThan(10);
      }
    }
    expect(tls?.properties?.['keyPassphrase']?.writeOnly).toBe(true);
  });
});

describe('config/example.yaml', () => {
  it('loads and equals the defaults', () => {
    expect(loadConfig({ file: EXAMPLE_YAML, env: {} })).toEqual(defaultConfig());
  });

  it('sets every option, each with a comment right above it', () => {
    const doc = parseDocument(readFileSync(EXAMPLE_YAML, 'utf8'));
    const lines = readFileSync(EXAMPLE_YAML, 'utf8').split('\n');
    for (const { path } of schemaFields()) {
      expect(doc.hasIn(path), `example.yaml lacks ${path.join('.')}`).toBe(true);
      const index = keyLineOf(lines, path);
      expect(lines[index - 1]?.trim().startsWith('#'), `no comment above ${path.join('.')}`).toBe(true);
    }
  });

  // Lists of mappings are one field each (their items have no environment variable of their
  // own), so the test above cannot see an item property or a choice the example never mentions.
  it('documents every property and every choice of list items next to their list', () => {
    const lines = readFileSync(EXAMPLE_YAML, 'utf8').split('\n');
    const listsOfMappings = schemaFields().filter(({ node }) => node.items?.properties !== undefined);
    expect(listsOfMappings.map(({ path }) => path.join('.'))).toEqual(
      expect.arrayContaining(['listeners', 'identity.certificateRules', 'identity.passthrough.rules', 'isolation.namespaces']),
    );
    for (const { path, node } of listsOfMappings) {
      const block = exampleBlockOf(lines, path);
      for (const [property, child] of itemProperties(node.items!)) {
        expect(block, `example.yaml does not mention ${path.join('.')}[].${property}`).toMatch(new RegExp(`(^|[\\s{,#-])${property}\\b`));
        for (const choice of child.enum ?? []) {
          if (choice === null) continue;
          expect(block, `example.yaml does not mention ${path.join('.')}[].${property}: ${String(choice)}`).toContain(String(choice));
        }
      }
    }
  });
});

/** The line of the key at `path`: each segment at the next indentation level, after its parent. */
function keyLineOf(lines: string[], path: readonly string[]): number {
  let index = -1;
  path.forEach((segment, depth) => {
    const pattern = new RegExp(`^${' '.repeat(depth * 2)}${segment}:`);
    index = lines.findIndex((line, i) => i > index && pattern.test(line));
  });
  expect(index, `no line for ${path.join('.')}`).toBeGreaterThan(0);
  return index;
}

/** Every property of a list item by name, those of nested objects (a listener's tls) included. */
function itemProperties(node: SchemaNode): [string, SchemaNode][] {
  return Object.entries(node.properties ?? {}).flatMap(([name, child]): [string, SchemaNode][] => [[name, child], ...itemProperties(child)]);
}

/**
 * The example's text about the field at `path`: the comment right above its key and everything
 * below it (values, commented-out examples) up to the next key at the same or a lower level.
 */
function exampleBlockOf(lines: string[], path: readonly string[]): string {
  const index = keyLineOf(lines, path);
  const indent = (path.length - 1) * 2;
  const isKeyAtOrAbove = (line: string): boolean => {
    const match = /^( *)[A-Za-z]/.exec(line);
    return match !== null && match[1]!.length <= indent;
  };
  let start = index;
  while (start > 0 && lines[start - 1]!.trim().startsWith('#')) start -= 1;
  let end = index + 1;
  while (end < lines.length && !isKeyAtOrAbove(lines[end]!)) end += 1;
  return lines.slice(start, end).join('\n');
}
