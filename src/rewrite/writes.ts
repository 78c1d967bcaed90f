/**
 * Write commands: insert, update, delete, findAndModify (both spellings) and bulkWrite.
 * Catalogue items 18, 19, 37-43, 50 and 61 (docs/threat-catalogue.md).
 *
 * Every handler resolves the namespaces it names (physical names go into the forwarded body),
 * reads its items from the body array or the kind-1 sequence of the same identifier (and keeps
 * them as a sequence when they came as one), validates every filter, update, pipeline and
 * document, and, in shared collections:
 *   - wraps every filter as `{$and: [{<field>: {$eq: T}}, <client filter>]}` (G4);
 *   - stamps every inserted or replacement document with T, after `_id` (a different client
 *     value is refused, an array or null one too: G8);
 *   - ends every update pipeline with `{$set: {<field>: {$literal: T}}}` (catalogue 40);
 *   - with a string tenant value, adds `collation: {locale: "simple"}` to every update / delete
 *     statement, bulkWrite update / delete op and findAndModify that has none (where the upstream
 *     supports collation), so a collection's default collation cannot compare T loosely (9).
 * Client values that are not rewritten are reused byte for byte (RawDocument splices elements).
 * w:0 (moreToCome) writes are rewritten exactly the same way (catalogue 50).
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType, DocumentFact } from '../wire/bson-scan.js';
import {
  RawDocument,
  arrayItems,
  arrayOf,
  documentOf,
  elementOf,
  numberOf,
  sameValue,
  stringOf,
  truthy,
  valueOf,
  type RawElement,
  type RawValue,
} from '../wire/raw-bson.js';
import {
  assertNoForbidden,
  validateCollation,
  validateExpression,
  validateFilter,
  isScanHint,
  validateHint,
  tenantHint,
  validateProjection,
  validateSort,
  validateUpdateDocument,
} from '../policy/validate.js';
import { tenantFilter } from './filter.js';
import { capMaxTimeMS } from '../policy/limits.js';
import { insertEntriesForOperators, queryEqualities, replacementId, type DerivedField } from './upsert.js';
import { validateExpressionFields } from './pipeline.js';
import { assertAllowedFields } from '../policy/commands.js';
import { StoredDocumentScan, scanStoredDocument } from '../policy/stored-document.js';
import { writeInt32LE } from '../wire/header.js';
import type { CopyJob } from '../wire/copy-job.js';
import type {
  CommandHandler,
  CommandInput,
  ResolvedNamespace,
  RewriteNote,
  RewriteResult,
  TenantContext,
} from '../policy/types.js';

/** The server's limit for a user document (BSONObjMaxUserSize): stamping never goes past it (catalogue 51). */
export const MAX_USER_DOCUMENT_SIZE = 16 * 1024 * 1024;

const UPDATE_STATEMENT_FIELDS = new Set([
  'q',
  'u',
  'c',
  'upsert',
  'multi',
  'arrayFilters',
  'hint',
  'collation',
  'sort',
]);
const DELETE_STATEMENT_FIELDS = new Set(['q', 'limit', 'collation', 'hint']);
const BULK_INSERT_FIELDS = new Set(['insert', 'document']);
const BULK_UPDATE_FIELDS = new Set([
  'update',
  'filter',
  'updateMods',
  'arrayFilters',
  'multi',
  'hint',
  'upsert',
  'sort',
  'collation',
  'constants',
]);
const BULK_DELETE_FIELDS = new Set(['delete', 'filter', 'multi', 'hint', 'collation']);
const NS_INFO_FIELDS = new Set(['ns']);
const BULK_CURSOR_FIELDS = new Set(['batchSize']);

const EMPTY_DOCUMENT: RawValue = documentOf([]);

/** The only stages of a pipeline-style update (catalogue 40). */
const UPDATE_PIPELINE_STAGES = new Set(['$addFields', '$set', '$project', '$unset', '$replaceRoot', '$replaceWith']);

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

/** Notes, one per (kind, rule, namespace): a 100,000-document batch still yields a handful. */
class Notes {
  readonly list: RewriteNote[] = [];
  private readonly seen = new Set<string>();

