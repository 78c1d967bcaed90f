/**
 * Turning a configuration back into text: `print-config` output that `loadConfig` reads
 * again, with secrets masked.
 */

import { stringify } from 'yaml';
import { formatHostPort } from './host-port.js';
import { deepFreeze } from './load.js';
import { configSchema, Formats, type SchemaNode } from './schema.js';
import type { HostPort, ProxyConfig } from './types.js';
import { mapWithSchema, maskWithSchema as maskSchemaValue } from './walk.js';

/** Masks the secret fields of any value shaped by `schema` (URI passwords, write-only fields). */
export function maskWithSchema(value: unknown, schema: SchemaNode = configSchema): unknown {
  return maskSchemaValue(value, schema);
}

/** A deeply frozen copy of the configuration with every secret masked, safe to print or log. */
export function maskSecrets(config: ProxyConfig): ProxyConfig {
  return deepFreeze(maskWithSchema(structuredClone(config)) as ProxyConfig);
}

/**
 * The configuration in file shape (addresses as `host:port`, also inside `listeners`; disabled
 * listeners as `off`).
 */
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
