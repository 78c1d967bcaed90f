// A full collection once a burst of buffered bytes is over (issue 15, memory returns after abuse):
// once, a delay after the last drain, never while bursts keep coming, never without a collector.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryReturn } from '../../../src/server/memory-return.js';

describe('MemoryReturn', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('collects once, delayMS after a burst drained', () => {
    const collect = vi.fn();
    const memory = new MemoryReturn({ collect, delayMS: 1_000 });
    memory.drained(100);
    vi.advanceTimersByTime(999);
    expect(collect).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(collect).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(10_000);
    expect(collect).toHaveBeenCalledTimes(1);
    memory.drained(100);
    vi.advanceTimersByTime(1_000);
    expect(collect).toHaveBeenCalledTimes(2);
  });

  it('waits for the quiet: a burst draining during the wait restarts it', () => {
    const collect = vi.fn();
    const memory = new MemoryReturn({ collect, delayMS: 1_000 });
    memory.drained(100);
    for (let i = 0; i < 5; i++) {
      vi.advanceTimersByTime(600);
      memory.drained(100);
    }
    expect(collect).not.toHaveBeenCalled();
    vi.advanceTimersByTime(2_000);
    expect(collect).toHaveBeenCalledTimes(1);
  });

  it('does nothing without a collector (no --expose-gc) or once closed', () => {
    const idle = new MemoryReturn({ collect: undefined });
    expect(idle.enabled).toBe(false);
    idle.drained(100);
    expect(vi.getTimerCount()).toBe(0);
    const collect = vi.fn();
    const memory = new MemoryReturn({ collect, delayMS: 1_000 });
    memory.drained(100);
    memory.close();
    vi.advanceTimersByTime(5_000);
    expect(collect).not.toHaveBeenCalled();
  });
});
