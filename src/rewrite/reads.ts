/**
 * Read commands: find, count, distinct, aggregate, explain, listIndexes, listCollections
 * (catalogue 6-17, 21, 24, 28-36, 59-60; docs/threat-catalogue.md).
 *
 * Every handler checks its top-level fields (policy/commands.ts), resolves the namespace it names
 * (physical names go into the forwarded body, `$db` included), validates every filter,
 * projection, sort, hint, collation, `let` and pipeline, clamps `maxTimeMS` (and sets it when
 * absent), and, in tenant-filtered namespaces (shared collection, scoped):
 *   - wraps the filter as `{$and: [{<field>: {$eq: T}}, <client filter>]}` (G4), always: also
 *     when the client sends none, so `count` without a query (estimatedDocumentCount) counts the
 *     tenant's documents instead of answering from collection metadata (17, 59);
 *   - places the tenant predicate in pipelines (pipeline.ts);
 *   - accepts `min` / `max` only as bounds that start with the tenant field equal to T (60);
 *   - with a string tenant value, refuses collation strengths 1-2 and, when the client sends no
 *     collation, adds `collation: {locale: "simple"}` (where the upstream supports collation) so
 *     a collection's default collation cannot compare the tenant id loosely either (9);
 *   - lets explain run at every verbosity, its reply without the execution figures that count
 *     other tenants' documents (21, 59: rewrite/explain.ts).
 * Client values that are not rewritten are forwarded byte for byte.
 *
 * Decisions worth documenting:
 * - listCollections keeps the client's filter (database-per-tenant: names are the client's own;
 *   collection-prefix: only `{name: "<collection>"}` can be mapped, anything else is refused) and
 *   lets the reply layer drop the names the tenant may not see (`filterListing: 'collections'`,
 *   which also strips `options`). In shared-collection databases `nameOnly: true` is forced, so
 *   validators, view pipelines and collations of shared collections never leave the server at all.
 * - `aggregate: 1` must start with `$documents`: every other collection-less first stage
 *   ($changeStream, $currentOp, $listLocalSessions…) is refused anyway.
 * - Cursor registration names the PHYSICAL namespace (what `cursor.ns` of the reply says):
 *   `<db>.<coll>` for find / aggregate / listIndexes, `<db>.$cmd.aggregate` for `aggregate: 1`,
 *   `<db>.$cmd.listCollections` for listCollections.
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import {
  arrayItems,
  childDocument,
  documentOf,
  numberOf,
  RawDocument,
  sameValue,
  stringOf,
  valueOf,
  type RawValue,
} from '../wire/raw-bson.js';
import { assertAllowedFields, type HandlerName } from '../policy/commands.js';
import {
  assertNoForbidden,
  validateCollation,
  validateFilter,
  isScanHint,
  validateHint,
  tenantHint,
  validateProjection,
  validateSort,
} from '../policy/validate.js';
import { tenantFilter } from './filter.js';
import { deserialize, type Document } from '../wire/bson.js';
import { capMaxTimeMS } from '../policy/limits.js';
import { rewritePipelineDetailed, validateExpressionFields } from './pipeline.js';
import type {
  CommandHandler,
  CommandInput,
  ResolvedNamespace,
  RewriteNote,
  RewriteResult,
  TenantContext,
  TenantDocuments,
  VirtualOperation,
} from '../policy/types.js';

/** Binary comparison, whatever the collection's default collation (catalogue 9). */
const SIMPLE_COLLATION: RawValue = documentOf([['locale', valueOf('simple')]]);

/** What a handler learned that `explain` needs (whether execution statistics could reveal other tenants). */
interface Facts {
  sharedData: boolean;
}

/** Internal options: explain runs the same handlers on its inner command. */
interface ReadOptions {
  /** Inner command of explain: `maxTimeMS` belongs on the explain command, and there is no cursor. */
  explained?: boolean;
  facts?: Facts;
}

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

/** UUID binary subtypes (3 legacy, 4 standard). */
function isUuid(value: RawValue): boolean {
  return value.type === BsonType.binary && (value.value[4] === 4 || value.value[4] === 3);
}

