/**
 * Issue 13, catalogue 25: which way the tenancy executor computes collStats sizes, over a fake
 * upstream that records every command: one `$bsonSize` aggregate scoped to the tenant where the
 * probed capability says the upstream has it, the proxy's own sum of the tenant's documents
 * otherwise, and the proxy's sum again when the upstream turns out not to know the expression.
 */
import { describe, expect, it } from 'vitest';
import { calculateObjectSize, type Document } from 'bson';
import { TenancyExecutor } from '../../../src/tenancy/executor.js';
import { CommandFailed, type CommandRunner } from '../../../src/tenancy/runner.js';
import { sharedCollectionContext, TENANCY_SETTINGS } from '../../helpers/tenancy.js';

const SETTINGS = TENANCY_SETTINGS;

const ACME_DOCS: Document[] = [
  { _id: 1, tenantId: 'acme', a: 'x' },
  { _id: 2, tenantId: 'acme', b: [1, 2, 3] },
];

function fakeRunner(options: { bsonSizeFails?: boolean }): CommandRunner & { commands: Document[] } {
  const commands: Document[] = [];
  return {
    commands,
    async run(_db, command) {
      commands.push(command);
      if ('aggregate' in command) {
        if (options.bsonSizeFails === true) throw new CommandFailed(238, 'Expression $bsonSize is not implemented');
        const size = ACME_DOCS.reduce((sum, doc) => sum + calculateObjectSize(doc), 0);
        return { cursor: { id: 0, firstBatch: [{ _id: null, count: ACME_DOCS.length, size }] }, ok: 1 };
      }
      if ('find' in command && command['find'] === 'items')
        return { cursor: { id: 0, firstBatch: ACME_DOCS.map((doc) => ({ ...doc })) }, ok: 1 };
      // The catalogue: nothing recorded.
      return { cursor: { id: 0, firstBatch: [] }, ok: 1 };
    },
  };
}

const context = sharedCollectionContext();

const collStats = { kind: 'collStats', db: 'app', coll: 'items', scale: 1 } as const;
const expectedSize = ACME_DOCS.reduce((sum, doc) => sum + calculateObjectSize(doc), 0);

describe('collStats sizes by capability', () => {
  it('catalogue 25: with $bsonSize: one aggregate scoped to the tenant, bounded, sized upstream; no document read by the proxy', async () => {
    const runner = fakeRunner({});
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => true });
    const reply = await executor.execute(collStats, context);
    expect(reply).toMatchObject({ count: 2, size: expectedSize });
    const aggregate = runner.commands.find((command) => 'aggregate' in command)!;
    expect(aggregate['pipeline']).toEqual([
      { $match: { tenantId: { $eq: 'acme' } } },
      { $limit: 101 },
      { $group: { _id: null, count: { $sum: 1 }, size: { $sum: { $bsonSize: '$$ROOT' } } } },
    ]);
    expect(runner.commands.some((command) => command['find'] === 'items')).toBe(false);
  });

  it('catalogue 25: without $bsonSize: the proxy sums the tenant-filtered documents it reads', async () => {
    const runner = fakeRunner({});
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => false });
    expect(await executor.execute(collStats, context)).toMatchObject({ count: 2, size: expectedSize });
    expect(runner.commands.some((command) => 'aggregate' in command)).toBe(false);
    const find = runner.commands.find((command) => command['find'] === 'items')!;
    expect(find['filter']).toEqual({ tenantId: { $eq: 'acme' } });
  });

  it('catalogue 25: an upstream that does not know $bsonSize after all: the proxy sums instead', async () => {
    const runner = fakeRunner({ bsonSizeFails: true });
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => true });
    expect(await executor.execute(collStats, context)).toMatchObject({ count: 2, size: expectedSize });
    expect(runner.commands.some((command) => command['find'] === 'items')).toBe(true);
  });

  it('catalogue 25: the cost bound on the $bsonSize path: more than statsMaxDocuments is refused', async () => {
    const runner: CommandRunner = {
      async run(_db, command) {
        if ('aggregate' in command) return { cursor: { id: 0, firstBatch: [{ count: 101, size: 5 }] }, ok: 1 };
        return { cursor: { id: 0, firstBatch: [] }, ok: 1 };
      },
    };
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => true });
    await expect(executor.execute(collStats, context)).rejects.toThrow(/tenancy\.stats-cost/);
  });

  it('a command the upstream aborted as a deadlock victim (DocumentDB, concurrent DDL) runs again', async () => {
    const inner = fakeRunner({});
    let deadlocks = 1;
    const runner: CommandRunner = {
      async run(db, command, options) {
        if ('aggregate' in command && deadlocks-- > 0) throw new CommandFailed(1, 'deadlock detected');
        return inner.run(db, command, options);
      },
    };
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, bsonSize: () => true });
    expect(await executor.execute(collStats, context)).toMatchObject({ count: 2, size: expectedSize });
    expect(deadlocks).toBe(-1);
  });
});
