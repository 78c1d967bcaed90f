/**
 * Keeps one instance of a short-lived hot class alive for the life of the process (issue 16).
 *
 * V8 gives an object the hidden class (map) its constructor's property assignments lead to; maps
 * after the first are reachable only through the transitions of the one before, which V8 holds
 * weakly. Optimized code embeds the maps it checks, also weakly. So when a full collection finds
 * no instance of such a class alive, which is the rule for a per-document or per-reply object, it
 * frees the maps and deoptimizes every function compiled against them; the next instance builds
 * new maps and the functions run unoptimized until V8 compiles them again. V8 normally keeps such
 * maps for a couple of collections, but not in a collection made to reduce memory, and the proxy
 * starts one whenever released buffers reach the byte budget's garbage mark (memory-return.ts):
 * every ~50 batches of 1,000 documents in the bench, each time deoptimizing the document
 * validation walk, the reply scan and the tenant-field cut (`--trace-deopt`: "reason: weak
 * objects"), which then ran unoptimized until TurboFan had compiled them again on V8's helper
 * threads (`step` alone 21-24 ms each time). One instance held here keeps its class's maps, and so
 * the compiled code, alive (`node bench/gc-deopt.mjs` lists what is still deoptimized that way).
 * The instances are never used.
 */
const retained: object[] = [];

/** Holds `instance` for the life of the process; returns it. */
export function retainShape<T extends object>(instance: T): T {
  retained.push(instance);
  return instance;
}

/** How many instances are held (for tests). */
export function retainedShapes(): number {
  return retained.length;
}
