/**
 * Issue 12: whether a tenant's unique, TTL or partial index in a shared collection can be built
 * per tenant comes from the upstream's probed capability (src/upstream/capabilities.ts, wired by
 * main), asked at each use; the executor has no probe of its own.
 */
import { describe, expect, it } from 'vitest';
import type { Document } from 'bson';
import type { VirtualOperation } from '../../../src/policy/types.js';
import { TenancyExecutor } from '../../../src/tenancy/executor.js';
import type { CommandRunner } from '../../../src/tenancy/runner.js';
import { sharedCollectionContext, TENANCY_SETTINGS } from '../../helpers/tenancy.js';

const SETTINGS = TENANCY_SETTINGS;

const context = sharedCollectionContext();

/** Records every command; the catalogue and the collection are empty. */
function recordingRunner(): CommandRunner & { commands: Document[] } {
  const commands: Document[] = [];
  return {
    commands,
    async run(_db, command) {
      commands.push(command);
      return { cursor: { id: 0, firstBatch: [] }, ok: 1 };
    },
  };
}

const uniqueIndex: VirtualOperation = {
  kind: 'createIndexes',
  db: 'app',
  coll: 'items',
  indexes: [{ name: 'sku_1', key: { sku: 1 }, options: { unique: true } }],
};

describe('per-tenant indexes follow the probed partialIndexes capability', () => {
  for (const [label, partialIndexes] of [
    ['a fixed value (tests)', false],
    ['the capability, asked at use', () => false],
  ] as const) {
    it(`without partial indexes (${label}): a unique index is refused before anything is written, and nothing is probed`, async () => {
      const runner = recordingRunner();
      const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, partialIndexes });
      await expect(executor.execute(uniqueIndex, context)).rejects.toThrow(/tenancy\.index-per-tenant-unsupported/);
      expect(runner.commands.some((command) => 'createIndexes' in command)).toBe(false);
    });
  }

  it('asks at each use: after a failover to a server that has them, the refusal stops', async () => {
    let partial = false;
    const runner = recordingRunner();
    const executor = new TenancyExecutor({ runner, settings: () => SETTINGS, partialIndexes: () => partial });
    await expect(executor.execute(uniqueIndex, context)).rejects.toThrow(/index-per-tenant-unsupported/);
    partial = true;
    const outcome = await executor.execute(uniqueIndex, context).catch((error: unknown) => error);
    expect(String(outcome)).not.toMatch(/index-per-tenant-unsupported/);
    // Never the executor's former scratch index in the catalogue database.
    expect(runner.commands.some((command) => command['createIndexes'] === 'probe')).toBe(false);
  });
});