  add(rule: string, namespace?: string): void {
    const key = `${rule}\0${namespace ?? ''}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.list.push(namespace === undefined ? { kind: 'rewrite', rule } : { kind: 'rewrite', rule, namespace });
  }
}

/** One namespace as the client named it and as the server knows it. */
interface Target {
  clientNs: string;
  resolved: ResolvedNamespace;
}

/** Everything the per-item rewriters need. */
interface Scope {
  context: TenantContext;
  notes: Notes;
  target: Target;
  /** The client documents passed validateDocument with duplicate keys rejected (CommandInput.validated). */
  validated: boolean;
}

function asDocumentValue(bytes: Uint8Array): RawValue {
  return { type: BsonType.document, value: bytes };
}

function parseDocument(value: RawValue, where: string): RawDocument {
  if (value.type !== BsonType.document)
    refuse('write.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
  return RawDocument.parse(value.value);
}

/** A repeated name in one document is read differently by the server and by us (G3, catalogue 41). */
function assertUniqueNames(doc: RawDocument, where: string): void {
  const names = new Set<string>();
  for (const { name } of doc.elements) {
    if (names.has(name)) refuse('document.duplicate-key', `${where} repeats the field "${name}"`, ErrorCodes.BadValue);
    names.add(name);
  }
}

function assertKnownFields(doc: RawDocument, allowed: ReadonlySet<string>, where: string, rule: string): void {
  assertUniqueNames(doc, where);
  for (const { name } of doc.elements) {
    if (name === 'rawData')
      refuse('write.raw-data', `${where}: rawData addresses raw time-series buckets and is not allowed`);
    if (!allowed.has(name)) refuse(rule, `${where}: the field "${name}" is not allowed`, ErrorCodes.Location40415);
  }
}

/** Only the kind-1 sequences a command takes are accepted (catalogue 47). */
function assertSequences(input: CommandInput, allowed: readonly string[]): void {
  for (const identifier of input.sequences.keys()) {
    if (!allowed.includes(identifier)) {
      refuse(
        'opmsg.sequence',
        `${input.name} does not take a "${identifier}" document sequence`,
        ErrorCodes.Location40433,
      );
    }
  }
}

/** The collection named by the command's first element: a string, never a UUID (catalogue 17). */
function commandCollection(input: CommandInput): string {
  const first = input.body.first;
  if (first === undefined || first.type !== BsonType.string) {
    refuse('namespace.not-string', `${input.name} must name its collection with a string`, ErrorCodes.InvalidNamespace);
  }
  return stringOf(first);
}

function resolveTarget(context: TenantContext, db: string, coll: string): Target {
  return { clientNs: `${db}.${coll}`, resolved: context.namespaces.resolve(db, coll, 'write') };
}

function namesDiffer(target: Target): boolean {
  return target.clientNs !== `${target.resolved.db}.${target.resolved.coll}`;
}

function needsNameMapping(target: Target): boolean {
  return target.resolved.model !== 'shared-collection' || namesDiffer(target);
}

/** The body with the physical collection as the command's value and the physical `$db`. */
function withPhysicalNames(body: RawDocument, target: Target, notes: Notes): RawDocument {
  const commandName = body.first!.name;
  if (namesDiffer(target)) notes.add('namespace.map', target.clientNs);
  return body.with(commandName, valueOf(target.resolved.coll)).with('$db', valueOf(target.resolved.db));
}

/** Items of `field`: from the kind-1 sequence, or else from the body array; each a document. */
function readItems(input: CommandInput, field: string): { items: RawValue[]; sequence: boolean } {
  const fromBody = input.body.get(field);
  const fromSequence = input.sequences.get(field);
  if (fromBody !== undefined && fromSequence !== undefined) {
    refuse(
      'opmsg.sequence-duplicate',
      `${field} is both in the body and in a document sequence`,
      ErrorCodes.Location40433,
    );
  }
  if (fromSequence !== undefined) return { items: fromSequence.map(asDocumentValue), sequence: true };
  if (fromBody === undefined)
    refuse('write.missing-field', `${input.name} requires ${field}`, ErrorCodes.FailedToParse);
  if (fromBody.type !== BsonType.array) refuse('write.not-array', `${field} must be an array`, ErrorCodes.TypeMismatch);
  const items = arrayItems(fromBody);
  items.forEach((item, index) => {
    if (item.type !== BsonType.document)
      refuse('write.not-document', `${field}.${index} must be a document`, ErrorCodes.TypeMismatch);
  });
  return { items, sequence: false };
}

/** Puts rewritten items back where they came from: a sequence stays a sequence. */
function placeItems(
  body: RawDocument,
  sequences: Map<string, readonly Uint8Array[]>,
  field: string,
  items: readonly RawValue[],
  sequence: boolean,
  copies?: CopyJob,
): RawDocument {
  if (sequence) {
    sequences.set(
      field,
      items.map((item) => item.value),
    );
    return body;
  }
  // Items all as they were (nothing stamped): the client's array itself, not a copy.
  return body.with(field, arrayOf(items, body.get(field), copies));
}

/** maxTimeMS = min(client, cap), the cap when the client sends none or 0 (catalogue 15, 62). */
function capMaxTime(body: RawDocument, context: TenantContext, notes: Notes): RawDocument {
  const capped = capMaxTimeMS(body, context.maxTimeMS);
  if (capped !== body) notes.add('maxTimeMS.cap');
  return capped;
}

/**
 * Everything in the body except the items (each checked by its own rewriter) is scanned for
 * JavaScript, `$$USER_ROLES` and duplicate keys (catalogue 1, 2, 11, G3); `let` holds
 * expressions, validated as such.
 */
function checkBody(body: RawDocument, items: readonly string[], where: string): void {
  for (const element of body.elements) {
    // A comment is never evaluated: any BSON is fine there (it only shows in the server's logs).
    if (items.includes(element.name) || element.name === 'comment') continue;
    assertNoForbidden(element, `${where}.${element.name}`);
  }
  const variables = body.get('let');
  if (variables !== undefined) validateExpressionFields(variables, `${where}.let`);
}

/**
 * A document to store (insert, replacement): top-level names neither `$`-prefixed nor dotted
 * (catalogue 42), nothing forbidden inside, and in shared collections the tenant field equal to
 * T: added right after `_id` (or first) when absent, kept when byte-equal, refused otherwise
 * (an array or null tenant too: catalogue 8, G8). Never more than 16 MiB (catalogue 51).
 */
function stampDocumentChecked(
  value: RawValue,
  scope: Scope,
  where: string,
  rulePrefix: 'insert' | 'replacement',
): RawValue {
  const doc = parseDocument(value, where);
  assertUniqueNames(doc, where);
  for (const { name } of doc.elements) {
    if (name.startsWith('$'))
      refuse('document.dollar-field', `${where}: top-level field names may not start with "$"`, ErrorCodes.BadValue);
    if (name.includes('.'))
      refuse('document.dotted-field', `${where}: top-level field names may not contain "."`, ErrorCodes.BadValue);
  }
  // Stored data: a string mentioning $$USER_ROLES is text, never evaluated.
  assertNoForbidden(value, where, { literalStrings: true });
  const { context, target } = scope;
  if (!target.resolved.tenantFiltered) return value;

  const field = context.field;
  const existing = doc.get(field);
  if (existing !== undefined) {
    if (existing.type === BsonType.array || existing.type === BsonType.null || existing.type === BsonType.undefined) {
      refuse(`${rulePrefix}.tenant-not-scalar`, `${where}: the tenant field must be a single value`);
    }
    if (!sameValue(existing, context.tenantValue)) {
      refuse(`${rulePrefix}.foreign-tenant`, `${where}: the document names another tenant`);
    }
    return value;
  }
  const stamp: RawElement = { name: field, type: context.tenantValue.type, value: context.tenantValue.value };
  const idIndex = doc.elements.findIndex((element) => element.name === '_id');
  const elements = [...doc.elements];
  elements.splice(idIndex + 1, 0, stamp);
  const bytes = new RawDocument(elements).toBytes();
  if (bytes.length > MAX_USER_DOCUMENT_SIZE) {
    refuse(
      'document.too-large',
      `${where}: with the tenant field the document exceeds ${MAX_USER_DOCUMENT_SIZE} bytes`,
      ErrorCodes.BSONObjectTooLarge,
    );
  }
  scope.notes.add(`${rulePrefix}.stamp`, target.clientNs);
  return asDocumentValue(bytes);
}

/**
 * The tenant stamp as BSON element bytes (type, name, value), and the name alone, built once per
 * command: the one-pass scan compares names against them.
 */
class Stamp {
  readonly name: string;
  readonly field: Buffer;
  readonly element: Buffer;
  readonly type: number;
  readonly value: Uint8Array;

  constructor(context: TenantContext) {
    this.name = context.field;
    this.field = Buffer.from(context.field, 'utf8');
    this.type = context.tenantValue.type;
    this.value = context.tenantValue.value;
    this.element = Buffer.allocUnsafe(1 + this.field.length + 1 + this.value.length);
    this.element[0] = this.type;
    this.field.copy(this.element, 1);
    this.element[1 + this.field.length] = 0;
    this.element.set(this.value, 2 + this.field.length);
  }

  /** The client's tenant element (a scalar) holds exactly T. */
  matches(doc: Uint8Array, scan: StoredDocumentScan): boolean {
    const type = doc[scan.tenantStart] as number;
    if (type !== this.type || type === BsonType.array || type === BsonType.null || type === BsonType.undefined)
      return false;
    const length = scan.tenantValueEnd - scan.tenantValueStart;
    if (length !== this.value.length) return false;
    for (let i = 0; i < length; i++) if (doc[scan.tenantValueStart + i] !== this.value[i]) return false;
    return true;
  }
}

const stamps = new WeakMap<TenantContext, Stamp>();

function stampOf(context: TenantContext): Stamp {
  let stamp = stamps.get(context);
  if (stamp === undefined || stamp.name !== context.field || stamp.value !== context.tenantValue.value) {
    stamp = new Stamp(context);
    stamps.set(context, stamp);
  }
  return stamp;
}

/** Reused by every one-pass scan (the handlers are synchronous). */
const scan = new StoredDocumentScan();

/** Validation saw nothing of these below the top level: the scan reads the top level only. */
const NESTED_REFUSABLE = DocumentFact.code | DocumentFact.nestedDollarKey;
/** ...and none of these at the top either: the scan stops at the tenant field. */
const KEYS_UNCLEAN = DocumentFact.dottedKey | DocumentFact.topDollarKey;
const NOTHING_KNOWN = NESTED_REFUSABLE | KEYS_UNCLEAN;
const UNKNOWN_FACTS = (): number => NOTHING_KNOWN;

/**
 * What validation saw in the items of `field` (CommandInput.facts): each sequence document's own
 * facts, or the body's for items in the body (it covers everything nested in it: an item's
 * top-level names are below the body's top, so a `$` in them is the body's nestedDollarKey, and
 * the body's own top-level `$` names, `$db`, are not the items').
 */
function itemFacts(input: CommandInput, field: string, sequence: boolean): (index: number) => number {
  const facts = input.validated === true ? input.facts : undefined;
  if (facts === undefined) return UNKNOWN_FACTS;
  if (!sequence) {
    const body = facts.body & ~DocumentFact.topDollarKey;
    return () => body;
  }
  const perDocument = facts.sequences.get(field);
  if (perDocument === undefined) return UNKNOWN_FACTS;
  return (index) => perDocument[index] ?? NOTHING_KNOWN;
}

/**
 * A validated document the one-pass scan finds clean has no top-level `$` name (so it is a
 * replacement) and nothing `assertNoForbidden` refuses: validateUpdateDocument would accept it as
 * a replacement without a second walk. Anything else goes to validateUpdateDocument.
 */
function isCleanReplacement(value: RawValue, scope: Scope): boolean {
  if (!scope.validated || value.type !== BsonType.document) return false;
  scanStoredDocument(value.value, null, scan);
  return scan.clean;
}

/** A document a one-pass scan found clean: kept as sent, or stamped at `at`. */
const KEEP = -1;

/**
 * Documents to store, checked and stamped like `stampDocumentChecked` in one pass each (policy/
 * stored-document.ts). The stamped ones are written into one buffer for the whole command; the
 * others stay views of the request. A document the pass does not find clean goes through
 * `stampDocumentChecked`, in order, so a refusal is the reference path's own.
 */
function stampDocuments(
  values: readonly RawValue[],
  scope: Scope,
  where: (index: number) => string,
  rulePrefix: 'insert' | 'replacement',
  facts: (index: number) => number = UNKNOWN_FACTS,
  copies?: CopyJob,
): RawValue[] {
  if (!scope.validated)
    return values.map((value, index) => stampDocumentChecked(value, scope, where(index), rulePrefix));
  const { context, target } = scope;
  const tenantFiltered = target.resolved.tenantFiltered;
  const stamp = tenantFiltered ? stampOf(context) : null;
  const out: RawValue[] = new Array<RawValue>(values.length);
  const stampAt: number[] = new Array<number>(values.length);
  let stampedBytes = 0;
  for (let index = 0; index < values.length; index++) {
    const value = values[index] as RawValue;
    stampAt[index] = KEEP;
    out[index] = value;
    if (value.type !== BsonType.document) {
      out[index] = stampDocumentChecked(value, scope, where(index), rulePrefix);
      continue;
    }
    const doc = value.value;
    const seen = facts(index);
    const topOnly = (seen & NESTED_REFUSABLE) === 0;
    scanStoredDocument(doc, stamp === null ? null : stamp.field, scan, topOnly, (seen & KEYS_UNCLEAN) === 0);
    if (scan.clean) {
      if (stamp === null) continue;
      if (scan.tenantStart !== -1) {
        if (stamp.matches(doc, scan)) continue;
      } else if (doc.length + stamp.element.length <= MAX_USER_DOCUMENT_SIZE) {
        stampAt[index] = scan.stampAt;
        stampedBytes += doc.length + stamp.element.length;
        continue;
      }
    }
    out[index] = stampDocumentChecked(value, scope, where(index), rulePrefix);
  }
  if (stamp === null || stampedBytes === 0) return out;

  const buffer = Buffer.allocUnsafe(stampedBytes);
  let at = 0;
  for (let index = 0; index < values.length; index++) {
    const split = stampAt[index] as number;
    if (split === KEEP) continue;
    const doc = (values[index] as RawValue).value;
    const length = doc.length + stamp.element.length;
    // The new length first, then the document's bytes after its own length, the stamp spliced in.
    writeInt32LE(buffer, at, length);
    if (copies === undefined) {
      buffer.set(doc.subarray(4, split), at + 4);
      buffer.set(stamp.element, at + split);
      buffer.set(doc.subarray(split), at + split + stamp.element.length);
    }
    const view = buffer.subarray(at, at + length);
    // With a copy job the stamped document is written only where it goes (the frame).
    if (copies !== undefined)
      copies.define(view, [buffer.subarray(at, at + 4), doc.subarray(4, split), stamp.element, doc.subarray(split)]);
    out[index] = asDocumentValue(view);
    at += length;
  }
  scope.notes.add(`${rulePrefix}.stamp`, target.clientNs);
  return out;
}

/** One document to store (a replacement, a bulkWrite insert): `stampDocuments` for one. */
function stampDocument(value: RawValue, scope: Scope, where: string, rulePrefix: 'insert' | 'replacement'): RawValue {
  return stampDocuments([value], scope, () => where, rulePrefix)[0] as RawValue;
}

/** A client filter, validated; in shared collections wrapped in the tenant `$and` (G4). */
function rewriteFilter(value: RawValue | undefined, scope: Scope, where: string): RawValue | undefined {
  if (value !== undefined) {
    if (value.type !== BsonType.document)
      refuse('filter.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
    validateFilter(value, where);
  }
  if (!scope.target.resolved.tenantFiltered) return value;
  scope.notes.add('filter.tenant', scope.target.clientNs);
  return tenantFilter(scope.context, value, where);
}

/** The stages of an update pipeline, each validated; T re-set last in shared collections (catalogue 40). */
function rewriteUpdatePipeline(value: RawValue, scope: Scope, where: string): RawValue {
  const stages = arrayItems(value);
  stages.forEach((stage, index) => {
    const at = `${where}.${index}`;
    const doc = parseDocument(stage, at);
    const only = doc.first;
    if (doc.elements.length !== 1 || only === undefined)
      refuse('update.pipeline-stage', `${at} must have exactly one stage name`, ErrorCodes.BadValue);
    if (!UPDATE_PIPELINE_STAGES.has(only.name)) {
      refuse('update.pipeline-stage', `${at}: ${only.name} is not allowed in an update pipeline`, ErrorCodes.BadValue);
    }
    assertNoForbidden(stage, at);
    switch (only.name) {
      case '$unset':
        if (only.type === BsonType.string) break;
        if (only.type !== BsonType.array || arrayItems(only).some((item) => item.type !== BsonType.string)) {
          refuse(
            'update.pipeline-stage',
            `${at}: $unset takes a field name or an array of them`,
            ErrorCodes.TypeMismatch,
          );
        }
        break;
      case '$project':
        validateProjection(only, `${at}.$project`);
        break;
      case '$replaceRoot': {
        const spec = parseDocument(only, `${at}.$replaceRoot`);
        assertKnownFields(spec, new Set(['newRoot']), `${at}.$replaceRoot`, 'update.pipeline-stage');
        const newRoot = spec.get('newRoot');
        if (newRoot === undefined)
          refuse('update.pipeline-stage', `${at}.$replaceRoot requires newRoot`, ErrorCodes.FailedToParse);
        validateExpression(newRoot, `${at}.$replaceRoot.newRoot`);
        break;
      }
      case '$replaceWith':
        validateExpression(only, `${at}.$replaceWith`);
        break;
      default: // $set, $addFields: {<field>: <expression>, …}
        validateExpressionFields(only, `${at}.${only.name}`);
    }
  });
  if (!scope.target.resolved.tenantFiltered) return value;
  scope.notes.add('update.pipeline-tenant', scope.target.clientNs);
  const { context } = scope;
  const reset = documentOf([['$set', documentOf([[context.field, documentOf([['$literal', context.tenantValue]])]])]]);
  return arrayOf([...stages, reset]);
}

/**
 * An update's `u` (findAndModify `update`, bulkWrite `updateMods`): an operator document
 * (validated: no tenant paths, catalogue 37-38, 41), a replacement (stamped like an insert,
 * catalogue 39) or a pipeline (catalogue 40). `upsertQuery`: the client's filter of an upsert,
 * whose equality fields the proxy adds where the upstream does not derive them (upsert.ts).
 */
function rewriteUpdateSpec(value: RawValue, scope: Scope, where: string, upsertQuery?: RawValue): RawValue {
  // Tenant paths are refused in every model: the field means nothing outside shared collections,
  // but refusing it everywhere keeps one rule set.
  const kind = isCleanReplacement(value, scope)
    ? 'replacement'
    : validateUpdateDocument(value, scope.context.field, where);
  const derived = kind === 'pipeline' ? [] : upsertFields(upsertQuery, scope);
  switch (kind) {
    case 'pipeline':
      // FerretDB v1 refuses pipeline updates; MongoDB derives the query's fields itself.
      return rewriteUpdatePipeline(value, scope, where);
    case 'replacement': {
      // A replacement given an `_id` from the query is no longer the validated client document.
      const replacement = withQueryId(value, derived, scope);
      const validated = replacement === value ? scope : { ...scope, validated: false };
      return stampDocument(replacement, validated, where, 'replacement');
    }
    case 'operators':
      return withInsertFields(value, derived, scope);
  }
}

/**
 * The fields an upsert with this client filter derives, when the proxy must add them: the
 * upstream does not derive them through the tenant `$and` (FerretDB v1), the namespace is
 * tenant-filtered (elsewhere the filter is not wrapped, so the upstream sees it as sent), and
 * the query gives a document at all (a conflict is left to the upstream, as MongoDB fails it
 * only when it inserts).
 */
function upsertFields(upsertQuery: RawValue | undefined, scope: Scope): readonly DerivedField[] {
  if (upsertQuery === undefined || scope.context.upsertFieldsFromAnd !== false) return [];
  if (!scope.target.resolved.tenantFiltered) return [];
  const derivation = queryEqualities(upsertQuery);
  return 'fields' in derivation ? derivation.fields : [];
}

/** A replacement upsert without `_id` takes the query's `_id` equality (catalogue 38). */
function withQueryId(value: RawValue, derived: readonly DerivedField[], scope: Scope): RawValue {
  if (derived.length === 0 || value.type !== BsonType.document) return value;
  const replacement = RawDocument.parse(value.value);
  const id = replacementId(replacement, derived);
  if (id === undefined) return value;
  scope.notes.add('upsert.query-fields', scope.target.clientNs);
  return new RawDocument([{ name: '_id', type: id.type, value: id.value }, ...replacement.elements]).toValue();
}

/**
 * Operator updates in shared collections get `$setOnInsert: {<field>: T}` so a document an upsert
 * creates is always stamped (G8): not every server derives fields from the `$and` of the wrapped
 * query. Client paths on the tenant field were refused before this, so nothing can conflict; on a
 * plain update $setOnInsert does nothing. Where the upstream does not derive the query's other
 * equality fields either, those the update does not write itself are added too (upsert.ts).
 */
function withInsertFields(value: RawValue, derived: readonly DerivedField[], scope: Scope): RawValue {
  if (!scope.target.resolved.tenantFiltered) return value;
  const update = RawDocument.parse(value.value);
  const existing = update.get('$setOnInsert');
  const onInsert = existing === undefined ? new RawDocument([]) : RawDocument.parse(existing.value);
  const fromQuery = insertEntriesForOperators(update, derived, scope.context.field);
  if (fromQuery.length > 0) scope.notes.add('upsert.query-fields', scope.target.clientNs);
  scope.notes.add('upsert.stamp');
  const entries = new RawDocument([...onInsert.elements, ...fromQuery]).with(
    scope.context.field,
    scope.context.tenantValue,
  );
  return update.with('$setOnInsert', entries.toValue()).toValue();
}

function checkArrayFilters(value: RawValue, where: string): void {
  if (value.type !== BsonType.array) refuse('write.not-array', `${where} must be an array`, ErrorCodes.TypeMismatch);
  arrayItems(value).forEach((filter, index) => {
    if (filter.type !== BsonType.document)
      refuse('filter.not-document', `${where}.${index} must be a document`, ErrorCodes.TypeMismatch);
    validateFilter(filter, `${where}.${index}`);
  });
}

/** Options shared by update statements, findAndModify and bulkWrite ops; checked, kept as sent. */
function checkOptions(
  doc: RawDocument,
  scope: Scope,
  where: string,
  names: { arrayFilters?: string; constants?: string; fields?: string },
  replacements?: Map<string, RawValue | null>,
): void {
  const { context, target } = scope;
  const tenantFiltered = target.resolved.tenantFiltered;
  for (const element of doc.elements) {
    const at = `${where}.${element.name}`;
    switch (element.name) {
      case 'hint':
        if (tenantFiltered && replacements !== undefined && isScanHint(element)) {
          // Dropped like a read's (catalogue 60): a hint picks the plan, never which documents
          // match; the tenant predicate still bounds the statement, so even a `limit: 1` / `multi:
          // false` statement affects one of the tenant's own documents (which one may differ).
          replacements.set('hint', null);
          scope.notes.add('hint.scan-dropped', target.clientNs);
          break;
        }
        if (context.virtualDdl === true && tenantFiltered && replacements !== undefined) {
          // A private database per tenant: names and keys map to the tenant's prefixed indexes (issue 13).
          validateHint(element, at, context.field, false);
          const { db, coll } = target.resolved;
          const physical = tenantHint(element, at, context.field, context.hintKeys, `${db}.${coll}`);
          if (physical !== undefined) replacements.set('hint', physical);
          break;
        }
        // In shared collections only tenant-prefixed indexes (catalogue 60).
        validateHint(element, at, context.field, tenantFiltered);
        break;
      case 'collation':
        // A string tenant compared under strength 1-2 would match other spellings (catalogue 9).
        validateCollation(element, at, {
          tenantIsString: tenantFiltered && context.tenantValue.type === BsonType.string,
        });
        break;
      case 'sort':
        validateSort(element, at);
        break;
      case names.arrayFilters:
        checkArrayFilters(element, at);
        break;
      case names.constants:
        if (element.type !== BsonType.document)
          refuse('write.not-document', `${at} must be a document`, ErrorCodes.TypeMismatch);
        assertNoForbidden(element, at);
        break;
      case names.fields:
        validateProjection(element, at);
        break;
    }
  }
}

