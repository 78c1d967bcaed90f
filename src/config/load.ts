/**
 * `loadConfig`: defaults < YAML file < `MTP_*` environment < command-line flags, validated
 * against `configSchema` by ajv and returned deeply frozen.
 */

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { ConfigValidationError, type ConfigIssue } from '../errors.js';
import { CONFIG_FILE_ENV, closest, envLayer, flagsLayer, type ConfigFlags } from './env.js';
import { formatChecks, formatExpectations } from './formats.js';
import { isOff, parseHostPort } from './host-port.js';
import { getPath, isPlainObject, mergeLayers, originOf, pathKey, type Layer, type PathSegment } from './layers.js';
import { crossFieldIssues } from './checks.js';
import { deriveLimits } from './derived.js';
import { configSchema, Formats, isSection, objectProperties, type SchemaNode } from './schema.js';
import { MASK, maskUri } from '../secrets.js';
import type { ProxyConfig } from './types.js';
import { maskWithSchema } from './walk.js';
import { readYamlFile } from './yaml-file.js';

export interface LoadConfigOptions {
  /** YAML file; defaults to `$MTP_CONFIG` when that is set. */
  file?: string | undefined;
  /** Environment to read `MTP_*` variables from; defaults to `process.env`. */
  env?: NodeJS.ProcessEnv | undefined;
  /** Command-line flags, the highest precedence. */
  flags?: ConfigFlags | undefined;
}

let validator: ValidateFunction | undefined;

function compileValidator(): ValidateFunction {
  if (validator !== undefined) return validator;
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true });
  addFormatsModule.default(ajv);
  for (const [name, check] of Object.entries(formatChecks)) {
    ajv.addFormat(name, { type: 'string', validate: (text: string) => check(text) === null });
  }
  validator = ajv.compile(configSchema);
  return validator;
}

/** The schema node for a path that may include array indices. */
function nodeAt(path: readonly PathSegment[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = configSchema;
  for (const segment of path) {
    if (node === undefined) return undefined;
    if (typeof segment === 'number') {
      node = node.items;
    } else {
      const properties = objectProperties(node);
      node = properties !== undefined && Object.hasOwn(properties, segment) ? properties[segment] : undefined;
    }
  }
  return node;
}

const MAX_SHOWN = 80;

/** Names of the write-only (secret) fields at or below a node. */
function secretNames(node: SchemaNode, name = ''): string[] {
  const own = node.writeOnly === true && name !== '' ? [name] : [];
  const children = Object.entries(objectProperties(node) ?? {}).flatMap(([child, childNode]) => secretNames(childNode, child));
  return [...own, ...children, ...(node.items === undefined ? [] : secretNames(node.items))];
}

/** A value for an error message: secrets masked (also inside objects), long values shortened. */
function show(value: unknown, node: SchemaNode | undefined): string {
  if (value === undefined) return 'nothing';
  if (node?.writeOnly === true) return JSON.stringify(MASK);
  // Unparsed text for a list or mapping (bad JSON in MTP_LISTENERS) may hold a secret field.
  if (typeof value === 'string' && node !== undefined) {
    const lower = value.toLowerCase();
    if (secretNames(node).some((secret) => lower.includes(secret.toLowerCase()))) return 'text not shown (it names a secret field)';
  }
  const masked = JSON.stringify(node === undefined ? value : maskWithSchema(value, node), (_key, item: unknown) =>
    typeof item === 'string' && (node?.format === Formats.mongodbUri || item.includes('://')) ? maskUri(item) : item,
  );
  return masked.length > MAX_SHOWN ? `${masked.slice(0, MAX_SHOWN - 1)}…` : masked;
}

const TYPE_NAMES: Readonly<Record<string, string>> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping of settings',
  array: 'a list',
  null: 'null',
};

