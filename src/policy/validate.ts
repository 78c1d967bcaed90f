/**
 * Validation of the client documents a command carries: filters, expressions, update documents,
 * projections, sorts, hints and collations (catalogue 1, 2, 9, 11, 13, 14, 16, 37, 41, 60).
 *
 * Every walk is iterative (an explicit stack, never recursion) over the raw bytes, so a document
 * nested as deep as the wire layer lets through costs heap, not call stack. Nothing is decoded
 * into JavaScript objects; only names, types and the few scalars a rule needs are read.
 * Each function throws PolicyRefusal with a stable rule id and a message naming the location and
 * the offending name, never a value.
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType, bsonTypeName, elements, type BsonElement } from '../wire/bson-scan.js';
import { numberOf, stringOf, type RawValue } from '../wire/raw-bson.js';
import { EJSON, deserialize, serialize, type Document } from '../wire/bson.js';
import {
  ACCUMULATORS,
  COLLATION_FIELDS,
  EXPRESSION_OPERATORS,
  FIELD_QUERY_OPERATORS,
  FORBIDDEN_KEYS,
  GEO_OPERATORS,
  PROJECTION_OPERATORS,
  TEXT_FIELDS,
  UPDATE_MODIFIERS,
  UPDATE_OPERATORS,
  WINDOW_OPERATORS,
} from './operators.js';

const USER_ROLES = Buffer.from('$$USER_ROLES', 'utf8');

/** `$where` → `operator.where`, `$function` → `operator.function`, `$accumulator` → `operator.accumulator`. */
const FORBIDDEN_KEY_RULES: ReadonlyMap<string, string> = new Map(
  [...FORBIDDEN_KEYS].map((key) => [key, `operator.${key.slice(1)}`] as const),
);

/** A name for a message: quoted, escaped, bounded (names are client input). */
function quote(name: string): string {
  const shown = name.length > 64 ? `${name.slice(0, 64)}…` : name;
  return JSON.stringify(shown);
}

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