/** The document with some elements' values replaced (null: removed), in the client's order; the rest untouched. */
function replaceIn(doc: RawDocument, replacements: ReadonlyMap<string, RawValue | null>): RawDocument {
  if (replacements.size === 0) return doc;
  return new RawDocument(
    doc.elements.flatMap((element) => {
      const next = replacements.get(element.name);
      if (next === null) return [];
      return next === undefined ? [element] : [elementOf(element.name, next)];
    }),
  );
}

function replaceElements(doc: RawDocument, replacements: ReadonlyMap<string, RawValue | null>): RawValue {
  return replaceIn(doc, replacements).toValue();
}

/** Binary comparison, whatever the collection's default collation (catalogue 9). */
const SIMPLE_COLLATION: RawValue = documentOf([['locale', valueOf('simple')]]);

/**
 * A statement (or findAndModify) without `collation` gets the simple one in tenant-filtered
 * namespaces when `pinSimpleCollation` is set: otherwise the collection's default collation
 * would compare a string T loosely (catalogue 9). A client collation was checked by checkOptions.
 */
function pinCollation(doc: RawDocument, scope: Scope): RawDocument {
  if (doc.has('collation') || !scope.target.resolved.tenantFiltered || !scope.context.pinSimpleCollation) return doc;
  scope.notes.add('collation.simple', scope.target.clientNs);
  return doc.with('collation', SIMPLE_COLLATION);
}

