/**
 * A configuration layer is a partial settings object plus, for each path it sets, where the
 * value came from (`config.yaml:12`, `MTP_LISTEN`, `--listen`) so errors can point at it.
 * Layers merge in order, later ones winning field by field.
 */

import { InvariantError } from '../errors.js';

export type PathSegment = string | number;

export interface Layer {
  data: Record<string, unknown>;
  /** Dotted path (see `pathKey`) → human description of the value's origin. */
  sources: Map<string, string>;
  /**
   * Values for places inside lists (`--listen` → `listeners[0].listen`), applied after this
   * layer's `data` is merged, so they change one item of whatever list the layers built so far.
   */
  patches?: ListPatch[];
}

/** One value set inside a list item, e.g. `{ path: ['listeners', 0, 'listen'], value: '…' }`. */
export interface ListPatch {
  path: readonly PathSegment[];
  value: unknown;
  /** Where the value came from (`--listen`, `MTP_LISTEN`). */
  origin: string;
  /** The list to start from when none (or an empty one) is configured, e.g. the default listeners. */
  listDefault: readonly unknown[];
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

function recordSource(sources: Map<string, string>, key: string, origin: string): void {
  for (const existing of [...sources.keys()]) {
    if (existing.startsWith(`${key}.`) || existing.startsWith(`${key}[`)) sources.delete(existing);
  }
  sources.set(key, origin);
}

/**
 * Applies a patch to merged data. A missing, null or empty list becomes `listDefault` first;
 * anything else that is not a list, or an item that is not a mapping, is left alone for
 * validation to report.
 */
function applyPatch(data: Record<string, unknown>, patch: ListPatch, sources: Map<string, string>): void {
  const index = patch.path.findIndex((segment) => typeof segment === 'number');
  const listPath = patch.path.slice(0, index) as string[];
  const position = patch.path[index] as number;
  const rest = patch.path.slice(index + 1);
  if (index <= 0 || rest.length === 0 || rest.some((segment) => typeof segment === 'number')) {
    throw new InvariantError(`unsupported list patch path ${pathKey(patch.path)}`);
  }
  let list = getPath(data, listPath);
  if (list === undefined || list === null || (Array.isArray(list) && list.length === 0)) {
    list = structuredClone(patch.listDefault) as unknown[];
    setPath(data, listPath, list);
  }
  if (!Array.isArray(list)) return;
  const target: unknown = list[position];
  if (!isPlainObject(target)) return;
  setPath(target, rest as string[], structuredClone(patch.value));
  sources.set(pathKey(patch.path), patch.origin);
}

/** Merges layers left to right into a fresh object; the inputs are not modified. */
export function mergeLayers(layers: readonly Layer[]): Layer {
  const data: Record<string, unknown> = {};
  const sources = new Map<string, string>();
  for (const layer of layers) {
    mergeInto(data, layer.data);
    for (const [key, origin] of layer.sources) recordSource(sources, key, origin);
    for (const patch of layer.patches ?? []) applyPatch(data, patch, sources);
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
