/** Fixtures shared by the tenancy executor's unit tests (test/unit/tenancy). */
import { encodeTenant } from '../../src/rewrite/filter.js';
import { createNamespaceResolver } from '../../src/policy/namespaces.js';
import type { TenantContext } from '../../src/policy/types.js';
import type { TenancyConfig } from '../../src/config/types.js';
import { isolationConfig } from './config.js';

/** Tenancy settings with small, round limits (the defaults' shape). */
export const TENANCY_SETTINGS: TenancyConfig = {
  virtualDdl: true,
  catalogueDatabase: 'mtp_catalogue',
  indexesPerTenant: 16,
  indexReserve: 8,
  maxIndexesPerCollection: 64,
  deleteBatchSize: 1000,
  statsMaxDocuments: 100,
  sharedIndexes: [],
};

/** The context of tenant `acme` (string tenant field `tenantId`) in the shared-collection model. */
export function sharedCollectionContext(): TenantContext {
  return {
    tenant: 'acme',
    tenantValue: encodeTenant('acme', 'string'),
    field: 'tenantId',
    namespaces: createNamespaceResolver(isolationConfig({ defaultModel: 'shared-collection' }), 'acme'),
    maxTimeMS: 1000,
    pinSimpleCollation: false,
  };
}
