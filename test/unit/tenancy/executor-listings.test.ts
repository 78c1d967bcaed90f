/**
 * Issue 13 / 15, catalogue 24: listDatabases in the shared model looks for documents written
 * before the proxy (databases the catalogue does not tie to the tenant) with a bounded number of
 * upstream commands, whatever the number of databases on the cluster: one tenant's listing must
 * not make the proxy scan every collection of every tenant.
 */
import { describe, expect, it } from 'vitest';
import type { Document } from 'bson';
import { TenancyExecutor } from '../../../src/tenancy/executor.js';
import type { CommandRunner } from '../../../src/tenancy/runner.js';
import { sharedCollectionContext, TENANCY_SETTINGS } from '../../helpers/tenancy.js';

const SETTINGS = TENANCY_SETTINGS;

const context = sharedCollectionContext();

/** A cluster of `databases` databases of 5 collections each; acme holds documents in `holding`. */
function cluster(databases: number, holding: ReadonlySet<string>): CommandRunner & { probes: () => number } {
  let probes = 0;
  const names = Array.from({ length: databases }, (_, i) => `db${String(i).padStart(4, '0')}`);
  return {
    probes: () => probes,
    async run(db, command: Document) {
      if ('listDatabases' in command) return { databases: names.map((name) => ({ name })), ok: 1 };
      if (db === SETTINGS.catalogueDatabase) return { cursor: { id: 0, firstBatch: [] }, ok: 1 };
      probes += 1;
      if ('listCollections' in command)
        return { cursor: { id: 0, firstBatch: ['a', 'b', 'c', 'd', 'e'].map((name) => ({ name })) }, ok: 1 };
      if ('find' in command) {
        const hit = holding.has(`${db}.${String(command['find'])}`);
        return { cursor: { id: 0, firstBatch: hit ? [{ _id: 1 }] : [] }, ok: 1 };
      }
      return { ok: 1 };
    },
  };
}

const listDatabases = { kind: 'listDatabases', filter: undefined, nameOnly: true } as const;

describe('listDatabases: documents written before the proxy', () => {
  it('catalogue 24: a database where the tenant holds documents is listed', async () => {
    const runner = cluster(10, new Set(['db0003.c', 'db0007.e']));
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => true });
    const reply = await executor.execute(listDatabases, context);
    expect(reply['databases']).toEqual([{ name: 'db0003' }, { name: 'db0007' }]);
  });

  it('a cluster of 2,000 databases costs one listing a bounded number of upstream commands', async () => {
    const runner = cluster(2_000, new Set(['db0001.a']));
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => true });
    const reply = await executor.execute(listDatabases, context);
    expect(reply['databases']).toEqual([{ name: 'db0001' }]);
    // 2,000 x (1 listCollections + 5 finds) = 12,000 without the bound.
    expect(runner.probes()).toBeLessThanOrEqual(256 + 4);
  });
});