/** One `updates` statement or bulkWrite update op, with its filter and update fields named. */
function rewriteUpdateStatement(
  doc: RawDocument,
  scope: Scope,
  where: string,
  names: { filter: string; update: string; constants: string },
): RawValue {
  const replacements = new Map<string, RawValue | null>();
  const filter = doc.get(names.filter);
  if (filter === undefined)
    refuse('write.missing-field', `${where} requires ${names.filter}`, ErrorCodes.FailedToParse);
  const update = doc.get(names.update);
  if (update === undefined)
    refuse('write.missing-field', `${where} requires ${names.update}`, ErrorCodes.FailedToParse);
  replacements.set(names.filter, rewriteFilter(filter, scope, `${where}.${names.filter}`)!);
  const upsertQuery = truthy(doc.get('upsert')) ? filter : undefined;
  replacements.set(names.update, rewriteUpdateSpec(update, scope, `${where}.${names.update}`, upsertQuery));
  checkOptions(doc, scope, where, { arrayFilters: 'arrayFilters', constants: names.constants }, replacements);
  return replaceElements(pinCollation(doc, scope), replacements);
}

/** One `deletes` statement or bulkWrite delete op. */
function rewriteDeleteStatement(doc: RawDocument, scope: Scope, where: string, filterName: string): RawValue {
  const filter = doc.get(filterName);
  if (filter === undefined) refuse('write.missing-field', `${where} requires ${filterName}`, ErrorCodes.FailedToParse);
  const replacements = new Map<string, RawValue | null>([
    [filterName, rewriteFilter(filter, scope, `${where}.${filterName}`)!],
  ]);
  checkOptions(doc, scope, where, {}, replacements);
  return replaceElements(pinCollation(doc, scope), replacements);
}

