/**
 * A configuration layer is a partial settings object plus, for each path it sets, where the
 * value came from (`config.yaml:12`, `MTP_LISTEN`, `--listen`) so errors can point at it.
 * Layers merge in order, later ones winning field by field.
 */

export type PathSegment = string | number;

export interface Layer {
  data: Record<string, unknown>;
  /** Dotted path (see `pathKey`) → human description of the value's origin. */
  sources: Map<string, string>;
}

/** `['limits', 'maxConnections']` → `limits.maxConnections`; array indices as `[1]`. */
export function pathKey(path: readonly PathSegment[]): string {
  let key = '';
  for (const segment of path) {
    if (typeof segment === 'number') key += `[${segment}]`;
    else key += key === '' ? segment : `.${segment}`;
  }
  return key;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Sets `value` at `path`, creating plain objects on the way. */
export function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const [index, segment] of path.entries()) {
    if (index === path.length - 1) {
      node[segment] = value;
      return;
    }
    const next = node[segment];
    if (isPlainObject(next)) {
      node = next;
    } else {
      const created: Record<string, unknown> = {};
      node[segment] = created;
      node = created;
    }
  }
}

/** The value at a path, or undefined. */
export function getPath(source: unknown, path: readonly PathSegment[]): unknown {
  let node = source;
  for (const segment of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<PathSegment, unknown>)[segment];
  }
  return node;
}

function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = target[key];
    if (isPlainObject(existing) && isPlainObject(value)) mergeInto(existing, value);
    else target[key] = structuredClone(value);
  }
}

/** Merges layers left to right into a fresh object; the inputs are not modified. */
export function mergeLayers(layers: readonly Layer[]): Layer {
  const data: Record<string, unknown> = {};
  const sources = new Map<string, string>();
  for (const layer of layers) {
    mergeInto(data, layer.data);
    for (const [key, origin] of layer.sources) {
      for (const existing of [...sources.keys()]) {
        if (existing.startsWith(`${key}.`) || existing.startsWith(`${key}[`)) sources.delete(existing);
      }
      sources.set(key, origin);
    }
  }
  return { data, sources };
}

/** Where the value at `key` (or its nearest parent that has a recorded origin) came from. */
export function originOf(sources: ReadonlyMap<string, string>, key: string): string | undefined {
  let current = key;
  for (;;) {
    const origin = sources.get(current);
    if (origin !== undefined) return origin;
    const cut = Math.max(current.lastIndexOf('.'), current.lastIndexOf('['));
    if (cut <= 0) return undefined;
    current = current.slice(0, cut);
  }
}
