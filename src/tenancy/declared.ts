/**
 * Operator-declared shared indexes (isolation.tenancy.sharedIndexes): always tenant-prefixed, so
 * a declared unique index is unique within each tenant, for every tenant. Created when the proxy
 * starts and by `mongo-tenant-proxy ensure-indexes`; creating an existing one is a no-op upstream.
 */
import type { DeclaredIndex } from '../config/types.js';
import type { CommandRunner } from './runner.js';
import { declaredKey } from './indexes.js';

export interface EnsuredIndex {
  namespace: string;
  name: string;
  /** The upstream's error message when the index could not be created. */
  error?: string;
}

export async function ensureDeclaredIndexes(
  runner: CommandRunner,
  indexes: readonly DeclaredIndex[],
  tenantField: string,
): Promise<EnsuredIndex[]> {
  const results: EnsuredIndex[] = [];
  for (const index of indexes) {
    const dot = index.namespace.indexOf('.');
    const db = index.namespace.slice(0, dot);
    const coll = index.namespace.slice(dot + 1);
    const spec = {
      key: { [tenantField]: 1, ...declaredKey(index.key) },
      name: index.name,
      ...(index.unique ? { unique: true } : {}),
    };
    try {
      await runner.run(db, { createIndexes: coll, indexes: [spec] });
      results.push({ namespace: index.namespace, name: index.name });
    } catch (error) {
      results.push({ namespace: index.namespace, name: index.name, error: (error as Error).message });
    }
  }
  return results;
}