function replyFor(target: Target): RewriteResult['reply'] {
  return { scrubErrors: true, mapNames: needsNameMapping(target) };
}

/** The shape every single-collection write shares: names, fields, maxTimeMS. */
function prepare(
  input: CommandInput,
  context: TenantContext,
  kind: 'insert' | 'update' | 'delete' | 'findAndModify',
  items: readonly string[],
  sequences: readonly string[] = items,
) {
  // The one field allowlist (policy/commands.ts): bypassDocumentValidation and internal fields
  // such as rawData are refused there (catalogue 43, 53).
  assertAllowedFields(kind, input.body);
  assertSequences(input, sequences);
  const coll = commandCollection(input);
  const notes = new Notes();
  const target = resolveTarget(context, input.db, coll);
  checkBody(input.body, items, input.name);
  let body = withPhysicalNames(input.body, target, notes);
  body = capMaxTime(body, context, notes);
  const scope: Scope = { context, notes, target, validated: input.validated === true };
  return { body, scope, notes, target };
}

/** insert: every document stamped with T (catalogue 18, 42, 8, 51, 50). */
export const insert: CommandHandler = (input, context) => {
  const { body, scope, notes, target } = prepare(input, context, 'insert', ['documents']);
  const { items, sequence } = readItems(input, 'documents');
  const facts = itemFacts(input, 'documents', sequence);
  // Every check is made here; with input.copies, the copies of the batch are made later (issue 15).
  const { copies } = input;
  const stamped = stampDocuments(items, scope, (index) => `documents.${index}`, 'insert', facts, copies);
  const sequences = new Map<string, readonly Uint8Array[]>();
  const out = placeItems(body, sequences, 'documents', stamped, sequence, copies);
  return { body: out, sequences, reply: replyFor(target), notes: notes.list };
};

