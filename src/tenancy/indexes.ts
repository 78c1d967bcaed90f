/**
 * Index specifications as tenants see them and as they are upstream: canonical comparison,
 * the mechanism an index needs, and injective physical names.
 *
 * - Non-unique indexes: one physical index `{<tenantField>: 1, ...key}` per distinct (key,
 *   options), named `mtp_s_<hash of key and options>`, shared by every tenant that asks.
 * - Indexes that constrain, delete or cover a subset (unique, expireAfterSeconds,
 *   partialFilterExpression): one per tenant, `{<tenantField>: 1, ...key}` with
 *   `partialFilterExpression: {<tenantField>: {$eq: T}}` merged with the client's, named
 *   `mtp_t_<hash of tenant, namespace and client name>`. SHA-256 prefixes of 96 bits: collisions
 *   are not a practical concern, and the catalogue record (keyed by physical name) would show one.
 */
import { createHash } from 'node:crypto';
import { EJSON, type Document } from '../wire/bson.js';
import type { VirtualIndexSpec } from '../policy/types.js';
import type { DeclaredIndex } from '../config/types.js';

/** Options whose value `false` means the same as leaving them out. */
const FALSE_IS_DEFAULT: ReadonlySet<string> = new Set(['unique', 'sparse', 'hidden']);

/** Key and options, normalised: key order kept, option order sorted, defaults dropped. */
export function canonicalSpec(key: Document, options: Document): string {
  const sorted: Document = {};
  for (const name of Object.keys(options).sort()) {
    if (FALSE_IS_DEFAULT.has(name) && options[name] === false) continue;
    sorted[name] = options[name];
  }
  return EJSON.stringify({ key: Object.entries(key), options: sorted }, { relaxed: false });
}

export function parseSpec(spec: string): { key: Document; options: Document } {
  const parsed = EJSON.parse(spec, { relaxed: false }) as { key: [string, unknown][]; options: Document };
  return { key: Object.fromEntries(parsed.key), options: parsed.options };
}

/** Same key pattern (order and values), whatever the options. */
export function sameKey(a: string, b: string): boolean {
  return EJSON.stringify(parseSpec(a).key, { relaxed: true }) === EJSON.stringify(parseSpec(b).key, { relaxed: true });
}

/** Unique, TTL and partial indexes act on documents (constrain, delete, cover a subset): one per tenant. */
export function needsPerTenantIndex(options: Document): boolean {
  return options['unique'] === true || 'expireAfterSeconds' in options || 'partialFilterExpression' in options;
}

function hash(...parts: string[]): string {
  const digest = createHash('sha256');
  for (const part of parts) digest.update(`${Buffer.byteLength(part)}:${part}`);
  return digest.digest('hex').slice(0, 24);
}

export function sharedPhysicalName(canonical: string): string {
  return `mtp_s_${hash(canonical)}`;
}

export function tenantPhysicalName(tenant: string, db: string, coll: string, name: string): string {
  return `mtp_t_${hash(tenant, db, coll, name)}`;
}

/** The specification sent upstream for a tenant's index. */
export function physicalSpec(
  spec: VirtualIndexSpec,
  physical: string,
  field: string,
  tenantValue: unknown,
  perTenant: boolean,
): Document {
  const out: Document = { key: { [field]: 1, ...spec.key }, name: physical };
  for (const [name, value] of Object.entries(spec.options)) {
    if (name === 'partialFilterExpression') continue;
    out[name] = value;
  }
  if (perTenant) {
    const own = spec.options['partialFilterExpression'] as Document | undefined;
    const scope = { [field]: { $eq: tenantValue } };
    out['partialFilterExpression'] = own === undefined ? scope : { $and: [scope, own] };
  }
  return out;
}

/** A declared index as the client-side spec tenants compare theirs with. */
export function declaredSpec(index: DeclaredIndex): {
  name: string;
  canonical: string;
  key: Document;
  options: Document;
} {
  const options: Document = index.unique ? { unique: true } : {};
  const key = declaredKey(index.key);
  return { name: index.name, canonical: canonicalSpec(key, options), key, options };
}

/** `["email", "-createdAt", "loc:2dsphere"]` → `{email: 1, createdAt: -1, loc: '2dsphere'}`. */
export function declaredKey(fields: readonly string[]): Document {
  const key: Document = {};
  for (const field of fields) {
    const colon = field.lastIndexOf(':');
    if (colon > 0) key[field.slice(0, colon)] = field.slice(colon + 1);
    else if (field.startsWith('-')) key[field.slice(1)] = -1;
    else key[field] = 1;
  }
  return key;
}
