/**
 * The fields an upsert's query gives the document it inserts (catalogue G4, 38).
 *
 * MongoDB builds an upserted document from the query's equality conditions before the update
 * applies (UpdateDriver::populateDocumentWithQueryFields on the canonical query): top-level
 * equalities (`{a: 1}`, `{a: {$eq: 1}}`), members of `$and` at any depth, a single-branch `$or`,
 * a single-value `$in` and the values of `$all` (the canonical query turns them into
 * equalities), dotted paths (`{"a.b": 1}` inserts `{a: {b: 1}}`), `_id` included. Ranges, `$in`
 * with several values, `$or` with several branches, `$nor`, `$not`, `$elemMatch`, regular
 * expressions and `$expr` give nothing. Two equalities on one path, or on a path and its prefix,
 * fail the insert with NotSingleValueField (54) "cannot infer query fields to set"; a replacement
 * takes only `_id` from the query.
 *
 * The proxy wraps every client filter in `{$and: [{<tenant>: {$eq: T}}, <client>]}`. MongoDB
 * still derives through that `$and`; FerretDB v1 derives nothing from it, so there the proxy
 * supplies exactly these fields itself: as `$setOnInsert` entries of an operator update (inert
 * when the update matches a document) and as the `_id` of a replacement. A field the update
 * itself writes (the same path, a parent or a child) is left to the update, as on MongoDB; the
 * tenant field is never derived (the tenant stamp is the proxy's own).
 *
 * Pure: raw BSON in, raw BSON out; iterative walks (queries can nest `$and`s as deep as the wire
 * layer allows).
 */
import { BsonType } from '../wire/bson-scan.js';
import { RawDocument, arrayItems, sameValue, stringOf, type RawElement, type RawValue } from '../wire/raw-bson.js';
import { pathTouchesField } from '../policy/validate.js';

/** One equality of the query, by dotted path. */
export interface DerivedField {
  path: string;
  value: RawValue;
}

/** The equalities of a query, or why MongoDB could not build a document from them. */
export type Derivation = { fields: DerivedField[] } | { conflict: string };

const DBREF_FIELDS: ReadonlySet<string> = new Set(['$ref', '$id', '$db']);

/** An operator document: its first key starts with `$` and is not a DBRef field (the server's rule). */
function isOperatorDocument(value: RawValue): boolean {
  if (value.type !== BsonType.document) return false;
  const first = RawDocument.parse(value.value).first;
  return first !== undefined && first.name.startsWith('$') && !DBREF_FIELDS.has(first.name);
}

/** The equalities a field's condition stands for (`{a: <condition>}`). */
function equalitiesOf(condition: RawValue): RawValue[] {
  if (condition.type === BsonType.regex) return []; // a pattern match, not an equality
  if (!isOperatorDocument(condition)) return [condition];
  const found: RawValue[] = [];
  for (const operator of RawDocument.parse(condition.value).elements) {
    switch (operator.name) {
      case '$eq':
        found.push(operator);
        break;
      case '$in': {
        if (operator.type !== BsonType.array) break;
        const items = arrayItems(operator);
        // The canonical query turns an $in of one value into that equality (a regex stays a match).
        const first = items[0];
        if (first !== undefined && first.type !== BsonType.regex && items.every((item) => sameValue(item, first)))
          found.push(first);
        break;
      }
      case '$all':
        // {$all: [x, y]} is parsed as x AND y: each value (not a regex, not an $elemMatch) an equality.
        if (operator.type !== BsonType.array) break;
        for (const item of arrayItems(operator)) {
          if (item.type === BsonType.regex) continue;
          if (isOperatorDocument(item)) continue;
          found.push(item);
        }
        break;
      default:
        break;
    }
  }
  return found;
}

/** A path MongoDB can build a document along: non-empty components, none `$`-prefixed. */
function buildablePath(path: string): boolean {
  return path.split('.').every((part) => part.length > 0 && !part.startsWith('$'));
}

/** `a` is `b` or a prefix of it, component by component. */
function isPrefixOrEqual(a: string, b: string): boolean {
  return a === b || b.startsWith(`${a}.`);
}

/**
 * The fields MongoDB would give a document upserted with this (client) query, in query order;
 * `{conflict}` when it would refuse to build one (its message is the server's).
 */
