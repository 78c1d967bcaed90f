// Latency bookkeeping: per-operation durations in nanoseconds, summarized in microseconds.

/**
 * Runs `count` operations with `concurrency` workers in a closed loop (each worker starts its next
 * operation when the previous one finished) and times every operation with process.hrtime.bigint().
 * `prepare(i)` runs outside the timed region (e.g. to build an insert batch).
 *
 * @template P
 * @param {number} count
 * @param {number} concurrency
 * @param {(i: number, prepared: P) => Promise<unknown>} op
 * @param {(i: number) => P} [prepare]
 * @returns {Promise<{ latenciesNs: Float64Array, wallNs: number }>}
 */
export async function closedLoop(count, concurrency, op, prepare) {
  const latenciesNs = new Float64Array(count);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      const prepared = prepare?.(i);
      const started = process.hrtime.bigint();
      await op(i, prepared);
      latenciesNs[i] = Number(process.hrtime.bigint() - started);
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const wallNs = Number(process.hrtime.bigint() - started);
  return { latenciesNs, wallNs };
}

/** p50, p90, p99, max and mean of a set of nanosecond durations, in microseconds. */
export function summarize(latenciesNs) {
  if (latenciesNs.length === 0) return { p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const sorted = Float64Array.from(latenciesNs).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] / 1000;
  let total = 0;
  for (const value of sorted) total += value;
  return {
    p50: round(at(0.5)),
    p90: round(at(0.9)),
    p99: round(at(0.99)),
    max: round(sorted[sorted.length - 1] / 1000),
    mean: round(total / sorted.length / 1000),
  };
}

export function round(value, digits = 1) {
  if (!Number.isFinite(value)) return value;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** a / b, or null when either side is missing. */
export function ratio(a, b, digits = 3) {
  if (a == null || b == null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return round(a / b, digits);
}
