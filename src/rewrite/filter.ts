/**
 * The tenant predicate every filter gets (catalogue G4): `{$and: [{<field>: {$eq: T}}, <client>]}`,
 * always, whatever the client filter says; and the tenant value itself, of the configured type
 * (G8: scalar, never null).
 */
import type { TenantValueType } from '../config/types.js';
import { ErrorCodes, ProxyError } from '../errors.js';
import { Long, ObjectId, UUID } from '../wire/bson.js';
import { BsonType } from '../wire/bson-scan.js';
import { arrayOf, documentOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import { PolicyRefusal, type TenantContext } from './types.js';

/** Encodes a tenant id as the configured BSON type; a tenant that cannot be one is refused. */
export function encodeTenant(tenant: string, type: TenantValueType): RawValue {
  try {
    switch (type) {
      case 'string':
        if (tenant.length === 0 || tenant.includes('\0')) throw new Error('empty or NUL');
        return valueOf(tenant);
      case 'objectId':
        if (!/^[0-9a-f]{24}$/i.test(tenant)) throw new Error('not 24 hex digits');
        return valueOf(ObjectId.createFromHexString(tenant));
      case 'uuid':
        return valueOf(new UUID(tenant));
      case 'int64':
        if (!/^-?\d{1,19}$/.test(tenant)) throw new Error('not an integer');
        return valueOf(Long.fromString(tenant));
    }
  } catch (error) {
    throw new ProxyError(ErrorCodes.BadValue, `tenant id cannot be represented as ${type}: ${(error as Error).message}`);
  }
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
  return documentOf([['$and', arrayOf([tenantEquality(context), clientFilter])]]);
}
