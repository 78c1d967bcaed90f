/**
 * Walking a value alongside the schema that shapes it: sections, list items and optional
 * objects (a listener's `tls`) alike. Used to mask secrets wherever they sit (print-config,
 * error messages) and to turn a configuration back into file form.
 */

import { Formats, objectProperties, type SchemaNode } from './schema.js';
import { MASK, maskUri } from '../secrets.js';

/**
 * Rebuilds `value`, calling `leaf` for every value whose node is neither an object with
 * properties nor a list of such objects. Keys the schema does not know are kept as they are.
 */
export function mapWithSchema(value: unknown, node: SchemaNode, leaf: (value: unknown, node: SchemaNode) => unknown): unknown {
  const properties = objectProperties(node);
  if (properties !== undefined && typeof value === 'object' && value !== null && !Array.isArray(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([name, item]) => {
        const child = properties[name];
        return [name, child === undefined ? item : mapWithSchema(item, child, leaf)];
      }),
    );
  }
  const items = node.items;
  if (Array.isArray(value) && items !== undefined && objectProperties(items) !== undefined) {
    return value.map((item: unknown) => mapWithSchema(item, items, leaf));
  }
  return leaf(value, node);
}

/** Masks the secret fields of any value shaped by `schema` (URI passwords, write-only fields). */
export function maskWithSchema(value: unknown, schema: SchemaNode): unknown {
  return mapWithSchema(value, schema, (item, node) => {
    if (node.writeOnly === true && item !== undefined && item !== null) return MASK;
    if (node.format === Formats.mongodbUri && typeof item === 'string') return maskUri(item);
    return item;
  });
}