/** update: `q` wrapped, `u` checked / stamped / re-set per its form (catalogue 18, 37-41). */
export const update: CommandHandler = (input, context) => {
  const { body, scope, notes, target } = prepare(input, context, 'update', ['updates']);
  const { items, sequence } = readItems(input, 'updates');
  const rewritten = items.map((item, index) => {
    const where = `updates.${index}`;
    const doc = parseDocument(item, where);
    assertKnownFields(doc, UPDATE_STATEMENT_FIELDS, where, 'update.unknown-field');
    return rewriteUpdateStatement(doc, scope, where, { filter: 'q', update: 'u', constants: 'c' });
  });
  const sequences = new Map<string, readonly Uint8Array[]>();
  const out = placeItems(body, sequences, 'updates', rewritten, sequence);
  return { body: out, sequences, reply: replyFor(target), notes: notes.list };
};

/** delete: `q` wrapped, so `delete {}` removes only T's documents; `limit` kept (catalogue 18). */
export const deleteCommand: CommandHandler = (input, context) => {
  const { body, scope, notes, target } = prepare(input, context, 'delete', ['deletes']);
  const { items, sequence } = readItems(input, 'deletes');
  const rewritten = items.map((item, index) => {
    const where = `deletes.${index}`;
    const doc = parseDocument(item, where);
    assertKnownFields(doc, DELETE_STATEMENT_FIELDS, where, 'delete.unknown-field');
    return rewriteDeleteStatement(doc, scope, where, 'q');
  });
  const sequences = new Map<string, readonly Uint8Array[]>();
  const out = placeItems(body, sequences, 'deletes', rewritten, sequence);
  return { body: out, sequences, reply: replyFor(target), notes: notes.list };
};

