/**
 * The tenant predicate every filter gets (catalogue G4): `{$and: [{<field>: {$eq: T}}, <client>]}`,
 * always, whatever the client filter says; and the tenant value itself, of the configured type
 * (G8: scalar, never null).
 */
import type { TenantValueType } from '../config/types.js';
import { ErrorCodes, ProxyError, PolicyRefusal } from '../errors.js';
import { Long, ObjectId, UUID } from '../wire/bson.js';
import { BsonType } from '../wire/bson-scan.js';
import { arrayOf, byReference, documentOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import type { TenantContext } from '../policy/types.js';

/**
 * Encodes a tenant id as the configured BSON type. Only the canonical spelling of a value is
 * accepted (int64 without leading zeros or "-0", lower-case ObjectId hex, hyphenated lower-case
 * UUID): two different tenant ids must never become the same stored value.
 */
export function encodeTenant(tenant: string, type: TenantValueType): RawValue {
  let canonical: string;
  let value: unknown;
  try {
    switch (type) {
      case 'string':
        if (tenant.length === 0 || tenant.includes('\0')) throw new Error('empty or contains NUL');
        return valueOf(tenant);
      case 'objectId': {
        const id = ObjectId.createFromHexString(tenant);
        canonical = id.toHexString();
        value = id;
        break;
      }
      case 'uuid': {
        const id = new UUID(tenant);
        canonical = id.toHexString(true);
        value = id;
        break;
      }
      case 'int64': {
        if (!/^-?\d{1,19}$/.test(tenant)) throw new Error('not an integer');
        const id = Long.fromString(tenant);
        canonical = id.toString();
        value = id;
        break;
      }
    }
  } catch (error) {
    throw new ProxyError(
      ErrorCodes.BadValue,
      `tenant id cannot be represented as ${type}: ${(error as Error).message}`,
    );
  }
  if (canonical !== tenant) {
    throw new ProxyError(ErrorCodes.BadValue, `tenant id is not in the canonical ${type} form (expected ${canonical})`);
  }
  return valueOf(value);
}

/** `{<field>: {$eq: T}}` */
export function tenantEquality(context: TenantContext): RawValue {
  return documentOf([[context.field, documentOf([['$eq', context.tenantValue]])]]);
}

/**
 * `{$and: [{<field>: {$eq: T}}, <client filter>]}`; a missing filter becomes the tenant predicate
 * alone. A client filter that is not a document is refused (G4).
 */
export function tenantFilter(context: TenantContext, clientFilter: RawValue | undefined, where = 'filter'): RawValue {
  if (clientFilter === undefined || clientFilter.type === BsonType.null || clientFilter.type === BsonType.undefined) {
    return documentOf([['$and', arrayOf([tenantEquality(context)])]]);
  }
  if (clientFilter.type !== BsonType.document) {
    throw new PolicyRefusal('filter.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
  }
  // The client's filter is spliced into the frame, not copied into the array and the document
  // first (a 10 MB filter was two more copies, outside the byte budget: issue 15).
  return documentOf([['$and', arrayOf([tenantEquality(context), byReference(clientFilter)])]]);
}