/** The command's collection: a string (catalogue 17: a UUID, `useUUID`, is refused). */
function collectionOf(input: CommandInput): string {
  const value = input.body.first;
  if (value === undefined)
    return refuse('namespace.not-string', `${input.name} names no collection`, ErrorCodes.InvalidNamespace);
  if (isUuid(value)) {
    refuse(
      'namespace.uuid',
      `${input.name} must name its collection by name, not by UUID (catalogue 17)`,
      ErrorCodes.InvalidNamespace,
    );
  }
  if (value.type !== BsonType.string) {
    refuse('namespace.not-string', `${input.name} must name a collection (a string)`, ErrorCodes.InvalidNamespace);
  }
  return stringOf(value);
}

class Rewrite {
  body: RawDocument;
  readonly notes: RewriteNote[] = [];
  namesMapped = false;

  constructor(
    readonly input: CommandInput,
    readonly context: TenantContext,
    readonly namespace: string,
  ) {
    this.body = input.body;
  }

  note(rule: string): void {
    this.notes.push({ kind: 'rewrite', rule, namespace: this.namespace });
  }

  set(name: string, value: RawValue, rule?: string): void {
    this.body = this.body.with(name, value);
    if (rule !== undefined) this.note(rule);
  }

  /** The physical collection in the command's first field and the physical `$db`. */
  physical(db: string, coll: string | undefined, clientColl: string | undefined): void {
    if (coll !== undefined && coll !== clientColl) {
      this.body = new RawDocument(this.body.elements.map((e, i) => (i === 0 ? { name: e.name, ...valueOf(coll) } : e)));
      this.namesMapped = true;
    }
    if (db !== this.input.db) {
      // Inner commands of explain carry no `$db`: only an existing one is mapped.
      if (this.body.has('$db')) this.body = this.body.with('$db', valueOf(db));
      this.namesMapped = true;
    }
    if (this.namesMapped) this.note('namespace.map');
  }

  /**
   * maxTimeMS clamped, and set when absent (catalogue 15); on explain's inner command only
   * clamped, and where the upstream refuses the field on this command (`canAdd` false) never added.
   */
  maxTime(options: ReadOptions, canAdd = true): void {
    const capped = capMaxTimeMS(this.body, this.context.maxTimeMS, {
      whenMissing: options.explained || !canAdd ? 'leave' : 'add',
    });
    if (capped !== this.body) {
      this.body = capped;
      this.note('maxTimeMS.cap');
    }
  }

  result(reply: Partial<RewriteResult['reply']> = {}): RewriteResult {
    return {
      body: this.body,
      sequences: new Map(),
      reply: { mapNames: this.namesMapped, scrubErrors: true, ...reply },
      notes: this.notes,
    };
  }
}

function noSequences(input: CommandInput): void {
  if (input.sequences.size > 0)
    refuse('opmsg.sequence', `${input.name} takes no document sequences`, ErrorCodes.InvalidOptions);
}

/** The filter of find / count / distinct, always checked by validateFilter (filterField). */
const FILTER_FIELDS: ReadonlySet<string> = new Set(['filter', 'query']);

/** Fields and forbidden content of the whole body (G1, G3, catalogue 1-2, 11). */
function checkBody(handler: HandlerName, input: CommandInput): void {
  noSequences(input);
  assertAllowedFields(handler, input.body);
  for (const element of input.body.elements) {
    // A comment is never evaluated: any BSON is fine there (it only shows in the server's logs).
    // Filters are checked by validateFilter, which knows where strings are evaluated.
    if (element.name === 'comment' || FILTER_FIELDS.has(element.name)) continue;
    assertNoForbidden(element, `${input.name}.${element.name}`);
  }
}

function resolveCollection(input: CommandInput, context: TenantContext): { coll: string; ns: ResolvedNamespace } {
  const coll = collectionOf(input);
  return { coll, ns: context.namespaces.resolve(input.db, coll, 'read') };
}

