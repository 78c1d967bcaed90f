// A full collection once a burst of buffered bytes is over (issue 15, memory returns after abuse):
// once, a delay after the last drain, never while bursts keep coming, never without a collector;
// during a burst, an incremental one where V8's API is reachable.
import { getHeapSpaceStatistics } from 'node:v8';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadIncrementalCollection } from '../../../src/server/heap-pressure.js';
import { loadMallocTrim } from '../../../src/server/malloc-trim.js';
import { MemoryReturn } from '../../../src/server/memory-return.js';
import { until } from '../../helpers/wait.js';
import { CONNECTION_FLOOD_MARK, ConnectionRegistry } from '../../../src/server/listener.js';
import type { ClientConnection } from '../../../src/server/client-connection.js';

describe('MemoryReturn', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('collects once (and again a turn later), delayMS after a burst drained', () => {
    const collect = vi.fn();
    const memory = new MemoryReturn({ collect, delayMS: 1_000 });
    memory.drained(100);
    vi.advanceTimersByTime(999);
    expect(collect).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(collect).toHaveBeenCalledTimes(1);
    // A second collection a turn of the event loop later (finalizers of the first), then nothing.
    vi.advanceTimersByTime(10_000);
    expect(collect).toHaveBeenCalledTimes(2);
    memory.drained(100);
    vi.advanceTimersByTime(1_000);
    expect(collect).toHaveBeenCalledTimes(3);
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

  it('collectSoon: one collection at the next turn however often asked, then done; at once without a collector', async () => {
    vi.useRealTimers();
    const collect = vi.fn();
    const memory = new MemoryReturn({ collect });
    const done = vi.fn();
    memory.collectSoon(done);
    memory.collectSoon(done);
    expect(collect).not.toHaveBeenCalled();
    await new Promise((resolve) => setImmediate(resolve));
    expect(collect).toHaveBeenCalledTimes(1);
    expect(done).toHaveBeenCalledTimes(1);
    const idle = new MemoryReturn({ collect: undefined });
    const idleDone = vi.fn();
    idle.collectSoon(idleDone);
    expect(idleDone).toHaveBeenCalledTimes(1);
  });

  it('trims the C heap once per burst, after its second collection; never in collectSoon', async () => {
    const order: string[] = [];
    const memory = new MemoryReturn({
      collect: () => order.push('collect'),
      trim: () => order.push('trim'),
      delayMS: 1_000,
    });
    memory.drained(100);
    vi.advanceTimersByTime(10_000);
    expect(order).toEqual(['collect', 'collect', 'trim']);
    expect(memory.trims).toBe(1);
    vi.useRealTimers();
    memory.collectSoon(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    expect(order).toEqual(['collect', 'collect', 'trim', 'collect']);
  });

  it('collectSoon starts an incremental collection when it can; a full one while the last is still running; bursts end with full ones', async () => {
    const order: string[] = [];
    let pending = false;
    const memory = new MemoryReturn({
      collect: () => order.push('collect'),
      incremental: {
        start: () => {
          order.push('start');
          pending = true;
        },
        get pending() {
          return pending;
        },
      },
      delayMS: 1_000,
    });
    vi.useRealTimers();
    const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
    let done = 0;
    memory.collectSoon(() => done++);
    await turn();
    expect(order).toEqual(['start']);
    expect(done).toBe(1);
    // Garbage reached the mark again before the started collection finished: a full one.
    memory.collectSoon(() => done++);
    await turn();
    expect(order).toEqual(['start', 'collect']);
    pending = false; // it finished
    memory.collectSoon(() => done++);
    await turn();
    expect(order).toEqual(['start', 'collect', 'start']);
    expect([done, memory.collections, memory.incrementalCollections]).toEqual([3, 3, 2]);
    vi.useFakeTimers();
    memory.drained(100);
    vi.advanceTimersByTime(10_000);
    // The burst's end: two full collections, then one that reduces memory (the young generation).
    expect(order).toEqual(['start', 'collect', 'start', 'collect', 'collect', 'start']);
  });

  it('after a burst, the C heap is trimmed once the memory-reducing collection finished', () => {
    const order: string[] = [];
    let finish: (() => void) | undefined;
    const memory = new MemoryReturn({
      collect: () => order.push('collect'),
      trim: () => order.push('trim'),
      incremental: {
        start: (onFinished) => {
          order.push('start');
          finish = onFinished;
        },
        get pending() {
          return finish !== undefined;
        },
      },
      delayMS: 1_000,
    });
    memory.drained(100);
    vi.advanceTimersByTime(10_000);
    expect(order).toEqual(['collect', 'collect', 'start']);
    expect(memory.trims).toBe(0);
    finish?.();
    expect(order).toEqual(['collect', 'collect', 'start', 'trim']);
    expect([memory.collections, memory.incrementalCollections, memory.trims]).toEqual([3, 1, 1]);
  });

  it('loadIncrementalCollection reaches V8 here and what it starts frees dead buffers', async () => {
    vi.useRealTimers();
    const start = loadIncrementalCollection();
    if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
      expect(start).toBeUndefined();
      return;
    }
    expect(start?.start).toBeTypeOf('function');
    // 64 MiB of buffers, dead once this returns.
    const held = ((): number => {
      const buffers = Array.from({ length: 8 }, () => Buffer.alloc(8 << 20, 1));
      return process.memoryUsage().arrayBuffers + buffers.length * 0;
    })();
    expect(held).toBeGreaterThanOrEqual(64 << 20);
    start!.start();
    expect(start!.pending).toBe(true);
    // V8 finishes the marking on its own tasks and allocation steps: give it turns of the event loop.
    await until(
      async () => {
        const churn = Array.from({ length: 1_000 }, (_, n) => ({ n }));
        await new Promise((resolve) => setTimeout(resolve, 20, churn));
        return process.memoryUsage().arrayBuffers < held - (48 << 20);
      },
      { timeoutMS: 20_000, intervalMS: 0 },
    );
    // And the major collection that finished it was seen.
    await until(() => !start!.pending, { timeoutMS: 20_000 });
  });

  it('what loadIncrementalCollection starts shrinks a grown young generation (gc() leaves it at its size)', async () => {
    vi.useRealTimers();
    const incremental = loadIncrementalCollection();
    if (incremental === undefined) return; // not reachable on this platform (tested above)
    const youngMiB = (): number =>
      getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')!.space_size / (1 << 20);
    // Short-lived objects, a share of them surviving a scavenge or two: V8 grows the young generation.
    let survivors: object[] = [];
    for (let n = 0; n < 4_000_000 && youngMiB() < 16; n++) {
      const object = { n, text: `x${n}`, list: [n] };
      if (n % 50 === 0) survivors.push(object);
      if (survivors.length > 20_000) survivors = [];
    }
    survivors.length = 0;
    const grown = youngMiB();
    expect(grown).toBeGreaterThanOrEqual(16);
    await new Promise<void>((resolve) => incremental.start(resolve));
    expect(youngMiB()).toBeLessThanOrEqual(grown / 4);
  });

  it('loadMallocTrim binds glibc malloc_trim here (Linux, glibc) and it runs', () => {
    const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header
      ?.glibcVersionRuntime;
    const trim = loadMallocTrim();
    if (process.platform === 'linux' && glibc !== undefined) {
      expect(trim).toBeTypeOf('function');
      expect(() => trim!()).not.toThrow();
    } else {
      expect(trim).toBeUndefined();
    }
  });

  it('connectionsFell schedules a collection like a drained burst', () => {
    const collect = vi.fn();
    const memory = new MemoryReturn({ collect, delayMS: 1_000 });
    memory.connectionsFell(500);
    vi.advanceTimersByTime(1_000);
    expect(collect).toHaveBeenCalledTimes(1);
  });
});

describe('ConnectionRegistry', () => {
  it('reports a fall to a quarter of a peak of at least CONNECTION_FLOOD_MARK connections, once per peak, then its next stage', () => {
    const falls: number[] = [];
    const registry = new ConnectionRegistry((peak) => falls.push(peak));
    const many = Array.from({ length: CONNECTION_FLOOD_MARK }, () => ({}) as ClientConnection);
    for (const c of many) registry.add(c);
    for (const c of many.slice(0, (3 * CONNECTION_FLOOD_MARK) / 4 - 1)) registry.delete(c);
    expect(falls).toEqual([]);
    registry.delete(many[(3 * CONNECTION_FLOOD_MARK) / 4 - 1]!);
    expect(falls).toEqual([CONNECTION_FLOOD_MARK]);
    // What it left (a quarter) closing is the flood's next stage (below).
    for (const c of many.slice((3 * CONNECTION_FLOOD_MARK) / 4)) registry.delete(c);
    expect(falls).toEqual([CONNECTION_FLOOD_MARK, CONNECTION_FLOOD_MARK / 4]);
    expect(registry.size).toBe(0);
  });

  it("reports a flood's next stage: what the first fall left falling to a quarter again, then nothing for small falls", () => {
    const falls: number[] = [];
    const registry = new ConnectionRegistry((peak) => falls.push(peak));
    // 300 open; the excess closed at once (to 75: a quarter), then the 75 leave later (to 5).
    const flood = Array.from({ length: 300 }, () => ({}) as ClientConnection);
    for (const c of flood) registry.add(c);
    for (const c of flood.slice(0, 225)) registry.delete(c);
    expect(falls).toEqual([300]);
    for (const c of flood.slice(225, 295)) registry.delete(c);
    expect(falls).toEqual([300, 75]);
    // The flood is over: a few connections coming and going are not one.
    const few = Array.from({ length: 20 }, () => ({}) as ClientConnection);
    for (const c of few) registry.add(c);
    for (const c of few) registry.delete(c);
    expect(falls).toEqual([300, 75]);
  });
});