/** What is wrong, in words, for one ajv error (without the "got" part). */
function describe(error: ErrorObject, node: SchemaNode | undefined, value: unknown): string {
  const params = error.params as Record<string, unknown>;
  const expectation = node?.format === undefined ? undefined : formatExpectations[node.format];
  switch (error.keyword) {
    case 'type': {
      if (expectation !== undefined) return expectation;
      const types = String(params['type']).split(',');
      return `must be ${types.map((type) => TYPE_NAMES[type] ?? type).join(' or ')}`;
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `must be ${String(params['comparison'])} ${String(params['limit'])}`;
    case 'enum':
      return `must be one of ${(params['allowedValues'] as unknown[]).map((item) => String(item)).join(', ')}`;
    case 'format': {
      const check = formatChecks[String(params['format'])];
      const reason = typeof value === 'string' && check !== undefined ? check(value) : null;
      return `${expectation ?? `must be a ${String(params['format'])}`}${reason === null ? '' : `: ${reason}`}`;
    }
    case 'uniqueItems': {
      const items = Array.isArray(value) ? value : [];
      return `must not list ${show(items[Number(params['j'])], node?.items)} more than once`;
    }
    case 'minLength':
      return 'must not be empty';
    case 'minItems':
      return Number(params['limit']) === 1 ? 'must list at least one item' : `must list at least ${String(params['limit'])} items`;
    default:
      return error.message ?? 'is invalid';
  }
}

function instancePathSegments(instancePath: string, data: unknown): PathSegment[] {
  const segments: PathSegment[] = [];
  for (const raw of instancePath.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    segments.push(Array.isArray(getPath(data, segments)) ? Number(segment) : segment);
  }
  return segments;
}

/** Settings that moved, with where they went (files written for older versions). */
const MOVED: Readonly<Record<string, string>> = {
  listen: 'did you mean "listeners"? The address is now set per listener: listeners: [{name: main, listen: "host:port"}]',
};

function issuesFrom(errors: readonly ErrorObject[], data: unknown, sources: ReadonlyMap<string, string>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    const path = instancePathSegments(error.instancePath, data);
    let text: string;
    let showValue = true;
    if (error.keyword === 'additionalProperties') {
      const parentNode = nodeAt(path);
      const unknown = String((error.params as { additionalProperty: unknown }).additionalProperty);
      path.push(unknown);
      const moved = MOVED[pathKey(path)];
      const hint = parentNode?.properties === undefined ? undefined : closest(unknown, Object.keys(parentNode.properties));
      text = moved !== undefined ? `unknown setting; ${moved}` : `unknown setting${hint === undefined ? '' : `; did you mean "${hint}"?`}`;
      showValue = false;
    } else if (error.keyword === 'required') {
      path.push(String((error.params as { missingProperty: unknown }).missingProperty));
      text = 'is required';
      showValue = false;
    } else {
      const node = nodeAt(path);
      text = describe(error, node, getPath(data, path));
    }
    const key = pathKey(path);
    const value = getPath(data, path);
    const details: string[] = [];
    if (showValue) details.push(`got ${show(value, nodeAt(path))}`);
    const origin = originOf(sources, key);
    if (origin !== undefined) details.push(`from ${origin}`);
    const message = details.length === 0 ? text : `${text} (${details.join(', ')})`;
    const id = `${key}\u0000${message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    issues.push({ path: key || '(root)', message });
  }
  return issues;
}

/** `limits:` with every field commented out is `null` in YAML; treat such sections as absent. */
function dropNullSections(data: Record<string, unknown>, node: SchemaNode): void {
  if (!isSection(node)) return;
  for (const [name, child] of Object.entries(node.properties)) {
    if (!Object.hasOwn(data, name)) continue;
    const value = data[name];
    if (value === null && isSection(child)) delete data[name];
    else if (isPlainObject(value)) dropNullSections(value, child);
  }
}

/** Validated file-shaped data → runtime shape: `host:port` strings become `{host, port}`. */
function toRuntime(value: unknown, node: SchemaNode): unknown {
  const properties = objectProperties(node);
  if (properties !== undefined && isPlainObject(value)) {
    // Rebuilt in schema order, so every configuration lists its fields the same way.
    return Object.fromEntries(
      Object.entries(properties)
        .filter(([name]) => Object.hasOwn(value, name))
        .map(([name, child]) => [name, toRuntime(value[name], child)]),
    );
  }
  if (node.format === Formats.hostPort && typeof value === 'string') return parseHostPort(value);
  if (node.format === Formats.hostPortOrOff) return isOff(value) ? null : parseHostPort(String(value));
  if (Array.isArray(value)) return value.map((item) => toRuntime(item, node.items ?? {}));
  return value;
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return value;
}

function fail(issues: readonly ConfigIssue[]): never {
  const [first, ...rest] = issues;
  throw new ConfigValidationError(first === undefined ? [{ path: '(root)', message: 'is invalid' }] : [first, ...rest]);
}

/**
 * Validates merged layers into the final configuration: the JSON Schema first (types, ranges,
 * defaults), then the rules across fields (`checks.ts`) on the schema-valid data.
 */
function resolve(layer: Layer): ProxyConfig {
  const data = structuredClone(layer.data);
  dropNullSections(data, configSchema);
  const validate = compileValidator();
  if (!validate(data)) fail(issuesFrom(validate.errors ?? [], data, layer.sources));
  const issues = crossFieldIssues(data, layer.sources);
  if (issues.length > 0) fail(issues);
  deriveLimits(data);
  return deepFreeze(toRuntime(data, configSchema) as ProxyConfig);
}

/**
 * Builds a configuration from a settings object shaped like the YAML file (e.g.
 * `{ listeners: [{ name: 'main', listen: '127.0.0.1:0' }], upstream: { uri } }`) over the defaults. Handy for tests and
 * embedding; `origin` names the object in error messages.
 */
export function configFromObject(values: Record<string, unknown>, origin = 'settings'): ProxyConfig {
  const sources = new Map<string, string>();
  const record = (value: unknown, path: PathSegment[]): void => {
    if (!isPlainObject(value)) return;
    for (const [name, item] of Object.entries(value)) {
      sources.set(pathKey([...path, name]), origin);
      record(item, [...path, name]);
    }
  };
  record(values, []);
  return resolve({ data: values, sources });
}

/** The configuration with every default and nothing else. */
export function defaultConfig(): ProxyConfig {
  return resolve({ data: {}, sources: new Map() });
}

/** The YAML file `loadConfig` reads with these options: `file`, else `$MTP_CONFIG`, else none. */
export function configFileOf(options: LoadConfigOptions): string | undefined {
  const envFile = (options.env ?? process.env)[CONFIG_FILE_ENV];
  return options.file ?? (envFile === undefined || envFile === '' ? undefined : envFile);
}

/**
 * Loads the effective configuration: defaults < YAML file (`file`, else `$MTP_CONFIG`) <
 * `MTP_*` environment < `flags`. Throws `ConfigError` (or its subclass
 * `ConfigValidationError`) whose `path` names the offending field; messages never contain
 * the upstream password.
 */
export function loadConfig(options: LoadConfigOptions = {}): ProxyConfig {
  const env = options.env ?? process.env;
  const file = configFileOf(options);
  const layers: Layer[] = [];
  if (file !== undefined) layers.push(readYamlFile(file));
  layers.push(envLayer(env));
  if (options.flags !== undefined) layers.push(flagsLayer(options.flags));
  return resolve(mergeLayers(layers));
}
