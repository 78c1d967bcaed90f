/**
 * `MTP_*` environment variables and command-line flags as configuration layers.
 *
 * Every field has a generic variable: `MTP_` + its path in SCREAMING_SNAKE_CASE with `__`
 * between segments (`limits.maxConnections` → `MTP_LIMITS__MAX_CONNECTIONS`). Segments match
 * field names case- and underscore-insensitively, so `MTP_UPSTREAM__CONNECT_TIMEOUT_MS` finds
 * `connectTimeoutMS`. The main settings also have short explicit names (`EXPLICIT_ENV`).
 * Values are text, coerced by the field's schema type; anything the coercion cannot read is
 * left as text for the validator to reject with a proper message.
 *
 * Lists of objects (`listeners`, `identity.certificateRules`, `identity.passthrough.rules`)
 * are one field each and take a JSON list of the whole value (`MTP_LISTENERS='[{…}]'`); their
 * items have no variables of their own. The one exception is the first listener's address,
 * which `MTP_LISTEN` and `--listen` set (as a `ListPatch`, applied over whatever list the file
 * or MTP_LISTENERS gave, or over the default listener).
 */

import { ConfigError } from '../errors.js';
import { pathKey, setPath, type Layer, type ListPatch, type PathSegment } from './layers.js';
import { configSchema, isSection, schemaAt, schemaFields, type SchemaNode } from './schema.js';

export const ENV_PREFIX = 'MTP_';

/** Names the configuration file, like `--config`. */
export const CONFIG_FILE_ENV = 'MTP_CONFIG';

/** Short names for the main settings (the generic `MTP_<PATH>` form works for these too). */
export const EXPLICIT_ENV: Readonly<Record<string, readonly PathSegment[]>> = {
  MTP_LISTEN: ['listeners', 0, 'listen'],
  MTP_UPSTREAM: ['upstream', 'uri'],
  MTP_METRICS_LISTEN: ['metrics', 'listen'],
  MTP_LOG_LEVEL: ['log', 'level'],
};

/**
 * `MTP_*` names that are not settings and are ignored rather than rejected as unknown:
 * the variables Kubernetes injects for a Service named `mtp` (service links), and `MTP_TEST_*`,
 * reserved for the test suite (e.g. `MTP_TEST_LOG_LEVEL`).
 */
const IGNORED_ENV = /^MTP_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\w+)?|TEST_\w*)$/;

/** Command-line flags that set configuration fields (strings, as typed). */
export interface ConfigFlags {
  listen?: string | undefined;
  upstream?: string | undefined;
  metricsListen?: string | undefined;
  logLevel?: string | undefined;
}

/** Each flag: the field it sets and its spelling on the command line. */
export const FLAG_FIELDS: Readonly<Record<keyof ConfigFlags, { path: readonly PathSegment[]; flag: string }>> = {
  listen: { path: ['listeners', 0, 'listen'], flag: '--listen' },
  upstream: { path: ['upstream', 'uri'], flag: '--upstream' },
  metricsListen: { path: ['metrics', 'listen'], flag: '--metrics-listen' },
  logLevel: { path: ['log', 'level'], flag: '--log-level' },
};

/** `connectTimeoutMS` → `CONNECT_TIMEOUT_MS`, `maxBsonDepth` → `MAX_BSON_DEPTH`. */
export function toScreamingSnake(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toUpperCase();
}

/** The generic variable name of a field path. */
export function envNameOf(path: readonly PathSegment[]): string {
  return ENV_PREFIX + path.map((segment) => toScreamingSnake(String(segment))).join('__');
}

/** The variable documented for a field: the explicit short name when there is one. */
export function preferredEnvNameOf(path: readonly PathSegment[]): string {
  const key = pathKey(path);
  for (const [name, target] of Object.entries(EXPLICIT_ENV)) if (pathKey(target) === key) return name;
  return envNameOf(path);
}

const normalize = (segment: string): string => segment.replace(/_/g, '').toLowerCase();

type Resolved =
  | { kind: 'field'; path: string[]; node: SchemaNode }
  | { kind: 'section'; path: string[]; properties: Record<string, SchemaNode> }
  | { kind: 'inside-list'; path: string[] }
  | { kind: 'unknown' };

/** Finds the field a generic variable name (without prefix) designates. */
function resolveGeneric(rest: string): Resolved {
  const segments = rest.split('__');
  let node: SchemaNode = configSchema;
  const path: string[] = [];
  for (const segment of segments) {
    if (!isSection(node)) return node.type === 'array' ? { kind: 'inside-list', path } : { kind: 'unknown' };
    const wanted = normalize(segment);
    const match = Object.keys(node.properties).find((name) => name.toLowerCase() === wanted);
    if (match === undefined || segment === '') return { kind: 'unknown' };
    path.push(match);
    node = node.properties[match] as SchemaNode;
  }
  return isSection(node) ? { kind: 'section', path, properties: node.properties } : { kind: 'field', path, node };
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost);
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The closest candidate within a small edit distance, for "did you mean" hints. */
export function closest(name: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const candidate of candidates) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Every variable name the loader understands (for hints and documentation). */
export function knownEnvNames(): string[] {
  return [CONFIG_FILE_ENV, ...Object.keys(EXPLICIT_ENV), ...schemaFields().map((field) => envNameOf(field.path))];
}

