/**
 * Starts an incremental garbage collection: V8's `Isolate::MemoryPressureNotification(kModerate)`
 * (issue 15, "another tenant keeps its p99 within 2x").
 *
 * During a burst of big messages the byte budget asks for a collection every time released
 * buffers reach its garbage mark (buffer-budget.ts), so that RSS follows the budget. `gc()` does
 * that in one atomic pause: the whole heap marked and swept while every tenant's requests wait,
 * 25-55 ms per collection on this project's 2-core machine, one for every ~14 MB message of a
 * flood. A moderate memory-pressure notification is V8's embedder API for the same request: it
 * starts incremental marking (concurrent, on V8's helper threads), and the pause that finishes it
 * is short: 3-9 ms after the first, measured on the same heap, with the dead buffers freed as
 * well. It does nothing when marking is already under way.
 *
 * JavaScript cannot call the V8 API; koffi (already the proxy's FFI for malloc-trim.ts) binds the
 * two exported functions of the running node binary (its V8 API is exported for native add-ons):
 * `v8::Isolate::GetCurrent()` and `v8::Isolate::MemoryPressureNotification(MemoryPressureLevel)`
 * by their Itanium-mangled names. Where they are not found (another ABI, a node without its
 * symbols, koffi missing) there is none, and the caller keeps `gc()`.
 *
 * The collection it starts is one that reduces memory: when it finishes V8 also shrinks the young
 * generation back to its smallest size, which `gc()` never does. A burst grows the young
 * generation to its 32 MiB maximum, and it stays there, resident, after any number of `gc()`s
 * (a scratch script here: new space 32 MiB and RSS 80 MiB after two `gc()`, 1 MiB and 53 MiB once
 * such a collection finished); memory-return.ts starts one after a burst for that.
 */
import { createRequire } from 'node:module';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

interface Koffi {
  load(path: string | null): { func(signature: string): (...args: unknown[]) => unknown };
}

/** `v8::MemoryPressureLevel::kModerate`. */
const MODERATE = 1;
/** The `kind` of a `gc` performance entry for a major (mark-compact) collection. */
const MAJOR = constants.NODE_PERFORMANCE_GC_MAJOR;

/** An incremental collection that can be started, and whether the one started last is still running. */
export interface IncrementalCollection {
  /**
   * Starts one (V8 does nothing when marking is already under way); `onFinished` is called once
   * the next major collection has run.
   */
  start(onFinished?: () => void): void;
  /**
   * A collection started here has not finished yet (no major collection seen since). While it
   * runs, garbage can outgrow it: the caller then collects in full.
   */
  readonly pending: boolean;
}

/**
 * Incremental collections of the calling thread's isolate, or undefined where the V8 API cannot
 * be reached. Bind it on the thread that will call it (the main thread). Whether one finished is
 * seen through `gc` performance entries, observed only while one is pending.
 */
export function loadIncrementalCollection(): IncrementalCollection | undefined {
  // The mangled names and the enum passed as an int are the Itanium C++ ABI's, as Linux builds use.
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) return undefined;
  let notify: (isolate: unknown, level: number) => unknown;
  let isolate: unknown;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as Koffi;
    const node = koffi.load(null);
    isolate = node.func('void *_ZN2v87Isolate10GetCurrentEv()')();
    if (isolate === null || isolate === undefined) return undefined;
    notify = node.func(
      'void _ZN2v87Isolate26MemoryPressureNotificationENS_19MemoryPressureLevelE(void *isolate, int level)',
    );
  } catch {
    return undefined;
  }
  let pending = false;
  let waiting: Array<() => void> = [];
  const finished = new PerformanceObserver((list) => {
    const entries = list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>;
    if (entries.some((entry) => entry.detail?.kind === MAJOR)) {
      pending = false;
      finished.disconnect();
      const callbacks = waiting;
      waiting = [];
      for (const callback of callbacks) callback();
    }
  });
  return {
    start(onFinished) {
      if (!pending) {
        pending = true;
        finished.observe({ entryTypes: ['gc'] });
      }
      if (onFinished !== undefined) waiting.push(onFinished);
      notify(isolate, MODERATE);
    },
    get pending() {
      return pending;
    },
  };
}