/** A filter field: validated; wrapped with the tenant predicate in tenant-filtered namespaces (always, G4). */
function filterField(rw: Rewrite, field: string, tenantFiltered: boolean): void {
  const where = `${rw.input.name}.${field}`;
  const value = rw.body.get(field);
  if (value !== undefined) {
    if (value.type !== BsonType.document)
      refuse('filter.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
    validateFilter(value, where);
  }
  if (tenantFiltered) rw.set(field, tenantFilter(rw.context, value, where), 'filter.tenant');
}

/** hint: checked against the tenant-prefixed index rule (catalogue 60). */
function hintField(rw: Rewrite, tenantFiltered: boolean, ns?: { db: string; coll: string }): void {
  const hint = rw.body.get('hint');
  if (hint === undefined) return;
  const where = `${rw.input.name}.hint`;
  if (tenantFiltered && isScanHint(hint)) {
    // Dropped, never forwarded: the plan stays on the tenant-prefixed index (catalogue 60).
    rw.body = rw.body.without('hint');
    rw.note('hint.scan-dropped');
    return;
  }
  if (rw.context.virtualDdl === true && tenantFiltered && ns !== undefined) {
    // A private database per tenant: names and keys map to the tenant's prefixed indexes (issue 13).
    validateHint(hint, where, rw.context.field, false);
    const physical = tenantHint(hint, where, rw.context.field, rw.context.hintKeys, `${ns.db}.${ns.coll}`);
    if (physical !== undefined) rw.set('hint', physical, 'hint.tenant-map');
    return;
  }
  validateHint(hint, where, rw.context.field, tenantFiltered);
}

/**
 * collation (catalogue 9): strengths 1-2 refused when a string tenant id is compared by it; when
 * the client sends none, the simple collation is pinned (`pinSimpleCollation`) so a collection's
 * default collation cannot compare the tenant id loosely either.
 */
function collationField(rw: Rewrite, tenantFiltered: boolean): void {
  const collation = rw.body.get('collation');
  const tenantIsString = tenantFiltered && rw.context.tenantValue.type === BsonType.string;
  if (collation !== undefined) validateCollation(collation, `${rw.input.name}.collation`, { tenantIsString });
  else if (tenantFiltered && rw.context.pinSimpleCollation) rw.set('collation', SIMPLE_COLLATION, 'collation.simple');
}

function letField(rw: Rewrite): void {
  const value = rw.body.get('let');
  if (value !== undefined) validateExpressionFields(value, `${rw.input.name}.let`);
}

/**
 * find `min` / `max` (catalogue 60): index bounds decide which documents the server evaluates the
 * client's expressions on. In tenant-filtered namespaces a bound must start with the tenant
 * field equal to T (a tenant-prefixed index), so the scan stays inside T's documents.
 */
function boundsFields(rw: Rewrite, tenantFiltered: boolean): void {
  for (const name of ['min', 'max']) {
    const bound = rw.body.get(name);
    if (bound === undefined) continue;
    const where = `find.${name}`;
    if (bound.type !== BsonType.document) refuse('find.bounds', `${where} must be a document`, ErrorCodes.TypeMismatch);
    if (!tenantFiltered) continue;
    const first = RawDocument.parse(bound.value).first;
    if (first === undefined || first.name !== rw.context.field || !sameValue(first, rw.context.tenantValue)) {
      refuse('find.bounds', `${where} must start with the tenant field equal to the tenant (catalogue 60)`);
    }
  }
}

/** find (catalogue 6-11, 13-17, 60). */
function findImpl(input: CommandInput, context: TenantContext, options: ReadOptions = {}): RewriteResult {
  checkBody('find', input);
  const { coll, ns } = resolveCollection(input, context);
  const rw = new Rewrite(input, context, `${input.db}.${coll}`);
  if (options.facts !== undefined) options.facts.sharedData ||= ns.tenantFiltered || ns.model === 'shared-collection';
  filterField(rw, 'filter', ns.tenantFiltered);
  const projection = input.body.get('projection');
  if (projection !== undefined) validateProjection(projection, 'find.projection');
  const sort = input.body.get('sort');
  if (sort !== undefined) validateSort(sort, 'find.sort');
  hintField(rw, ns.tenantFiltered, ns);
  collationField(rw, ns.tenantFiltered);
  letField(rw);
  boundsFields(rw, ns.tenantFiltered);
  rw.physical(ns.db, ns.coll, coll);
  rw.maxTime(options);
  if (options.explained) return rw.result();
  const documents: TenantDocuments | undefined = ns.tenantFiltered ? { in: 'cursor' } : undefined;
  return rw.result({
    registerCursor: { db: ns.db, coll: ns.coll, ...(documents && { documents }) },
    ...tenantDocs(documents),
  });
}

function tenantDocs(documents: TenantDocuments | undefined): Partial<RewriteResult['reply']> {
  return documents === undefined ? {} : { tenantDocuments: documents };
}

/**
 * Where a pipeline's output documents hold joined documents: the `as` of each top-level
 * `$lookup` / `$graphLookup`, each `$facet` output (and the joins inside its sub-pipelines).
 * Stages after a join that move its result elsewhere (`$project` renaming, `$group`) are not
 * followed here: with hide the pipeline itself drops the field upstream (pipeline.ts), this
 * reply-side cut is the second line.
 */
export function joinedPaths(pipeline: RawValue): string[] {
  const paths: string[] = [];
  for (const stage of arrayItems(pipeline)) {
    if (stage.type !== BsonType.document) continue;
    const first = RawDocument.parse(stage.value).first;
    if (first === undefined || first.type !== BsonType.document) continue;
    const spec = RawDocument.parse(first.value);
    if (first.name === '$lookup' || first.name === '$graphLookup') {
      const as = spec.get('as');
      if (as !== undefined && as.type === BsonType.string) paths.push(stringOf(as));
    } else if (first.name === '$facet') {
      for (const facet of spec.elements) {
        paths.push(facet.name);
        if (facet.type === BsonType.array) paths.push(...joinedPaths(facet).map((path) => `${facet.name}.${path}`));
      }
    }
  }
  return paths;
}

/** count: the query is always injected, also when absent (estimatedDocumentCount: catalogue 17, 59). */
function countImpl(input: CommandInput, context: TenantContext, options: ReadOptions = {}): RewriteResult {
  checkBody('count', input);
  const { coll, ns } = resolveCollection(input, context);
  return rewriteQueryCommand(input, context, coll, ns, options);
}

/** distinct: `key` a string, `query` injected (catalogue 6, 17: LibreChat missed distinct). */
function distinctImpl(input: CommandInput, context: TenantContext, options: ReadOptions = {}): RewriteResult {
  checkBody('distinct', input);
  const { coll, ns } = resolveCollection(input, context);
  const key = input.body.get('key');
  if (key === undefined || key.type !== BsonType.string)
    refuse('distinct.key', 'distinct.key must be a field path string', ErrorCodes.TypeMismatch);
  return rewriteQueryCommand(input, context, coll, ns, options);
}

/** count and distinct: the `query` tenant-filtered, its hint and collation checked, names mapped. */
function rewriteQueryCommand(
  input: CommandInput,
  context: TenantContext,
  coll: string,
  ns: ResolvedNamespace,
  options: ReadOptions,
): RewriteResult {
  const rw = new Rewrite(input, context, `${input.db}.${coll}`);
  if (options.facts !== undefined) options.facts.sharedData ||= ns.tenantFiltered || ns.model === 'shared-collection';
  filterField(rw, 'query', ns.tenantFiltered);
  hintField(rw, ns.tenantFiltered, ns);
  collationField(rw, ns.tenantFiltered);
  rw.physical(ns.db, ns.coll, coll);
  // An upstream that refuses distinct's maxTimeMS (FerretDB v1: FailedToParse) would fail every
  // client's distinct if the proxy added the cap; a client's own is forwarded (clamped) and the
  // upstream answers it as it would direct (docs/upstreams.md, catalogue 15).
  rw.maxTime(options, input.name !== 'distinct' || context.distinctMaxTimeMS !== false);
  return rw.result();
}

function isDbLevel(value: RawValue): boolean {
  return (
    (value.type === BsonType.int32 || value.type === BsonType.int64 || value.type === BsonType.double) &&
    numberOf(value) === 1
  );
}

/** aggregate (catalogue 13, 28-36): `aggregate: "<coll>"` or `aggregate: 1` (then `$documents` first). */
function aggregateImpl(input: CommandInput, context: TenantContext, options: ReadOptions = {}): RewriteResult {
  checkBody('aggregate', input);
  const target = input.body.first!;
  let coll: string | undefined;
  let physicalDb: string;
  let physicalColl: string | undefined;
  let tenantFiltered = false;
  let sharedModel: boolean;
  if (target.type !== BsonType.string && isDbLevel(target)) {
    const database = context.namespaces.resolveDatabase(input.db, 'read');
    physicalDb = database.db;
    sharedModel = database.model === 'shared-collection';
  } else {
    coll = collectionOf(input);
    const ns = context.namespaces.resolve(input.db, coll, 'read');
    physicalDb = ns.db;
    physicalColl = ns.coll;
    tenantFiltered = ns.tenantFiltered;
    sharedModel = ns.model === 'shared-collection';
  }
  const rw = new Rewrite(input, context, coll === undefined ? input.db : `${input.db}.${coll}`);

  const pipeline = input.body.get('pipeline');
  if (pipeline === undefined || pipeline.type !== BsonType.array) {
    refuse('aggregate.pipeline', 'aggregate.pipeline must be an array', ErrorCodes.TypeMismatch);
  }
  if (coll === undefined) {
    const first = childDocument(pipeline).first;
    const stage = first?.type === BsonType.document ? RawDocument.parse(first.value).first?.name : undefined;
    if (stage !== '$documents') {
      refuse('aggregate.db-level', 'aggregate: 1 is allowed only with a pipeline that starts with $documents');
    }
  }
  const explain = input.body.get('explain');
  const explaining = explain !== undefined && explain.type === BsonType.boolean && explain.value[0] === 1;
  if (explain !== undefined && explain.type !== BsonType.boolean)
    refuse('aggregate.explain', 'aggregate.explain must be a boolean', ErrorCodes.TypeMismatch);
  if (explaining && options.explained)
    refuse('explain.nested', 'explain inside explain is not allowed', ErrorCodes.BadValue);
  const cursor = input.body.get('cursor');
  if (cursor === undefined && !explaining) {
    refuse(
      'aggregate.cursor',
      "the 'cursor' option is required, except for aggregate with the explain argument",
      ErrorCodes.FailedToParse,
    );
  }
  if (cursor !== undefined && cursor.type !== BsonType.document)
    refuse('aggregate.cursor', 'aggregate.cursor must be a document', ErrorCodes.TypeMismatch);

  const { pipeline: rewritten, summary } = rewritePipelineDetailed(pipeline, context, {
    db: input.db,
    coll,
    tenantFiltered,
    depth: 0,
    physicalDb,
    notes: rw.notes,
  });
  rw.body = rw.body.with('pipeline', rewritten);
  if (summary.namesMapped) rw.namesMapped = true;
  if (options.facts !== undefined) options.facts.sharedData ||= sharedModel || summary.touchesTenantFiltered;
  hintField(rw, tenantFiltered, physicalColl === undefined ? undefined : { db: physicalDb, coll: physicalColl });
  collationField(rw, tenantFiltered || summary.touchesTenantFiltered);
  letField(rw);
  rw.physical(physicalDb, physicalColl, coll);
  rw.maxTime(options);
  if (options.explained) return rw.result();
  // aggregate's own explain option: the query plan, which names indexes and namespaces.
  if (explaining) return rw.result({ explain: { withholdFigures: sharedModel || summary.touchesTenantFiltered } });
  let documents: TenantDocuments | undefined;
  if (tenantFiltered || summary.touchesTenantFiltered) {
    const joined = joinedPaths(pipeline);
    documents = joined.length > 0 ? { in: 'cursor', joined } : { in: 'cursor' };
  }
  return rw.result({
    registerCursor: { db: physicalDb, coll: physicalColl ?? '$cmd.aggregate', ...(documents && { documents }) },
    ...tenantDocs(documents),
  });
}

/** listIndexes (catalogue 17, 24): a string collection; the reply layer filters what partial-index literals show. */
function listIndexesImpl(input: CommandInput, context: TenantContext): RewriteResult {
  checkBody('listIndexes', input);
  const { coll, ns } = resolveCollection(input, context);
  const rw = new Rewrite(input, context, `${input.db}.${coll}`);
  const cursor = input.body.get('cursor');
  if (cursor !== undefined && cursor.type !== BsonType.document)
    refuse('listIndexes.cursor', 'listIndexes.cursor must be a document', ErrorCodes.TypeMismatch);
  if (context.virtualDdl === true && ns.model === 'shared-collection' && ns.access === 'scoped')
    return virtual(input, { kind: 'listIndexes', db: ns.db, coll: ns.coll }, `${input.db}.${coll}`);
  rw.physical(ns.db, ns.coll, coll);
  rw.maxTime({});
  return rw.result({ registerCursor: { db: ns.db, coll: ns.coll }, filterListing: 'indexes' });
}

/** listCollections (catalogue 24): names filtered by the reply layer; see the module comment. */
function listCollectionsImpl(input: CommandInput, context: TenantContext): RewriteResult {
  checkBody('listCollections', input);
  const database = context.namespaces.resolveDatabase(input.db, 'read');
  const rw = new Rewrite(input, context, input.db);
  const filter = input.body.get('filter');
  if (filter !== undefined) {
    if (filter.type !== BsonType.document)
      refuse('filter.not-document', 'listCollections.filter must be a document', ErrorCodes.TypeMismatch);
    validateFilter(filter, 'listCollections.filter');
    // An empty filter (drivers always send one) is no filter at all.
    if (database.model === 'collection-prefix' && RawDocument.parse(filter.value).elements.length > 0) {
      // Physical names differ from the client's: only a plain name equality can be mapped.
      const doc = RawDocument.parse(filter.value);
      const name = doc.get('name');
      if (doc.elements.length !== 1 || name === undefined || name.type !== BsonType.string) {
        refuse(
          'listCollections.filter',
          'in a collection-prefix database listCollections.filter may only be {name: "<collection>"}',
        );
      }
      const resolved = context.namespaces.resolve(input.db, stringOf(name), 'read');
      if (resolved.coll !== stringOf(name)) {
        rw.set(
          'filter',
          RawDocument.parse(filter.value).with('name', valueOf(resolved.coll)).toValue(),
          'listCollections.filter.map',
        );
        rw.namesMapped = true;
      }
    }
  }
  const cursor = input.body.get('cursor');
  if (cursor !== undefined && cursor.type !== BsonType.document)
    refuse('listCollections.cursor', 'listCollections.cursor must be a document', ErrorCodes.TypeMismatch);
  if (context.virtualDdl === true && database.model === 'shared-collection') {
    const nameOnly = input.body.get('nameOnly');
    return virtual(
      input,
      {
        kind: 'listCollections',
        db: database.db,
        filter: filter === undefined ? undefined : (deserialize(RawDocument.parse(filter.value).toBytes()) as Document),
        nameOnly: nameOnly !== undefined && nameOnly.type === BsonType.boolean && nameOnly.value[0] === 1,
      },
      input.db,
    );
  }
  if (database.model === 'shared-collection') {
    const nameOnly = input.body.get('nameOnly');
    if (nameOnly === undefined || nameOnly.type !== BsonType.boolean || nameOnly.value[0] !== 1) {
      rw.set('nameOnly', valueOf(true), 'listCollections.nameOnly');
    }
  }
  rw.physical(database.db, undefined, undefined);
  if (database.model !== 'shared-collection') rw.namesMapped = true;
  rw.maxTime({});
  return rw.result({ registerCursor: { db: database.db, coll: '$cmd.listCollections' }, filterListing: 'collections' });
}

/** Answered by the tenancy executor from what the tenant owns (src/tenancy). */
function virtual(input: CommandInput, operation: VirtualOperation, namespace: string): RewriteResult {
  return {
    body: input.body,
    sequences: new Map(),
    reply: { scrubErrors: true },
    notes: [{ kind: 'rewrite', rule: `tenancy.${operation.kind}`, namespace }],
    virtual: operation,
  };
}

export const find: CommandHandler = (input, context) => findImpl(input, context);
export const count: CommandHandler = (input, context) => countImpl(input, context);
export const distinct: CommandHandler = (input, context) => distinctImpl(input, context);
export const aggregate: CommandHandler = (input, context) => aggregateImpl(input, context);
export const listIndexes: CommandHandler = listIndexesImpl;
export const listCollections: CommandHandler = listCollectionsImpl;

/** The write handlers explain may wrap (src/rewrite/writes.ts), passed in by the engine. */
export interface ExplainableWriteHandlers {
  update?: CommandHandler;
  delete?: CommandHandler;
  findAndModify?: CommandHandler;
}

/**
 * Generic fields that belong on the explain command, not inside the explained one: session and
 * transaction ids there would escape the per-tenant session mapping (catalogue 54, 57).
 */
const INNER_REFUSED_FIELDS: readonly string[] = [
  '$db',
  'lsid',
  'txnNumber',
  'autocommit',
  'startTransaction',
  '$clusterTime',
  '$readPreference',
  'writeConcern',
  'apiVersion',
  'apiStrict',
  'apiDeprecationErrors',
];

/** Verbosities explain accepts (all of them; figures are withheld from the reply where the data is shared). */
const VERBOSITIES: ReadonlySet<string> = new Set(['queryPlanner', 'executionStats', 'allPlansExecution']);

/**
 * explain (catalogue 21, 59): the inner command (find, aggregate, count, distinct, update,
 * delete, findAndModify/findandmodify) is rewritten by its own handler exactly as it would be
 * run; nested explain and every other inner command are refused. Every verbosity is allowed;
 * where the data is shared, execution figures (totalDocsExamined, keysExamined…) count other
 * tenants' documents, so the reply withholds them and says so (`mtpWithheld`, rewrite/explain.ts).
 */
export function createExplainHandler(writes: ExplainableWriteHandlers = {}): CommandHandler {
  return (input, context) => {
    checkBody('explain', input);
    const innerValue = input.body.first!;
    if (innerValue.type !== BsonType.document)
      refuse('explain.inner', 'explain must wrap a command document', ErrorCodes.TypeMismatch);
    const innerBody = RawDocument.parse(innerValue.value);
    const innerName = innerBody.first?.name;
    if (innerName === undefined) refuse('explain.inner', 'explain must wrap a command', ErrorCodes.BadValue);
    if (innerName === 'explain') refuse('explain.nested', 'explain inside explain is not allowed', ErrorCodes.BadValue);
    for (const name of INNER_REFUSED_FIELDS) {
      if (innerBody.has(name))
        refuse(
          'explain.inner',
          `the explained command must not carry ${name} (it belongs on explain itself)`,
          ErrorCodes.BadValue,
        );
    }
    const inner: CommandInput = {
      name: innerName,
      db: input.db,
      body: innerBody,
      sequences: new Map(),
      moreToCome: false,
    };
    const facts: Facts = { sharedData: false };
    const options: ReadOptions = { explained: true, facts };
    let result: RewriteResult;
    switch (innerName) {
      case 'find':
        result = findImpl(inner, context, options);
        break;
      case 'count':
        result = countImpl(inner, context, options);
        break;
      case 'distinct':
        result = distinctImpl(inner, context, options);
        break;
      case 'aggregate':
        result = aggregateImpl(inner, context, options);
        break;
      case 'update':
      case 'delete':
      case 'findAndModify':
      case 'findandmodify': {
        const handlerName: HandlerName = innerName === 'findandmodify' ? 'findAndModify' : innerName;
        const handler = writes[handlerName as keyof ExplainableWriteHandlers];
        if (handler === undefined)
          refuse('explain.inner', `explain of ${innerName} is not available`, ErrorCodes.CommandNotSupported);
        assertAllowedFields(handlerName, innerBody);
        const coll = collectionOf(inner);
        const ns = context.namespaces.resolve(input.db, coll, 'write');
        facts.sharedData ||= ns.tenantFiltered || ns.model === 'shared-collection';
        result = handler(inner, context);
        if (result.sequences.size > 0)
          refuse('explain.inner', 'the explained command cannot carry document sequences', ErrorCodes.BadValue);
        // The explained command runs in explain's database: a `$db` the handler added goes away.
        result = { ...result, body: result.body.without('$db') };
        break;
      }
      default:
        return refuse(
          'explain.inner',
          `explain of ${JSON.stringify(innerName)} is not allowed`,
          ErrorCodes.CommandNotSupported,
        );
    }

    let body = input.body;
    const notes: RewriteNote[] = [...result.notes];
    body = new RawDocument(body.elements.map((e, i) => (i === 0 ? { name: e.name, ...result.body.toValue() } : e)));
    const verbosity = input.body.get('verbosity');
    if (verbosity !== undefined && (verbosity.type !== BsonType.string || !VERBOSITIES.has(stringOf(verbosity)))) {
      refuse(
        'explain.verbosity',
        'explain.verbosity must be queryPlanner, executionStats or allPlansExecution',
        ErrorCodes.BadValue,
      );
    }
    // Every verbosity runs; where the data is shared the reply withholds the figures that count
    // other tenants' documents (rewrite/explain.ts, catalogue 21, 59).
    if (facts.sharedData && (verbosity === undefined || stringOf(verbosity) !== 'queryPlanner'))
      notes.push({ kind: 'rewrite', rule: 'explain.withhold-figures', namespace: input.db });
    // The explained command's database is explain's own.
    const physicalDb = physicalDbOf(inner, context);
    let mapped = result.reply.mapNames === true;
    if (physicalDb !== input.db) {
      body = body.with('$db', valueOf(physicalDb));
      mapped = true;
    }
    const capped = capMaxTimeMS(body, context.maxTimeMS);
    if (capped !== body) notes.push({ kind: 'rewrite', rule: 'maxTimeMS.cap', namespace: input.db });
    return {
      body: capped,
      sequences: new Map(),
      reply: { mapNames: mapped, scrubErrors: true, explain: { withholdFigures: facts.sharedData } },
      notes,
    };
  };
}

/** The physical database of a (validated) read or write command. */
function physicalDbOf(input: CommandInput, context: TenantContext): string {
  const first = input.body.first!;
  if (input.name === 'aggregate' && first.type !== BsonType.string && isDbLevel(first)) {
    return context.namespaces.resolveDatabase(input.db, 'read').db;
  }
  return context.namespaces.resolve(
    input.db,
    collectionOf(input),
    input.name === 'find' || input.name === 'count' || input.name === 'distinct' || input.name === 'aggregate'
      ? 'read'
      : 'write',
  ).db;
}

/** explain without write commands (update/delete/findAndModify are then refused inside explain). */
export const explain: CommandHandler = createExplainHandler();

/**
 * The read handlers by command name, explain included (wrapping `writes` when given). The
 * engine merges them with the write and cursor handlers.
 */
export type ReadHandlerName =
  'find' | 'count' | 'distinct' | 'aggregate' | 'explain' | 'listIndexes' | 'listCollections';

export function createReadHandlers(
  writes: ExplainableWriteHandlers = {},
): Readonly<Record<ReadHandlerName, CommandHandler>> {
  return { find, count, distinct, aggregate, explain: createExplainHandler(writes), listIndexes, listCollections };
}
