/**
 * Issue 13: index budget and reserve slots (src/tenancy/catalogue.ts) when the operator lowers a
 * capacity while slots numbered above it are held: counted by slots held, not by slot number,
 * and still atomic when replicas claim at once (a fake store with the catalogue's unique `_id`
 * and `holder`, answering each command after a random delay so claims interleave).
 */
import { describe, expect, it } from 'vitest';
import { SlotStore, slotBound, type SlotRecord } from '../../../src/tenancy/catalogue.js';
import { CommandFailed, type CommandRunner } from '../../../src/tenancy/runner.js';
import type { Document } from '../../../src/wire/bson.js';

const slots = (...numbers: number[]) => numbers.map((n) => ({ n }));

describe('slotBound', () => {
  it('is the capacity while the slots held are numbered below it', () => {
    expect(slotBound(4, slots())).toBe(4);
    expect(slotBound(4, slots(0, 2))).toBe(4);
    expect(slotBound(0, slots())).toBe(0);
    expect(slotBound(-2, slots())).toBe(0);
  });

  it('counts slots held above a lowered capacity: no new slot while as many as the capacity are held', () => {
    // Budget lowered from 5 to 3: 0..4 held, or 0, 2, 4 (1 and 3 released) - full either way.
    expect(slotBound(3, slots(0, 1, 2, 3, 4))).toBe(0);
    expect(slotBound(3, slots(0, 2, 4))).toBe(1); // [0, 1): slot 0, held
    // 2 and 4 held: one more, numbered 0, and then none.
    expect(slotBound(3, slots(2, 4))).toBe(1);
    expect(slotBound(3, slots(0, 2, 4)) - slots(0, 2, 4).filter((slot) => slot.n < 1).length).toBe(0);
    expect(slotBound(3, slots(7))).toBe(2);
  });
});

/** The catalogue's `slots` collection in memory: unique `_id` and unique `holder`, answered after a random delay. */
function fakeStore(): { runner: CommandRunner; held: Map<string, SlotRecord> } {
  const held = new Map<string, SlotRecord>();
  const pause = () => new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 3)));
  const runner: CommandRunner = {
    async run(_db: string, command: Document): Promise<Document> {
      await pause();
      if (command['insert'] === 'slots') {
        const doc = (command['documents'] as SlotRecord[])[0]!;
        if (held.has(doc._id) || [...held.values()].some((slot) => slot.holder === doc.holder))
          throw new CommandFailed(11000, 'E11000 duplicate key');
        held.set(doc._id, doc);
        return { ok: 1, n: 1 };
      }
      if (command['find'] === 'slots') {
        const filter = command['filter'] as { scope?: string; holder?: string };
        const found = [...held.values()].filter(
          (slot) =>
            (filter.scope === undefined || slot.scope === filter.scope) &&
            (filter.holder === undefined || slot.holder === filter.holder),
        );
        return { ok: 1, cursor: { id: 0, firstBatch: found } };
      }
      throw new Error(`unexpected command ${JSON.stringify(command)}`);
    },
  };
  return { runner, held };
}

describe('SlotStore.claim with a lowered capacity', () => {
  it('never lets a scope hold more slots than the capacity, however replicas interleave', async () => {
    for (let round = 0; round < 40; round += 1) {
      const { runner, held } = fakeStore();
      const store = new SlotStore(runner, 'cat');
      const scope = 'scope';
      // Slots held from when the capacity was 8, some released since.
      const before = [0, 1, 2, 3, 4, 5, 6, 7].filter(() => Math.random() < 0.4);
      for (const n of before)
        held.set(`${n}`, { _id: JSON.stringify([scope, n]), scope, n, holder: `old${n}`, at: new Date() });
      const capacity = 3;
      // Six replicas each read the slots, then claim for a new holder.
      const claimed = await Promise.all(
        Array.from({ length: 6 }, async (_, i) => store.claim(scope, `new${i}`, capacity, await store.slots(scope))),
      );
      const after = [...held.values()].filter((slot) => slot.scope === scope);
      expect(after.length, `held before: ${before.join(',')}`).toBeLessThanOrEqual(Math.max(capacity, before.length));
      expect(claimed.filter(Boolean).length).toBe(Math.max(0, capacity - before.length));
    }
  });
});
