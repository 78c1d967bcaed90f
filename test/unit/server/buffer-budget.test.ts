// The byte budget for buffered requests and unread replies (issue 15): fair share per tenant,
// over-share tenants shed (largest first) only when someone else needs memory.
import { describe, expect, it } from 'vitest';
import {
  BufferBudget,
  DRAIN_MARK_BYTES,
  GARBAGE_FLOOR_BYTES,
  UNAUTHENTICATED_ACCOUNT,
  type BufferAccount,
} from '../../../src/server/buffer-budget.js';

function harness(maxBytes: number): {
  budget: BufferBudget;
  shed: string[];
  open: (key: string, name: string) => BufferAccount;
} {
  const budget = new BufferBudget(maxBytes);
  const shed: string[] = [];
  return { budget, shed, open: (key, name) => budget.open(key, { accountShed: () => shed.push(name) }) };
}

describe('BufferBudget', () => {
  it('lets one tenant use the whole budget while nobody else needs memory', () => {
    const { budget, shed, open } = harness(1600);
    const a = open('acme', 'a');
    expect(a.charge(1500)).toBe(true);
    expect(budget.total).toBe(1500);
    expect(budget.share).toBe(1600);
    a.release(1500);
    expect(budget.total).toBe(0);
    expect(budget.activeTenants).toBe(0);
    expect(shed).toEqual([]);
  });

  it("sheds the over-share tenant's largest connection, never the bystander that needed the memory", () => {
    const { budget, shed, open } = harness(1600);
    const a1 = open('acme', 'a1');
    const a2 = open('acme', 'a2');
    const g = open('globex', 'g');
    expect(a1.charge(900)).toBe(true);
    expect(a2.charge(600)).toBe(true);
    // globex needs 200: the total would be 1700 > 1600; acme (1500) is over its share (800).
    expect(g.charge(200)).toBe(true);
    expect(shed).toEqual(['a1']);
    expect(a1.closed).toBe(true);
    expect(budget.total).toBe(800);
    expect(budget.bytesOf('acme')).toBe(600);
    // A shed account's later releases and charges are ignored.
    a1.release(900);
    expect(a1.charge(10)).toBe(false);
    expect(budget.total).toBe(800);
    expect(budget.shed).toBe(1);
  });

  it('sheds the charging connection itself when its own tenant is the one over its share', () => {
    const { shed, open } = harness(1600);
    const g = open('globex', 'g');
    const a = open('acme', 'a');
    expect(g.charge(700)).toBe(true);
    expect(a.charge(800)).toBe(true);
    expect(a.charge(200)).toBe(false);
    expect(shed).toEqual(['a']);
    expect(g.closed).toBe(false);
  });

  it('sheds the charger when nobody is over its share (the floor of a sixteenth)', () => {
    const { budget, shed, open } = harness(1600);
    const accounts = Array.from({ length: 20 }, (_, i) => open(`t${i}`, `t${i}`));
    for (const account of accounts.slice(0, 16)) expect(account.charge(100)).toBe(true);
    expect(budget.share).toBe(100);
    expect(accounts[16]!.charge(50)).toBe(false);
    expect(shed).toEqual(['t16']);
    expect(budget.total).toBe(1600);
  });

  it('moves bytes to the tenant once established; unauthenticated connections share one account', () => {
    const { budget, open } = harness(1600);
    const x = open(UNAUTHENTICATED_ACCOUNT, 'x');
    const y = open(UNAUTHENTICATED_ACCOUNT, 'y');
    x.charge(100);
    y.charge(50);
    expect(budget.bytesOf(UNAUTHENTICATED_ACCOUNT)).toBe(150);
    x.moveTo('acme');
    expect(budget.bytesOf(UNAUTHENTICATED_ACCOUNT)).toBe(50);
    expect(budget.bytesOf('acme')).toBe(100);
    x.close();
    y.close();
    expect(budget.total).toBe(0);
    expect(budget.activeTenants).toBe(0);
  });

  it('enforces a smaller budget (hot reload) at the next charge', () => {
    const { budget, shed, open } = harness(1600);
    const a = open('acme', 'a');
    const g = open('globex', 'g');
    a.charge(1000);
    budget.reconfigure(800);
    expect(g.charge(10)).toBe(true);
    expect(shed).toEqual(['a']);
    expect(budget.total).toBe(10);
  });

  it('reports a drain once per burst: the total back to an eighth of a peak of at least DRAIN_MARK_BYTES', () => {
    const drains: number[] = [];
    const budget = new BufferBudget(16 * DRAIN_MARK_BYTES, { onDrained: (peak) => drains.push(peak) });
    const a = budget.open('acme', { accountShed: () => undefined });
    const b = budget.open('globex', { accountShed: () => undefined });
    // Small traffic never makes a burst.
    a.charge(DRAIN_MARK_BYTES / 2);
    a.release(DRAIN_MARK_BYTES / 2);
    expect(drains).toEqual([]);
    // Two connections together make one; it is over when what is left is an eighth of the peak.
    a.charge(DRAIN_MARK_BYTES);
    b.charge(DRAIN_MARK_BYTES);
    a.release(DRAIN_MARK_BYTES);
    expect(drains).toEqual([]);
    b.release(DRAIN_MARK_BYTES - DRAIN_MARK_BYTES / 4);
    expect(drains).toEqual([2 * DRAIN_MARK_BYTES]);
    // Reported once: releasing the rest is no second burst.
    b.release(DRAIN_MARK_BYTES / 4);
    expect(drains).toEqual([2 * DRAIN_MARK_BYTES]);
    // A connection closed (shed, or its client left) drains too; and having held a burst's worth
    // itself, its end is reported as well (memory-return.ts waits for the last of them).
    a.charge(3 * DRAIN_MARK_BYTES);
    a.close();
    expect(drains).toEqual([2 * DRAIN_MARK_BYTES, 3 * DRAIN_MARK_BYTES, 3 * DRAIN_MARK_BYTES]);
  });

  it("reports the end of a connection that held a burst's worth at once, even long after the bytes drained", () => {
    const drains: number[] = [];
    const budget = new BufferBudget(16 * DRAIN_MARK_BYTES, { onDrained: (peak) => drains.push(peak) });
    const big = budget.open('acme', { accountShed: () => undefined });
    const small = budget.open('acme', { accountShed: () => undefined });
    big.charge(DRAIN_MARK_BYTES + 1);
    big.release(DRAIN_MARK_BYTES + 1);
    expect(drains).toEqual([DRAIN_MARK_BYTES + 1]);
    // Many small messages over time are no burst, whatever their sum.
    for (let i = 0; i < 64; i++) {
      small.charge(DRAIN_MARK_BYTES / 4);
      small.release(DRAIN_MARK_BYTES / 4);
    }
    small.close();
    expect(drains).toEqual([DRAIN_MARK_BYTES + 1]);
    // The connection that held the big message leaves its socket and decoder as garbage.
    big.close();
    expect(drains).toEqual([DRAIN_MARK_BYTES + 1, DRAIN_MARK_BYTES + 1]);
    big.close();
    expect(drains, 'a second close is no second end').toHaveLength(2);
  });

  it('counts released and discarded bytes as garbage and reports once per mark until collected', () => {
    const reports: number[] = [];
    const budget = new BufferBudget(4 * GARBAGE_FLOOR_BYTES, { onGarbage: (bytes) => reports.push(bytes) });
    expect(budget.garbageMark).toBe(GARBAGE_FLOOR_BYTES);
    // An eighth of a bigger budget (the default 256 MiB: 32 MiB).
    expect(new BufferBudget(256 * 1024 * 1024).garbageMark).toBe(32 * 1024 * 1024);
    const a = budget.open('acme', { accountShed: () => undefined });
    a.charge(GARBAGE_FLOOR_BYTES);
    a.release(GARBAGE_FLOOR_BYTES / 2);
    budget.discarded(GARBAGE_FLOOR_BYTES / 4);
    expect(reports).toEqual([]);
    a.release(GARBAGE_FLOOR_BYTES / 4);
    expect(reports).toEqual([GARBAGE_FLOOR_BYTES]);
    // Reported once until a collection ran.
    a.release(GARBAGE_FLOOR_BYTES / 4);
    expect(reports).toHaveLength(1);
    budget.collected();
    expect(budget.garbage).toBe(0);
    a.charge(GARBAGE_FLOOR_BYTES);
    a.close();
    expect(reports).toEqual([GARBAGE_FLOOR_BYTES, GARBAGE_FLOOR_BYTES]);
  });
});