export { deleteCommand as delete };

/** findAndModify / findandmodify: `query` wrapped, `update` like update's `u` (catalogue 18, 39, 40). */
export const findAndModify: CommandHandler = (input, context) => {
  const { body, scope, notes, target } = prepare(input, context, 'findAndModify', ['query', 'update'], []);
  const replacements = new Map<string, RawValue | null>();
  const update = body.get('update');
  if (update !== undefined) {
    const upsertQuery = truthy(body.get('upsert')) ? (body.get('query') ?? EMPTY_DOCUMENT) : undefined;
    replacements.set('update', rewriteUpdateSpec(update, scope, 'update', upsertQuery));
  }
  checkOptions(body, scope, input.name, { arrayFilters: 'arrayFilters', fields: 'fields' }, replacements);
  let out = replaceIn(body, replacements);
  // A missing query becomes the tenant predicate alone (appended after the client's fields).
  const wrapped = rewriteFilter(body.get('query'), scope, 'query');
  if (wrapped !== undefined) out = out.with('query', wrapped);
  out = pinCollation(out, scope);
  // `value` is a tenant document (isolation.tenantFieldInReplies).
  const reply = target.resolved.tenantFiltered
    ? { ...replyFor(target), tenantDocuments: { in: 'value' as const } }
    : replyFor(target);
  return { body: out, sequences: new Map(), reply, notes: notes.list };
};

