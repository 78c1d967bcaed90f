import { describe, expect, it } from 'vitest';
import { FairWaitQueue } from '../../../src/upstream/wait-queue.js';

describe('FairWaitQueue', () => {
  it('serves tenants in turn, each in arrival order', () => {
    const queue = new FairWaitQueue<string>();
    for (let i = 1; i <= 5; i++) queue.push('noisy', `noisy-${i}`);
    queue.push('quiet', 'quiet-1');
    queue.push('other', 'other-1');
    queue.push('quiet', 'quiet-2');
    expect(queue.length).toBe(8);
    const order: string[] = [];
    for (let waiter = queue.shift(); waiter !== undefined; waiter = queue.shift()) order.push(waiter);
    expect(order).toEqual(['noisy-1', 'quiet-1', 'other-1', 'noisy-2', 'quiet-2', 'noisy-3', 'noisy-4', 'noisy-5']);
    expect(queue.length).toBe(0);
  });

  it('lets a tenant that arrives late be served before the noisy tenant’s backlog', () => {
    const queue = new FairWaitQueue<string>();
    for (let i = 1; i <= 100; i++) queue.push('noisy', `noisy-${i}`);
    expect(queue.shift()).toBe('noisy-1');
    queue.push('late', 'late-1');
    expect(queue.shift()).toBe('late-1');
    expect(queue.shift()).toBe('noisy-2');
  });

  it('removes a waiter (timeout) and keeps the counts right', () => {
    const queue = new FairWaitQueue<string>();
    queue.push('a', 'a1');
    queue.push('a', 'a2');
    queue.push('b', 'b1');
    expect(queue.remove('a', 'a1')).toBe(true);
    expect(queue.remove('a', 'a1')).toBe(false);
    expect(queue.remove('c', 'x')).toBe(false);
    expect(queue.remove('b', 'b1')).toBe(true);
    expect(queue.tenants).toBe(1);
    expect(queue.length).toBe(1);
    expect(queue.drain()).toEqual(['a2']);
    expect(queue.length).toBe(0);
    expect(queue.shift()).toBeUndefined();
  });

  it('passes over tenants that may not be served (at their share cap), keeping their place', () => {
    const queue = new FairWaitQueue<string>();
    queue.push('capped', 'c1');
    queue.push('capped', 'c2');
    queue.push('other', 'o1');
    queue.push('third', 't1');
    const notCapped = (tenant: string): boolean => tenant !== 'capped';
    expect(queue.hasEligible(notCapped)).toBe(true);
    expect(queue.shift(notCapped)).toBe('o1');
    expect(queue.shift(notCapped)).toBe('t1');
    expect(queue.hasEligible(notCapped)).toBe(false);
    expect(queue.shift(notCapped)).toBeUndefined();
    expect(queue.length).toBe(2);
    // Below its cap again: served first, in arrival order.
    queue.push('other', 'o2');
    expect(queue.shift()).toBe('c1');
    expect(queue.shift()).toBe('o2');
    expect(queue.shift()).toBe('c2');
  });

  it('still skips the tenant served last when another eligible one waits', () => {
    const queue = new FairWaitQueue<string>();
    queue.push('a', 'a1');
    queue.push('a', 'a2');
    expect(queue.shift()).toBe('a1');
    queue.push('capped', 'c1');
    queue.push('b', 'b1');
    const notCapped = (tenant: string): boolean => tenant !== 'capped';
    expect(queue.shift(notCapped)).toBe('b1');
    expect(queue.shift(notCapped)).toBe('a2');
    expect(queue.shift(notCapped)).toBeUndefined();
    expect(queue.shift()).toBe('c1');
  });
});