function primaryType(node: SchemaNode): string | undefined {
  const types = Array.isArray(node.type) ? node.type : node.type === undefined ? [] : [node.type];
  return types.find((type) => type !== 'null');
}

/** A list whose items are objects: only ever written as JSON. */
function isListOfObjects(node: SchemaNode): boolean {
  return node.items !== undefined && primaryType(node.items) === 'object';
}

/**
 * Text from the environment or a flag, coerced to the field's type. Text that does not read
 * as that type is returned unchanged so that validation reports it with the field's path.
 * Lists read as JSON (`["a","b"]`) or, for lists of plain values, comma-separated text; an
 * empty value is an empty list. An empty value of an optional (nullable) text field is null.
 */
export function coerceText(text: string, node: SchemaNode): unknown {
  const trimmed = text.trim();
  const nullable = Array.isArray(node.type) && node.type.includes('null');
  if (nullable && trimmed === '' && primaryType(node) === 'string' && node.format === undefined) return null;
  switch (primaryType(node)) {
    case 'integer':
      return /^[+-]?\d+$/.test(trimmed) ? Number(trimmed) : text;
    case 'number': {
      const value = Number(trimmed);
      return trimmed !== '' && Number.isFinite(value) ? value : text;
    }
    case 'boolean':
      return /^true$/i.test(trimmed) ? true : /^false$/i.test(trimmed) ? false : text;
    case 'array': {
      if (trimmed.startsWith('[')) {
        try {
          return JSON.parse(trimmed) as unknown;
        } catch {
          return text;
        }
      }
      if (trimmed === '') return [];
      if (isListOfObjects(node)) return text;
      const items = trimmed.split(',').map((item) => item.trim());
      return node.items === undefined ? items : items.map((item) => coerceText(item, node.items as SchemaNode));
    }
    default:
      return text;
  }
}

/**
 * Puts one coerced value into a layer: straight into `data`, or as a patch when the path goes
 * into a list item (`['listeners', 0, 'listen']`).
 */
function assign(layer: Required<Layer>, path: readonly PathSegment[], value: unknown, origin: string): void {
  const index = path.findIndex((segment) => typeof segment === 'number');
  if (index < 0) {
    setPath(layer.data, path as string[], value);
    layer.sources.set(pathKey(path), origin);
    return;
  }
  const listDefault = schemaAt(path.slice(0, index))?.default;
  const patch: ListPatch = { path, value, origin, listDefault: Array.isArray(listDefault) ? listDefault : [] };
  layer.patches.push(patch);
}

/** The environment as a layer. Unknown `MTP_*` names are errors (typos must not pass silently). */
export function envLayer(env: NodeJS.ProcessEnv): Layer {
  const layer: Required<Layer> = { data: {}, sources: new Map(), patches: [] };
  const setBy = new Map<string, { name: string; value: string }>();
  const names = Object.keys(env)
    .filter((name) => name.startsWith(ENV_PREFIX))
    .sort();
  // Generic names first, so that a conflicting explicit name is reported against the generic one.
  names.sort((a, b) => Number(a in EXPLICIT_ENV) - Number(b in EXPLICIT_ENV));
  for (const name of names) {
    const value = env[name];
    if (value === undefined || name === CONFIG_FILE_ENV || IGNORED_ENV.test(name)) continue;
    let path: PathSegment[];
    let node: SchemaNode | undefined;
    const explicit = EXPLICIT_ENV[name];
    if (explicit !== undefined) {
      path = [...explicit];
      node = schemaAt(explicit);
    } else {
      const resolved = resolveGeneric(name.slice(ENV_PREFIX.length));
      if (resolved.kind === 'section') {
        throw new ConfigError(
          name,
          `"${resolved.path.join('.')}" is a section; set its fields one by one, e.g. ${envNameOf([
            ...resolved.path,
            Object.keys(resolved.properties)[0] ?? 'FIELD',
          ])}`,
        );
      }
      if (resolved.kind === 'inside-list') {
        throw new ConfigError(
          name,
          `"${resolved.path.join('.')}" is a list; set it whole as JSON in ${envNameOf(resolved.path)}, e.g. ` +
            `${envNameOf(resolved.path)}='[{...}, {...}]'`,
        );
      }
      if (resolved.kind === 'unknown') {
        const hint = closest(name, knownEnvNames());
        throw new ConfigError(name, `unknown setting${hint === undefined ? '' : ` (did you mean ${hint}?)`}`);
      }
      path = resolved.path;
      node = resolved.node;
    }
    if (node === undefined) continue;
    const key = pathKey(path);
    const earlier = setBy.get(key);
    if (earlier !== undefined && earlier.value !== value) {
      throw new ConfigError(name, `conflicts with ${earlier.name}, which sets ${key} too; set only one`);
    }
    setBy.set(key, { name, value });
    assign(layer, path, coerceText(value, node), name);
  }
  return layer;
}

/** Command-line flags as a layer. */
export function flagsLayer(flags: ConfigFlags): Layer {
  const layer: Required<Layer> = { data: {}, sources: new Map(), patches: [] };
  for (const [name, { path, flag }] of Object.entries(FLAG_FIELDS) as [keyof ConfigFlags, (typeof FLAG_FIELDS)[keyof ConfigFlags]][]) {
    const value = flags[name];
    if (value === undefined) continue;
    const node = schemaAt(path);
    if (node === undefined) continue;
    assign(layer, path, coerceText(value, node), flag);
  }
  return layer;
}