/** Splits "db.coll" at the first dot, as the server does. */
function splitNamespace(ns: string, where: string): { db: string; coll: string } {
  const dot = ns.indexOf('.');
  if (dot <= 0 || dot === ns.length - 1)
    refuse('namespace.invalid', `${where} is not a "db.collection" namespace`, ErrorCodes.InvalidNamespace);
  return { db: ns.slice(0, dot), coll: ns.slice(dot + 1) };
}

/** The nsInfo index of a bulkWrite op: an integer within nsInfo. */
function opIndex(element: RawElement, count: number, where: string): number {
  const index = element.type === BsonType.int32 || element.type === BsonType.int64 ? numberOf(element) : undefined;
  if (index === undefined || !Number.isInteger(index) || index < 0 || index >= count) {
    refuse('bulkWrite.bad-index', `${where}: ${element.name} must be an index into nsInfo`, ErrorCodes.BadValue);
  }
  return index;
}

/**
 * bulkWrite (8.0, on admin): every nsInfo namespace resolved (one refused namespace refuses the
 * whole command), every op rewritten like its single-collection form, the result cursor
 * registered (catalogue 19, G5).
 */
export const bulkWrite: CommandHandler = (input, context) => {
  assertAllowedFields('bulkWrite', input.body);
  assertSequences(input, ['ops', 'nsInfo']);
  if (input.db !== 'admin')
    refuse('bulkWrite.not-admin', 'bulkWrite runs on the admin database', ErrorCodes.Unauthorized);
  const notes = new Notes();
  checkBody(input.body, ['ops', 'nsInfo'], input.name);
  const cursor = input.body.get('cursor');
  if (cursor !== undefined) {
    assertKnownFields(parseDocument(cursor, 'cursor'), BULK_CURSOR_FIELDS, 'cursor', 'bulkWrite.unknown-field');
  }

  const nsInfo = readItems(input, 'nsInfo');
  if (nsInfo.items.length === 0)
    refuse('bulkWrite.no-namespace', 'nsInfo must name at least one namespace', ErrorCodes.BadValue);
  const targets: Target[] = [];
  const physicalNsInfo = nsInfo.items.map((item, index) => {
    const where = `nsInfo.${index}`;
    const doc = parseDocument(item, where);
    assertKnownFields(doc, NS_INFO_FIELDS, where, 'bulkWrite.unknown-field');
    const ns = doc.get('ns');
    if (ns === undefined || ns.type !== BsonType.string)
      refuse('namespace.not-string', `${where}.ns must be a string`, ErrorCodes.InvalidNamespace);
    const { db, coll } = splitNamespace(stringOf(ns), `${where}.ns`);
    const target = resolveTarget(context, db, coll);
    targets.push(target);
    if (namesDiffer(target)) notes.add('namespace.map', target.clientNs);
    return replaceElements(doc, new Map([['ns', valueOf(`${target.resolved.db}.${target.resolved.coll}`)]]));
  });

  const ops = readItems(input, 'ops');
  const rewrittenOps = ops.items.map((item, index) => {
    const where = `ops.${index}`;
    const doc = parseDocument(item, where);
    const first = doc.first;
    if (first === undefined) refuse('bulkWrite.bad-op', `${where} is empty`, ErrorCodes.FailedToParse);
    const kinds = doc.elements.filter(
      (element) => element.name === 'insert' || element.name === 'update' || element.name === 'delete',
    );
    if (kinds.length !== 1 || kinds[0] !== first)
      refuse(
        'bulkWrite.bad-op',
        `${where} must start with exactly one of insert, update, delete`,
        ErrorCodes.FailedToParse,
      );
    const scope: Scope = {
      context,
      notes,
      target: targets[opIndex(first, targets.length, where)]!,
      validated: input.validated === true,
    };
    switch (first.name) {
      case 'insert': {
        assertKnownFields(doc, BULK_INSERT_FIELDS, where, 'bulkWrite.unknown-field');
        const document = doc.get('document');
        if (document === undefined)
          refuse('write.missing-field', `${where} requires document`, ErrorCodes.FailedToParse);
        return replaceElements(
          doc,
          new Map([['document', stampDocument(document, scope, `${where}.document`, 'insert')]]),
        );
      }
      case 'update':
        assertKnownFields(doc, BULK_UPDATE_FIELDS, where, 'bulkWrite.unknown-field');
        return rewriteUpdateStatement(doc, scope, where, {
          filter: 'filter',
          update: 'updateMods',
          constants: 'constants',
        });
      default:
        assertKnownFields(doc, BULK_DELETE_FIELDS, where, 'bulkWrite.unknown-field');
        return rewriteDeleteStatement(doc, scope, where, 'filter');
    }
  });

  let body = input.body;
  body = capMaxTime(body, context, notes);
  const sequences = new Map<string, readonly Uint8Array[]>();
  body = placeItems(body, sequences, 'nsInfo', physicalNsInfo, nsInfo.sequence);
  body = placeItems(body, sequences, 'ops', rewrittenOps, ops.sequence);
  return {
    body,
    sequences,
    reply: {
      scrubErrors: true,
      mapNames: targets.some(needsNameMapping),
      registerCursor: { db: 'admin', coll: '$cmd.bulkWrite' },
    },
    notes: notes.list,
  };
};

/** The handlers by command name, aliases included (G1). */
export const WRITE_HANDLERS: Readonly<Record<string, CommandHandler>> = {
  insert,
  update,
  delete: deleteCommand,
  findAndModify,
  findandmodify: findAndModify,
  bulkWrite,
};
