/**
 * Turning a configuration back into text: `print-config` output that `loadConfig` reads
 * again, with secrets masked.
 */

import { stringify } from 'yaml';
import { formatHostPort } from './host-port.js';
import { deepFreeze } from './load.js';
import { configSchema, Formats, isSection, type SchemaNode } from './schema.js';
import { MASK, maskUri } from './secrets.js';
import type { HostPort, ProxyConfig } from './types.js';

function mapWithSchema(value: unknown, node: SchemaNode, leaf: (value: unknown, node: SchemaNode) => unknown): unknown {
  if (isSection(node) && typeof value === 'object' && value !== null && !Array.isArray(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([name, item]) => {
        const child = node.properties[name];
        return [name, child === undefined ? item : mapWithSchema(item, child, leaf)];
      }),
    );
  }
  return leaf(value, node);
}

/** Masks the secret fields of any value shaped by `schema` (URI passwords, write-only fields). */
export function maskWithSchema(value: unknown, schema: SchemaNode = configSchema): unknown {
  return mapWithSchema(value, schema, (item, node) => {
    if (node.writeOnly === true && item !== undefined && item !== null) return MASK;
    if (node.format === Formats.mongodbUri && typeof item === 'string') return maskUri(item);
    return item;
  });
}

/** A deeply frozen copy of the configuration with every secret masked, safe to print or log. */
export function maskSecrets(config: ProxyConfig): ProxyConfig {
  return deepFreeze(maskWithSchema(structuredClone(config)) as ProxyConfig);
}

/** The configuration in file shape (addresses as `host:port`, disabled listeners as `off`). */
export function configToDocument(config: ProxyConfig): Record<string, unknown> {
  return mapWithSchema(config, configSchema, (item, node) => {
    if (node.format === Formats.hostPort || node.format === Formats.hostPortOrOff) {
      return item === null ? 'off' : formatHostPort(item as HostPort);
    }
    return Array.isArray(item) ? [...(item as unknown[])] : item;
  }) as Record<string, unknown>;
}

/** YAML text of the configuration with secrets masked; `loadConfig` reads it back. */
export function formatConfigYaml(config: ProxyConfig): string {
  return stringify(configToDocument(maskSecrets(config)), { lineWidth: 0 });
}
