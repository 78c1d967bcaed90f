/**
 * The unified test format's "Evaluating Matches" rules (specifications repository,
 * source/unified-test-format, section of that name): extra fields allowed in root-level documents
 * only, flexible numerics, and the special operators the CRUD tests use ($$exists,
 * $$unsetOrMatches, $$type, $$lte, $$matchAsRoot, $$matchAsDocument). Written for this runner.
 */
import { BSON } from 'mongodb';

export class MatchError extends Error {
  override name = 'MatchError';
}

function fail(path: string, message: string): never {
  throw new MatchError(`${path || '<root>'}: ${message}`);
}

function isDocument(value: unknown): value is Record<string, unknown> {
  return (
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    !('_bsontype' in (value as object)) &&
    !(value instanceof Date) &&
    !(value instanceof RegExp) &&
    !(value instanceof Uint8Array)
  );
}

/** A numeric value of any BSON width (not Decimal128), as a JS number; undefined otherwise. */
function numeric(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof BSON.Long || value instanceof BSON.Int32 || value instanceof BSON.Double)
    return Number(value.valueOf());
  return undefined;
}

function specialKey(value: unknown): string | undefined {
  if (!isDocument(value)) return undefined;
  const keys = Object.keys(value);
  return keys.length === 1 && keys[0]!.startsWith('$$') ? keys[0] : undefined;
}

const TYPE_CHECKS: Record<string, (value: unknown) => boolean> = {
  // The driver returns every double, int32 and int64 as a JS number.
  double: (v) => typeof v === 'number' || v instanceof BSON.Double,
  string: (v) => typeof v === 'string',
  object: (v) => isDocument(v),
  array: (v) => Array.isArray(v),
  binData: (v) => v instanceof BSON.Binary || v instanceof Uint8Array,
  objectId: (v) => v instanceof BSON.ObjectId,
  bool: (v) => typeof v === 'boolean',
  date: (v) => v instanceof Date,
  null: (v) => v === null,
  regex: (v) => v instanceof RegExp || v instanceof BSON.BSONRegExp,
  int: (v) => (typeof v === 'number' && Number.isInteger(v)) || v instanceof BSON.Int32,
  timestamp: (v) => v instanceof BSON.Timestamp,
  long: (v) => v instanceof BSON.Long || typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v)),
  decimal: (v) => v instanceof BSON.Decimal128,
  minKey: (v) => v instanceof BSON.MinKey,
  maxKey: (v) => v instanceof BSON.MaxKey,
  number: (v) => numeric(v) !== undefined,
};

/** Applies a `$$` operator found as the value of `key` in a document (key-based) or alone. */
function special(
  operator: string,
  argument: unknown,
  actual: unknown,
  present: boolean,
  path: string,
  root = false,
): void {
  switch (operator) {
    case '$$exists':
      if (argument !== present) fail(path, `expected the field to ${argument ? 'exist' : 'be absent'}`);
      return;
    case '$$unsetOrMatches':
      if (!present || actual === undefined) return;
      // A root-level document stays root-level inside $$unsetOrMatches.
      match(argument, actual, { root, path });
      return;
    case '$$type': {
      if (!present) fail(path, 'missing (expected a value of a given type)');
      const types = Array.isArray(argument) ? (argument as string[]) : [argument as string];
      if (!types.some((type) => TYPE_CHECKS[type]?.(actual))) fail(path, `not of type ${types.join('|')}`);
      return;
    }
    case '$$lte': {
      const a = numeric(actual);
      const e = numeric(argument);
      if (a === undefined || e === undefined || a > e) fail(path, `expected <= ${String(e)}, got ${String(actual)}`);
      return;
    }
    case '$$matchAsRoot':
      match(argument, actual, { root: true, path });
      return;
    case '$$matchAsDocument': {
      if (typeof actual !== 'string') fail(path, 'expected a JSON string');
      match(argument, BSON.EJSON.parse(actual, { relaxed: true }), { root: false, path });
      return;
    }
    default:
      throw new UnsupportedError(`special operator ${operator}`);
  }
}

/** The test uses something this runner does not implement: the test is skipped, not failed. */
export class UnsupportedError extends Error {
  override name = 'UnsupportedError';
}

export function match(expected: unknown, actual: unknown, options: { root: boolean; path?: string }): void {
  const path = options.path ?? '';
  const operator = specialKey(expected);
  if (operator) {
    special(
      operator,
      (expected as Record<string, unknown>)[operator],
      actual,
      actual !== undefined,
      path,
      options.root,
    );
    return;
  }
  if (isDocument(expected)) {
    if (!isDocument(actual)) fail(path, `expected a document, got ${describe(actual)}`);
    for (const [key, value] of Object.entries(expected)) {
      const childPath = path ? `${path}.${key}` : key;
      const present = Object.prototype.hasOwnProperty.call(actual, key) && actual[key] !== undefined;
      const keyOperator = specialKey(value);
      if (keyOperator) {
        special(keyOperator, (value as Record<string, unknown>)[keyOperator], actual[key], present, childPath);
        continue;
      }
      if (!present) fail(childPath, 'missing');
      match(value, actual[key], { root: false, path: childPath });
    }
    if (!options.root) {
      const extra = Object.keys(actual).filter((key) => actual[key] !== undefined && !(key in expected));
      if (extra.length > 0) fail(path, `unexpected fields ${extra.join(', ')}`);
    }
    return;
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual)) fail(path, `expected an array, got ${describe(actual)}`);
    if (actual.length !== expected.length) fail(path, `expected ${expected.length} elements, got ${actual.length}`);
    expected.forEach((item, index) => match(item, actual[index], { root: false, path: `${path}[${index}]` }));
    return;
  }
  const e = numeric(expected);
  if (e !== undefined) {
    const a = numeric(actual);
    if (a === undefined || a !== e) fail(path, `expected ${e}, got ${describe(actual)}`);
    return;
  }
  if (!sameScalar(expected, actual)) fail(path, `expected ${describe(expected)}, got ${describe(actual)}`);
}

/** An array of root-level documents (find, aggregate results): each element is a root document. */
export function matchRootList(expected: unknown, actual: unknown): void {
  if (!Array.isArray(expected) || !Array.isArray(actual)) {
    match(expected, actual, { root: true });
    return;
  }
  if (actual.length !== expected.length) fail('', `expected ${expected.length} documents, got ${actual.length}`);
  expected.forEach((item, index) => match(item, actual[index], { root: true, path: `[${index}]` }));
}

function sameScalar(expected: unknown, actual: unknown): boolean {
  if (expected === actual) return true;
  if (expected === null || actual === null || expected === undefined || actual === undefined) return false;
  const canonical = (value: unknown) => JSON.stringify(BSON.EJSON.serialize({ v: value }, { relaxed: false }));
  return canonical(expected) === canonical(actual);
}

function describe(value: unknown): string {
  try {
    const text = BSON.EJSON.stringify(value as never, { relaxed: true });
    return text.length > 120 ? `${text.slice(0, 117)}...` : text;
  } catch {
    return String(value);
  }
}
