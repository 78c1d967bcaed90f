// Configuration overrides for the bench's proxy children: objects merge key by key; arrays,
// scalars and null replace (the same rule as BENCH_PROXY_CONFIG documents).

export function deepMerge(base, overrides) {
  if (!isPlainObject(base) || !isPlainObject(overrides)) return overrides === undefined ? base : overrides;
  const merged = { ...base };
  for (const [key, value] of Object.entries(overrides)) merged[key] = deepMerge(merged[key], value);
  return merged;
}

const isPlainObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);