/** A string or symbol value that names the `$$USER_ROLES` variable (catalogue 11). */
function mentionsUserRoles(value: RawValue): boolean {
  return (
    (value.type === BsonType.string || value.type === BsonType.symbol) &&
    asBuffer(value.value).indexOf(USER_ROLES) !== -1
  );
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The elements of a document or array value. */
function elementsOf(value: RawValue): BsonElement[] {
  return elements(value.value, 0);
}

/** The value of an element of `parent`. */
function child(parent: RawValue, element: BsonElement): RawValue {
  return { type: element.type, value: parent.value.subarray(element.offset, element.offset + element.length) };
}

function isContainer(value: RawValue): boolean {
  return value.type === BsonType.document || value.type === BsonType.array;
}

/** BSONElement::isNumber(): the four numeric types, Decimal128 included. */
export function isNumber(value: RawValue): boolean {
  return (
    value.type === BsonType.int32 ||
    value.type === BsonType.int64 ||
    value.type === BsonType.double ||
    value.type === BsonType.decimal128
  );
}

// ---------------------------------------------------------------------------------------------
// Anywhere: JavaScript, $$USER_ROLES, duplicate keys.

export interface ForbiddenScanOptions {
  /**
   * The value is data, never evaluated: a filter, a stored document, the values of a classic
   * (operator) update. A string there that mentions `$$USER_ROLES` is text; the expressions such
   * a value can hold (`$expr` in a filter or a `$pull` condition) are walked separately and their
   * strings checked there.
   */
  literalStrings?: boolean;
}

/**
 * Refuses, at any depth: the keys `$where`, `$function`, `$accumulator` (catalogue 1, 2); BSON
 * code and code-with-scope values (types 13, 15); strings (and symbols, and key names) containing
 * `$$USER_ROLES` (catalogue 11; strings only where they can be evaluated, see
 * `literalStrings`); a key repeated within one document (G3, which the wire layer already
 * enforces).
 */
export function assertNoForbidden(value: RawValue, where: string, options: ForbiddenScanOptions = {}): void {
  const stack: RawValue[] = [value];
  while (stack.length > 0) {
    const current = stack.pop() as RawValue;
    switch (current.type) {
      case BsonType.javascript:
      case BsonType.javascriptWithScope:
        return refuse(
          'bson.code',
          `${where} contains a BSON ${bsonTypeName(current.type)} value (server-side JavaScript, catalogue 1)`,
        );
      case BsonType.string:
      case BsonType.symbol:
        if (options.literalStrings !== true && mentionsUserRoles(current)) {
          refuse('variable.user-roles', `${where} uses $$USER_ROLES (catalogue 11)`);
        }
        break;
      case BsonType.document:
      case BsonType.array: {
        const isDocument = current.type === BsonType.document;
        const seen = isDocument ? new Set<string>() : null;
        for (const element of elementsOf(current)) {
          const name = element.name;
          if (seen !== null) {
            if (seen.has(name))
              refuse(
                'bson.duplicate-key',
                `${where} repeats the key ${quote(name)} (catalogue G3)`,
                ErrorCodes.BadValue,
              );
            seen.add(name);
            const rule = FORBIDDEN_KEY_RULES.get(name);
            if (rule !== undefined) refuse(rule, `${where} uses ${name} (server-side JavaScript, catalogue 1-2)`);
            if (name.includes('$$USER_ROLES'))
              refuse('variable.user-roles', `${where} uses $$USER_ROLES (catalogue 11)`);
          }
          if (
            element.type !== BsonType.document &&
            element.type !== BsonType.array &&
            element.type !== BsonType.string &&
            element.type !== BsonType.symbol &&
            element.type !== BsonType.javascript &&
            element.type !== BsonType.javascriptWithScope
          ) {
            continue; // scalars: nothing to check
          }
          stack.push(child(current, element));
        }
        break;
      }
      default:
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The structural walker: filters, expressions, projections, $elemMatch, accumulators.

type Task =
  /** A filter document; `top` while still at the top level or inside top-level `$and`s. */
  | { kind: 'filter'; value: RawValue; top: boolean; where: string }
  /** The value given to a field in a filter (operator document or literal). */
  | { kind: 'field'; value: RawValue; top: boolean; where: string }
  /** The argument of `$elemMatch` (or a `$pull` condition). */
  | { kind: 'elemMatch'; value: RawValue; where: string }
  /** An aggregation expression. */
  | { kind: 'expr'; value: RawValue; where: string }
  /** A find projection document. */
  | { kind: 'projection'; value: RawValue; where: string };

class Walker {
  private readonly stack: Task[] = [];
  private textOperators = 0;

  push(task: Task): this {
    this.stack.push(task);
    return this;
  }

  run(): void {
    while (this.stack.length > 0) {
      const task = this.stack.pop() as Task;
      switch (task.kind) {
        case 'filter':
          this.filter(task.value, task.top, task.where);
          break;
        case 'field':
          this.field(task.value, task.top, task.where);
          break;
        case 'elemMatch':
          this.elemMatch(task.value, task.where);
          break;
        case 'expr':
          this.expression(task.value, task.where);
          break;
        case 'projection':
          this.projection(task.value, task.where);
          break;
      }
    }
  }

  private filter(value: RawValue, top: boolean, where: string): void {
    if (value.type !== BsonType.document) {
      refuse('filter.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
    }
    for (const element of elementsOf(value)) {
      const name = element.name;
      const item = child(value, element);
      if (!name.startsWith('$')) {
        this.stack.push({ kind: 'field', value: item, top, where: `${where}.${name}` });
        continue;
      }
      switch (name) {
        case '$and':
        case '$or':
        case '$nor': {
          if (item.type !== BsonType.array)
            refuse('filter.invalid', `${where}.${name} must be an array`, ErrorCodes.BadValue);
          const branchTop = top && name === '$and';
          elementsOf(item).forEach((branch, index) => {
            this.stack.push({
              kind: 'filter',
              value: child(item, branch),
              top: branchTop,
              where: `${where}.${name}[${index}]`,
            });
          });
          break;
        }
        case '$expr':
          this.stack.push({ kind: 'expr', value: item, where: `${where}.$expr` });
          break;
        case '$jsonSchema':
          // Self-contained (catalogue 12); JavaScript and $$USER_ROLES were refused by the forbidden scan.
          if (item.type !== BsonType.document)
            refuse('filter.invalid', `${where}.$jsonSchema must be a document`, ErrorCodes.BadValue);
          break;
        case '$text':
          this.text(item, top, where);
          break;
        case '$comment':
          break;
        case '$sampleRate':
          if (!isNumber(item)) refuse('filter.invalid', `${where}.$sampleRate must be a number`, ErrorCodes.BadValue);
          break;
        default:
          // The server: "unknown top level operator" (BadValue).
          refuse(
            'operator.unknown',
            `${where} uses ${quote(name)}, which is not an allowed query operator (catalogue 16)`,
            ErrorCodes.BadValue,
          );
      }
    }
  }

  private text(item: RawValue, top: boolean, where: string): void {
    if (!top) {
      refuse(
        'filter.text-placement',
        `${where}: $text is allowed only at the top level of a filter or in a top-level $and (catalogue 13)`,
        ErrorCodes.BadValue,
      );
    }
    if (++this.textOperators > 1) {
      refuse('filter.text-placement', `${where}: a filter may hold one $text (catalogue 13)`, ErrorCodes.BadValue);
    }
    if (item.type !== BsonType.document)
      refuse('filter.invalid', `${where}.$text must be a document`, ErrorCodes.BadValue);
    for (const field of elementsOf(item)) {
      if (!TEXT_FIELDS.has(field.name)) {
        refuse(
          'operator.unknown',
          `${where}.$text has the field ${quote(field.name)}, which is not allowed`,
          ErrorCodes.BadValue,
        );
      }
    }
  }

  /** Whether a document value is an operator document (first key `$…`, not a DBRef). */
  private static isOperatorDocument(value: RawValue): BsonElement[] | null {
    if (value.type !== BsonType.document) return null;
    const found = elementsOf(value);
    const first = found[0];
    if (first === undefined || !first.name.startsWith('$')) return null;
    if (first.name === '$ref' || first.name === '$id' || first.name === '$db') return null;
    return found;
  }

  private field(value: RawValue, top: boolean, where: string): void {
    const operators = Walker.isOperatorDocument(value);
    if (operators === null) return; // a literal: equality with a value or a document
    for (const element of operators) {
      const name = element.name;
      const item = child(value, element);
      if (!FIELD_QUERY_OPERATORS.has(name)) {
        // The server: "unknown operator" (BadValue).
        refuse(
          'operator.unknown',
          `${where} uses ${quote(name)}, which is not an allowed query operator (catalogue 16)`,
          ErrorCodes.BadValue,
        );
      }
      switch (name) {
        case '$not':
          if (item.type === BsonType.document)
            this.stack.push({ kind: 'field', value: item, top: false, where: `${where}.$not` });
          break;
        case '$elemMatch':
          this.stack.push({ kind: 'elemMatch', value: item, where: `${where}.$elemMatch` });
          break;
        case '$near':
        case '$nearSphere':
          if (!top) {
            refuse(
              'filter.geo-placement',
              `${where}: ${name} is allowed only at the top level of a filter or in a top-level $and (catalogue 14)`,
              ErrorCodes.BadValue,
            );
          }
          this.geo(item, `${where}.${name}`);
          break;
        case '$geoWithin':
        case '$geoIntersects':
          this.geo(item, `${where}.${name}`);
          break;
        case '$all':
          if (item.type === BsonType.array) {
            elementsOf(item).forEach((entry, index) => {
              const entryValue = child(item, entry);
              const inner = Walker.isOperatorDocument(entryValue);
              if (inner === null) return;
              for (const op of inner) {
                if (op.name !== '$elemMatch') {
                  refuse(
                    'operator.unknown',
                    `${where}.$all[${index}] uses ${quote(op.name)}; only $elemMatch is allowed there`,
                    ErrorCodes.BadValue,
                  );
                }
                this.stack.push({
                  kind: 'elemMatch',
                  value: child(entryValue, op),
                  where: `${where}.$all[${index}].$elemMatch`,
                });
              }
            });
          }
          break;
        default:
          break; // literal operands ($eq, $in, $regex, …)
      }
    }
  }

  private geo(item: RawValue, where: string): void {
    if (item.type !== BsonType.document) return; // legacy coordinate pairs
    for (const element of elementsOf(item)) {
      if (element.name.startsWith('$') && !GEO_OPERATORS.has(element.name)) {
        refuse(
          'operator.unknown',
          `${where} uses ${quote(element.name)}, which is not an allowed geospatial operator`,
          ErrorCodes.BadValue,
        );
      }
    }
  }

  private elemMatch(value: RawValue, where: string): void {
    if (value.type !== BsonType.document) refuse('filter.invalid', `${where} must be a document`, ErrorCodes.BadValue);
    const first = elementsOf(value)[0];
    if (first !== undefined && first.name.startsWith('$') && FIELD_QUERY_OPERATORS.has(first.name)) {
      this.stack.push({ kind: 'field', value, top: false, where });
    } else {
      this.stack.push({ kind: 'filter', value, top: false, where });
    }
  }

  private expression(value: RawValue, where: string): void {
    // An evaluated string naming $$USER_ROLES (also checked here for callers that scan data
    // with `literalStrings`).
    if (mentionsUserRoles(value)) refuse('variable.user-roles', `${where} uses $$USER_ROLES (catalogue 11)`);
    if (!isContainer(value)) return; // literals, field paths and variables
    const isDocument = value.type === BsonType.document;
    elementsOf(value).forEach((element, index) => {
      const name = element.name;
      const item = child(value, element);
      if (isDocument && name.startsWith('$')) {
        if (!EXPRESSION_OPERATORS.has(name)) {
          // The server: "Unrecognized expression" (InvalidPipelineOperator).
          refuse(
            'operator.unknown',
            `${where} uses ${quote(name)}, which is not an allowed expression operator (catalogue 11)`,
            ErrorCodes.InvalidPipelineOperator,
          );
        }
        if (name === '$literal') return; // not evaluated
        this.stack.push({ kind: 'expr', value: item, where: `${where}.${name}` });
        return;
      }
      const at = isDocument ? `${where}.${name}` : `${where}[${index}]`;
      if (isContainer(item)) this.stack.push({ kind: 'expr', value: item, where: at });
      else if (mentionsUserRoles(item)) refuse('variable.user-roles', `${at} uses $$USER_ROLES (catalogue 11)`);
    });
  }

  private projection(value: RawValue, where: string): void {
    if (value.type !== BsonType.document)
      refuse('projection.invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
    for (const element of elementsOf(value)) {
      const name = element.name;
      const item = child(value, element);
      const at = `${where}.${name}`;
      if (name.startsWith('$'))
        refuse(
          'projection.invalid',
          `${where} has the field ${quote(name)}; projected fields cannot start with $`,
          ErrorCodes.BadValue,
        );
      if (item.type === BsonType.array) {
        this.stack.push({ kind: 'expr', value: item, where: at });
        continue;
      }
      if (item.type !== BsonType.document) continue; // 0/1/true/false, or a field path / literal
      const inner = elementsOf(item);
      const first = inner[0];
      if (first === undefined || !first.name.startsWith('$')) {
        this.stack.push({ kind: 'projection', value: item, where: at });
        continue;
      }
      if (inner.length === 1 && PROJECTION_OPERATORS.has(first.name)) {
        const operand = child(item, first);
        if (first.name === '$elemMatch')
          this.stack.push({ kind: 'elemMatch', value: operand, where: `${at}.$elemMatch` });
        else if (first.name === '$slice') this.stack.push({ kind: 'expr', value: operand, where: `${at}.$slice` });
        continue; // $meta: a string
      }
      this.stack.push({ kind: 'expr', value: item, where: at });
    }
  }
}

/**
 * Validates a filter (find `filter`, count/distinct `query`, `q`, `$match`, `arrayFilters`
 * entries…): JavaScript and `$$USER_ROLES` anywhere; query operators from the allowlist, switching
 * to expression operators under `$expr`; `$text` and `$near`/`$nearSphere` only at the top level
 * or in a top-level `$and` (catalogue 13, 14), one `$text` per filter.
 */
export function validateFilter(value: RawValue, where: string): void {
  if (value.type !== BsonType.document)
    refuse('filter.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
  assertNoForbidden(value, where, { literalStrings: true });
  new Walker().push({ kind: 'filter', value, top: true, where }).run();
}

/** Validates an aggregation expression (`$expr`, `$project` / `$addFields` values, `let`…). */
export function validateExpression(value: RawValue, where: string): void {
  assertNoForbidden(value, where);
  new Walker().push({ kind: 'expr', value, where }).run();
}

/**
 * Validates a find projection (or findAndModify `fields`): field names, `$elemMatch`, `$slice`,
 * `$meta` and expressions (allowed in projections since 4.4, so JavaScript is refused, catalogue 2).
 */
export function validateProjection(value: RawValue, where: string): void {
  if (value.type !== BsonType.document)
    refuse('projection.invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
  assertNoForbidden(value, where);
  new Walker().push({ kind: 'projection', value, where }).run();
}

/**
 * Validates one accumulator field of `$group` (`{$sum: <expr>}`) or one output field of
 * `$setWindowFields` (`{$sum: <expr>, window: {…}}`): exactly one allowed operator, whose argument
 * is an expression. `$accumulator` is refused (catalogue 2).
 */
export function validateAccumulatorField(value: RawValue, where: string, context: 'group' | 'window'): void {
  assertNoForbidden(value, where);
  if (value.type !== BsonType.document)
    refuse('accumulator.invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
  const allowed = context === 'group' ? ACCUMULATORS : WINDOW_OPERATORS;
  let operators = 0;
  const walker = new Walker();
  for (const element of elementsOf(value)) {
    const name = element.name;
    if (context === 'window' && name === 'window') {
      if (element.type !== BsonType.document)
        refuse('accumulator.invalid', `${where}.window must be a document`, ErrorCodes.BadValue);
      continue;
    }
    if (!name.startsWith('$') || !allowed.has(name)) {
      // The server: "unknown group operator" (15952), "Unrecognized window function" (FailedToParse).
      refuse(
        'operator.unknown',
        `${where} uses ${quote(name)}, which is not an allowed ${context === 'group' ? 'accumulator' : 'window operator'}`,
        context === 'group' ? ErrorCodes.Location15952 : ErrorCodes.FailedToParse,
      );
    }
    operators++;
    walker.push({ kind: 'expr', value: child(value, element), where: `${where}.${name}` });
  }
  if (operators !== 1) refuse('accumulator.invalid', `${where} must name exactly one operator`, ErrorCodes.BadValue);
  walker.run();
}

// ---------------------------------------------------------------------------------------------
// Updates.

/** True when `u` is an update pipeline (4.2+), which is validated and rewritten as a pipeline. */
export function isUpdatePipeline(u: RawValue): boolean {
  return u.type === BsonType.array;
}

export type UpdateKind = 'operators' | 'replacement' | 'pipeline';

const POSITIONAL = /^\$(\[[^\]]*\])?$/;

/**
 * True when writing `path` can change `field` (or the other way round): one is a prefix of the
 * other, component by component, with positional (`$`, `$[]`, `$[id]`) and numeric components
 * matching anything.
 */
export function pathTouchesField(path: string, field: string): boolean {
  const a = path.split('.');
  const b = field.split('.');
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i] as string;
    const y = b[i] as string;
    if (x === y) continue;
    if (i > 0 && (POSITIONAL.test(x) || /^\d+$/.test(x))) continue;
    return false;
  }
  return true;
}

/**
 * Validates an update document (`u`, findAndModify `update`, bulkWrite `updateMods`) and says
 * which kind it is:
 *  - operators: every top-level key an allowed update operator, each once (catalogue 41), each
 *    with a document value; no path under any operator that touches the tenant field (`tenantId`,
 *    `tenantId.x`, `tenantId.$`, `tenantId.$[]`, `tenantId.$[id]`), and `$rename` neither from nor
 *    to it (catalogue 37); `$pull` conditions validated as filters;
 *  - replacement: no `$` key at the top level (the tenant is stamped by the write handler,
 *    catalogue 39);
 *  - pipeline: an array (catalogue 40): only scanned here for JavaScript and `$$USER_ROLES`; its
 *    stages must be validated and rewritten as an update pipeline by the caller.
 */
export function validateUpdateDocument(u: RawValue, tenantField: string, where: string): UpdateKind {
  if (u.type === BsonType.array) {
    assertNoForbidden(u, where);
    return 'pipeline';
  }
  if (u.type !== BsonType.document)
    refuse('update.invalid', `${where} must be a document or a pipeline`, ErrorCodes.TypeMismatch);
  const found = elementsOf(u);
  const first = found[0];
  if (first === undefined || !first.name.startsWith('$')) {
    for (const element of found) {
      if (element.name.startsWith('$')) {
        refuse(
          'update.mixed',
          `${where} mixes update operators and replacement fields (${quote(element.name)})`,
          ErrorCodes.BadValue,
        );
      }
    }
    assertNoForbidden(u, where, { literalStrings: true });
    return 'replacement';
  }
  const seen = new Set<string>();
  const walker = new Walker();
  for (const element of found) {
    const operator = element.name;
    if (!operator.startsWith('$')) {
      refuse(
        'update.mixed',
        `${where} mixes update operators and replacement fields (${quote(operator)})`,
        ErrorCodes.BadValue,
      );
    }
    if (!UPDATE_OPERATORS.has(operator)) {
      // The server: "Unknown modifier" (FailedToParse).
      refuse(
        'operator.unknown',
        `${where} uses ${quote(operator)}, which is not an allowed update operator`,
        ErrorCodes.FailedToParse,
      );
    }
    if (seen.has(operator)) {
      refuse('update.duplicate-operator', `${where} repeats ${operator} (catalogue 41)`, ErrorCodes.BadValue);
    }
    seen.add(operator);
    const operand = child(u, element);
    if (operand.type !== BsonType.document) {
      refuse('update.invalid', `${where}.${operator} must be a document`, ErrorCodes.TypeMismatch);
    }
    for (const target of elementsOf(operand)) {
      const path = target.name;
      const at = `${where}.${operator}`;
      if (path.length === 0 || path.startsWith('$')) {
        refuse(
          'update.invalid',
          `${at} names the path ${quote(path)}; update paths cannot be empty or start with $`,
          ErrorCodes.BadValue,
        );
      }
      if (pathTouchesField(path, tenantField)) {
        refuse('update.tenant-field', `${at} writes the tenant field through ${quote(path)} (catalogue 37)`);
      }
      const value = child(operand, target);
      switch (operator) {
        case '$rename': {
          if (value.type !== BsonType.string)
            refuse('update.invalid', `${at}.${path} must be a string`, ErrorCodes.TypeMismatch);
          const to = asBuffer(value.value).toString('utf8', 4, value.value.length - 1);
          if (to.length === 0 || to.startsWith('$')) {
            refuse(
              'update.invalid',
              `${at} renames to ${quote(to)}; update paths cannot be empty or start with $`,
              ErrorCodes.BadValue,
            );
          }
          if (pathTouchesField(to, tenantField)) {
            refuse('update.tenant-field', `${at} renames ${quote(path)} onto the tenant field (catalogue 37)`);
          }
          break;
        }
        case '$pull':
          if (value.type === BsonType.document) walker.push({ kind: 'elemMatch', value, where: `${at}.${path}` });
          break;
        case '$push':
        case '$addToSet': {
          if (value.type !== BsonType.document) break;
          const modifiers = elementsOf(value);
          if (modifiers[0] === undefined || !modifiers[0].name.startsWith('$')) break; // a document pushed as is
          for (const modifier of modifiers) {
            if (!UPDATE_MODIFIERS.has(modifier.name)) {
              refuse(
                'operator.unknown',
                `${at}.${path} uses ${quote(modifier.name)}, which is not an allowed update modifier`,
                ErrorCodes.BadValue,
              );
            }
          }
          break;
        }
        default:
          break;
      }
    }
  }
  assertNoForbidden(u, where, { literalStrings: true });
  walker.run();
  return 'operators';
}

// ---------------------------------------------------------------------------------------------
// Sort, hint, collation.

/** Validates a sort document: field names (or `$natural`) with 1, -1 or `{$meta: "…"}`. */
export function validateSort(value: RawValue, where: string): void {
  if (value.type !== BsonType.document) refuse('sort.invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
  for (const element of elementsOf(value)) {
    const name = element.name;
    if (name.startsWith('$') && name !== '$natural') {
      refuse('sort.invalid', `${where} sorts on ${quote(name)}; sort fields cannot start with $`, ErrorCodes.BadValue);
    }
    const item = child(value, element);
    if (isNumber(item)) {
      const n = numberOf(item);
      if (n === 1 || n === -1) continue;
      refuse('sort.invalid', `${where}.${name} must be 1 or -1`, ErrorCodes.BadValue);
    }
    if (item.type === BsonType.document) {
      const inner = elementsOf(item);
      if (inner.length === 1 && inner[0]!.name === '$meta' && inner[0]!.type === BsonType.string) continue;
    }
    refuse('sort.invalid', `${where}.${name} must be 1, -1 or {$meta: <string>}`, ErrorCodes.BadValue);
  }
}

/**
 * Validates a hint: an index name (string) or a key pattern (document). With
 * `requireTenantPrefix` (shared-collection namespaces), a key pattern must start with the tenant
 * field, so the tenant predicate is applied through the index before any client predicate
 * (catalogue 60); `$natural` is refused there too. An index name cannot be checked here.
 */
export function validateHint(value: RawValue, where: string, tenantField: string, requireTenantPrefix: boolean): void {
  if (value.type === BsonType.string) {
    if (value.value.length <= 5)
      refuse('hint.invalid', `${where} must not be an empty index name`, ErrorCodes.BadValue);
    return;
  }
  if (value.type !== BsonType.document)
    refuse('hint.invalid', `${where} must be an index name or a key pattern`, ErrorCodes.TypeMismatch);
  const keys = elementsOf(value);
  if (keys.length === 0) refuse('hint.invalid', `${where} must not be an empty key pattern`, ErrorCodes.BadValue);
  for (const key of keys) {
    if (key.name.startsWith('$') && key.name !== '$natural') {
      refuse('hint.invalid', `${where} names ${quote(key.name)}; index keys cannot start with $`, ErrorCodes.BadValue);
    }
    const item = child(value, key);
    if (!isNumber(item) && item.type !== BsonType.string) {
      refuse('hint.invalid', `${where}.${key.name} must be a number or an index type`, ErrorCodes.BadValue);
    }
  }
  if (requireTenantPrefix && keys[0]!.name !== tenantField) {
    refuse('hint.not-tenant-prefixed', `${where} must name an index that starts with the tenant field (catalogue 60)`);
  }
}

/**
 * A hint that only chooses a whole-collection access path: `{$natural: 1 | -1}`, `{_id: 1 | -1}` or
 * the name `_id_` (what mongodump and mongorestore send). In a tenant-filtered namespace such a hint
 * is dropped instead of forwarded (rule `hint.scan-dropped`): a hint never changes which documents
 * match, only the plan, and without it the server plans the tenant predicate on the tenant-prefixed
 * index, so client expressions are not evaluated on other tenants' documents first and no scan of
 * every tenant's documents is timed (catalogue 60, 62). The cost: the order of an unsorted result.
 */
export function isScanHint(value: RawValue): boolean {
  if (value.type === BsonType.string) return stringOf(value) === '_id_';
  if (value.type !== BsonType.document) return false;
  const keys = elementsOf(value);
  if (keys.length !== 1) return false;
  const key = keys[0]!;
  if (key.name !== '$natural' && key.name !== '_id') return false;
  const item = child(value, key);
  return isNumber(item) && (numberOf(item) === 1 || numberOf(item) === -1);
}

/**
 * A private database per tenant (isolation.tenancy): the physical hint for a client's hint on a
 * shared collection. A key pattern gets the tenant field in front (every tenant index is
 * tenant-prefixed upstream); a name is looked up in `names` (the tenant's own indexes) and becomes
 * its prefixed key pattern. undefined: the hint stays as sent (`$natural`, already prefixed).
 */
export function tenantHint(
  value: RawValue,
  where: string,
  tenantField: string,
  names: ReadonlyMap<string, Document> | undefined,
  namespace: string,
): RawValue | undefined {
  // Only tenant-prefixed indexes may be hinted: not _id, not a collection scan (catalogue 60).
  const unprefixed = (): never =>
    refuse('hint.not-tenant-prefixed', `${where} must name an index that starts with the tenant field (catalogue 60)`);
  let key: Document;
  if (value.type === BsonType.string) {
    const name = stringOf(value);
    if (name === '_id_') unprefixed();
    const found = names?.get(`${namespace}\0${name}`);
    if (found === undefined)
      refuse(
        'hint.unknown-index',
        `${where}: hint provided does not correspond to an existing index`,
        ErrorCodes.BadValue,
      );
    key = found;
  } else {
    key = deserialize(value.value);
    const first = Object.keys(key)[0];
    if (first === tenantField) return undefined;
    if (first === '$natural' || (first === '_id' && Object.keys(key).length === 1)) unprefixed();
    // Only a key of one of the tenant's own (or declared) indexes: an unindexed hint would be a scan of every tenant.
    const wanted = EJSON.stringify(key, { relaxed: true });
    const known = [...(names ?? [])].some(
      ([entry, indexKey]) =>
        entry.startsWith(`${namespace}\0`) && EJSON.stringify(indexKey, { relaxed: true }) === wanted,
    );
    if (!known)
      refuse(
        'hint.unknown-index',
        `${where}: hint provided does not correspond to an existing index`,
        ErrorCodes.BadValue,
      );
  }
  return { type: BsonType.document, value: serialize({ [tenantField]: 1, ...key }) };
}

export interface CollationOptions {
  /**
   * The tenant id is a string: strength 1 or 2 would make the injected tenant equality case- or
   * accent-insensitive (catalogue 9), so they are refused.
   */
  tenantIsString?: boolean;
}

const COLLATION_TYPES: ReadonlyMap<string, 'string' | 'boolean' | 'number'> = new Map([
  ['locale', 'string'],
  ['caseLevel', 'boolean'],
  ['caseFirst', 'string'],
  ['strength', 'number'],
  ['numericOrdering', 'boolean'],
  ['alternate', 'string'],
  ['maxVariable', 'string'],
  ['backwards', 'boolean'],
  ['normalization', 'boolean'],
]);

/**
 * Validates a collation document (known fields of the right types, `locale` required). Collations
 * are allowed: the tenant id should be a non-string type, which no collation affects (catalogue 9,
 * G8); with `tenantIsString`, strengths 1 and 2 are refused.
 */
export function validateCollation(value: RawValue, where: string, options: CollationOptions = {}): void {
  if (value.type !== BsonType.document)
    refuse('collation.invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
  let hasLocale = false;
  for (const element of elementsOf(value)) {
    const name = element.name;
    const expected = COLLATION_TYPES.get(name);
    if (expected === undefined || !COLLATION_FIELDS.has(name)) {
      refuse('collation.invalid', `${where} has the unknown field ${quote(name)}`, ErrorCodes.BadValue);
    }
    const item = child(value, element);
    const ok =
      expected === 'string'
        ? item.type === BsonType.string
        : expected === 'boolean'
          ? item.type === BsonType.boolean
          : isNumber(item);
    if (!ok) refuse('collation.invalid', `${where}.${name} must be a ${expected}`, ErrorCodes.TypeMismatch);
    if (name === 'locale') hasLocale = true;
    // Even at strength 3 these make different ids compare equal: "ac-me" = "acme" (shifted),
    // "t01" = "t1" (numericOrdering) (catalogue 9).
    if (options.tenantIsString === true && name === 'alternate' && stringOf(item) === 'shifted') {
      refuse(
        'collation.tenant-string',
        `${where}.alternate "shifted" would compare string tenant ids loosely (catalogue 9)`,
      );
    }
    if (options.tenantIsString === true && name === 'numericOrdering' && item.value[0] === 1) {
      refuse(
        'collation.tenant-string',
        `${where}.numericOrdering would compare string tenant ids loosely (catalogue 9)`,
      );
    }
    if (name === 'strength') {
      const strength = numberOf(item);
      if (strength === undefined || !Number.isInteger(strength) || strength < 1 || strength > 5) {
        refuse('collation.invalid', `${where}.strength must be an integer from 1 to 5`, ErrorCodes.BadValue);
      }
      if (options.tenantIsString === true && strength < 3) {
        refuse(
          'collation.tenant-string',
          `${where}.strength below 3 would compare string tenant ids loosely (catalogue 9)`,
        );
      }
    }
  }
  if (!hasLocale) refuse('collation.invalid', `${where} must have a locale`, ErrorCodes.BadValue);
}
