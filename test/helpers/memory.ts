// Memory of this process after a full garbage collection, for "memory returns to its baseline"
// checks on a proxy running in-process. Loose bounds only: the test process holds drivers too.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
// A fresh context created after the flag was set sees the `gc` global even without --expose-gc.
const collectGarbage = runInNewContext('gc') as (options?: { type: 'major' }) => void;

export interface SettledMemory {
  /** V8 heap in use, bytes. */
  heapUsed: number;
  /** Memory of ArrayBuffers and Buffers (socket and frame buffers live here), bytes. */
  arrayBuffers: number;
  rss: number;
}

/** Collects garbage a few times (finalizers free Buffers late), then reads the usage. */
export async function settledMemory(): Promise<SettledMemory> {
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await new Promise((resolve) => setImmediate(resolve));
  }
  const usage = process.memoryUsage();
  return { heapUsed: usage.heapUsed, arrayBuffers: usage.arrayBuffers, rss: usage.rss };
}

export const MiB = 1024 * 1024;