export function queryEqualities(filter: RawValue | undefined): Derivation {
  if (filter === undefined || filter.type !== BsonType.document) return { fields: [] };
  const fields: DerivedField[] = [];
  // The elements still to read, in query order: a member of `$and` is read where it stands.
  const stack: Array<{ elements: readonly RawElement[]; next: number }> = [
    { elements: RawDocument.parse(filter.value).elements, next: 0 },
  ];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const element = top.elements[top.next++];
    if (element === undefined) {
      stack.pop();
      continue;
    }
    const name = element.name;
    if (name === '$and' || name === '$or') {
      if (element.type !== BsonType.array) continue;
      const branches = arrayItems(element).filter((branch) => branch.type === BsonType.document);
      // A single-branch $or is that branch in the canonical query; several branches give nothing.
      if (name === '$or' && branches.length !== 1) continue;
      for (let i = branches.length - 1; i >= 0; i--) {
        stack.push({ elements: RawDocument.parse(branches[i]!.value).elements, next: 0 });
      }
      continue;
    }
    if (name.startsWith('$')) continue; // $nor, $expr, $text, $comment, $jsonSchema…: no equality
    for (const value of equalitiesOf(element)) {
      if (!buildablePath(name)) return { conflict: `cannot infer query fields to set, path '${name}' is invalid` };
      for (const seen of fields) {
        if (seen.path === name)
          return { conflict: `cannot infer query fields to set, path '${name}' is matched twice` };
        if (isPrefixOrEqual(seen.path, name) || isPrefixOrEqual(name, seen.path)) {
          return { conflict: `cannot infer query fields to set, both paths '${name}' and '${seen.path}' are matched` };
        }
      }
      fields.push({ path: name, value });
    }
  }
  return { fields };
}

/** Names a stored document can use: not empty, no dot, no leading `$`. */
function plainName(name: string): boolean {
  return name.length > 0 && !name.includes('.') && !name.startsWith('$');
}

/**
 * True when every field name in `value` (at any depth) is plain: a value whose nested names are
 * `$`-prefixed or dotted is not written by `$setOnInsert` the same way on every server.
 */
function storableValue(value: RawValue): boolean {
  const stack: RawValue[] = [value];
  while (stack.length > 0) {
    const current = stack.pop()!;
    if (current.type !== BsonType.document && current.type !== BsonType.array) continue;
    const isDocument = current.type === BsonType.document;
    for (const element of RawDocument.parse(current.value).elements) {
      if (isDocument && !plainName(element.name)) return false;
      stack.push(element);
    }
  }
  return true;
}

/** Every path an operator update writes (both ends of a `$rename`). */
export function updatedPaths(update: RawDocument): string[] {
  const paths: string[] = [];
  for (const operator of update.elements) {
    if (operator.type !== BsonType.document) continue;
    for (const target of RawDocument.parse(operator.value).elements) {
      paths.push(target.name);
      if (operator.name === '$rename' && target.type === BsonType.string) paths.push(stringOf(target));
    }
  }
  return paths;
}

/**
 * The `$setOnInsert` entries that give an operator upsert the query's fields: each derived field
 * the update does not write itself. When the update writes below a derived document (`{a: {b:
 * 1}}` with `$set: {"a.c": 2}`), that document is split into its leaves so both end up in the
 * new document, as on MongoDB. The tenant field is never derived.
 */
export function insertEntriesForOperators(
  update: RawDocument,
  fields: readonly DerivedField[],
  tenantField: string,
): RawElement[] {
  const written = updatedPaths(update);
  const entries: RawElement[] = [];
  const place = (path: string, value: RawValue): void => {
    if (!written.some((other) => pathTouchesField(other, path))) {
      if (storableValue(value)) entries.push({ name: path, type: value.type, value: value.value });
      return;
    }
    if (written.includes(path) || value.type !== BsonType.document) return; // the update's own value wins
    const children = RawDocument.parse(value.value).elements;
    if (!children.every((child) => plainName(child.name))) return;
    for (const child of children) place(`${path}.${child.name}`, child);
  };
  for (const field of fields) {
    if (pathTouchesField(field.path, tenantField)) continue;
    place(field.path, field.value);
  }
  return entries;
}

/** The `_id` a replacement upsert takes from the query when the replacement has none. */
export function replacementId(replacement: RawDocument, fields: readonly DerivedField[]): RawValue | undefined {
  if (replacement.has('_id')) return undefined;
  return fields.find((field) => field.path === '_id')?.value;
}
