/**
 * glibc's `malloc_trim(0)`: gives the free pages inside the C heap back to the system (issue 15,
 * "memory returns to within 20% of baseline after the abuse stops").
 *
 * glibc returns freed memory on its own only from the top of its main heap: a few small blocks
 * still in use near the top pin everything below them. After a burst of big finds the proxy's
 * `[heap]` mapping stayed at 30 MiB of which 26 were free (walked with gdb), so RSS stayed 25-40
 * MiB over its baseline after every object of the burst had been collected; `malloc_trim(0)`
 * brought it from 135 to 109 MiB at once. Node never calls it, and JavaScript cannot call C
 * without an FFI: koffi (prebuilt for every platform in its package, no install script) binds
 * the one function, once. Elsewhere (musl, macOS, koffi missing) there is no trim: musl and
 * macOS allocators return memory themselves.
 */
import { createRequire } from 'node:module';

interface Koffi {
  load(path: string): { func(signature: string): (...args: unknown[]) => unknown };
}

/** A function running `malloc_trim(0)`, or undefined where glibc's is not available. */
export function loadMallocTrim(): (() => void) | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const trim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)');
    return () => void trim(0);
  } catch {
    return undefined;
  }
}
