/**
 * Aggregation pipelines: a stage allowlist (deny by default), the tenant predicate placed where
 * the server will honour it, recursion into every sub-pipeline, and every embedded namespace
 * resolved through the tenant's NamespaceResolver (catalogue 13, 28-36, G1, G4, G5).
 *
 * Where the tenant predicate goes in a pipeline that reads a tenant-filtered namespace:
 * - stage 0 `$match` (with or without `$text`): ANDed into that same `$match`
 *   (`{$match: {$and: [{<field>: {$eq: T}}, <client>]}}`), so `$text` stays in the first stage (13);
 * - stage 0 `$geoNear`: ANDed into its `query` (29);
 * - stage 0 `$vectorSearch`: ANDed into its `filter`; stage 0 `$search`: an `equals` clause in
 *   `compound.filter` (the client's operator becomes `compound.must` when it is not a compound);
 *   `$searchMeta` and the `facet` collector are refused there (their counts are not filterable) (29);
 * - stage 0 `$documents`: the pipeline reads no collection; nothing to filter, later stages still
 *   are (29, 35);
 * - otherwise `{$match: {<field>: {$eq: T}}}` is prepended as stage 0.
 * Sub-pipelines get the same rule for their own (foreign) namespace: `$lookup` (equality form
 * gets `pipeline: [{$match: …}]`, the 5.0+ concise syntax), `$unionWith`, and `$graphLookup`
 * (`restrictSearchWithMatch`). `$facet` sub-pipelines read the already-filtered input; they are
 * recursed into for their own `$lookup`/`$unionWith`/`$graphLookup`.
 *
 * With `isolation.tenantFieldInReplies: hide` (TenantContext.hideTenantField) every such read
 * also drops the tenant field upstream, so no later stage can carry it where the reply-side
 * removal (rewrite/tenant-field.ts, top level and join paths only) would not find it (`$group`
 * pushing `$$ROOT`, `$replaceRoot`, renaming `$project`, `$facet`, `$out`…): `{$project:
 * {<field>: 0}}` right after the stages that only select and order (stage 0, then leading
 * `$match`/`$sort`/`$limit`/`$skip`, so the server still uses its indexes for them), at the end of a
 * `$lookup`/`$unionWith` sub-pipeline at the latest, and `{$project: {"<as>.<field>": 0}}` after a
 * `$graphLookup` of a tenant-filtered namespace (it has no sub-pipeline). A top-level pipeline of
 * selecting stages only gets none: the reply-side removal covers it. The tenant predicate stays
 * where it was; the stored documents keep the field (`$out`/`$merge` never target a tenant-filtered
 * namespace).
 *
 * Untouched stages are forwarded byte for byte (the raw values are reused, never re-encoded).
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import {
  arrayItems,
  arrayOf,
  documentOf,
  numberOf,
  RawDocument,
  stringOf,
  valueOf,
  type RawValue,
} from '../wire/raw-bson.js';
import {
  assertNoForbidden,
  validateAccumulatorField,
  validateExpression,
  validateFilter,
  validateProjection,
  validateSort,
} from '../policy/validate.js';
import { tenantEquality, tenantFilter } from './filter.js';
import type { ResolvedNamespace, RewriteNote, TenantContext } from '../policy/types.js';

/** Deepest sub-pipeline nesting accepted ($lookup in $facet in $unionWith…); the top level is 0. */
export const MAX_PIPELINE_DEPTH = 20;
/** `$graphLookup.maxDepth` is set to at most this (and to this when absent) (catalogue 31). */
export const MAX_GRAPH_LOOKUP_DEPTH = 100;

export interface PipelineOptions {
  /** The client's database of the command (embedded namespaces are resolved in it). */
  db: string;
  /** The client's collection; undefined for `aggregate: 1`. */
  coll: string | undefined;
  /** Whether the pipeline's own input must be filtered by the tenant (shared-collection, scoped). */
  tenantFiltered: boolean;
  /** Nesting depth of this pipeline (0 for a command's own pipeline). */
  depth: number;
  /** The physical database the command runs in; derived through the resolver when absent. */
  physicalDb?: string;
  /** Decisions are appended here (audit and metrics). */
  notes?: RewriteNote[];
  /** `$out` / `$merge` are only meaningful in a command's top-level pipeline (default: depth === 0). */
  allowWrites?: boolean;
}

/** What a rewrite learned besides the new pipeline. */
export interface PipelineSummary {
  /** Some namespace's physical name differs from the client's (replies need names mapped back). */
  namesMapped: boolean;
  /** Some tenant-filtered namespace is read (explain must not expose execution statistics). */
  touchesTenantFiltered: boolean;
  /** The pipeline writes ($out / $merge). */
  writes: boolean;
}

/** Stages a tenant may use; everything else (diagnostic, change streams, internal, unknown) is refused. */
export const ALLOWED_STAGES: ReadonlySet<string> = new Set([
  '$addFields',
  '$bucket',
  '$bucketAuto',
  '$count',
  '$densify',
  '$documents',
  '$facet',
  '$fill',
  '$geoNear',
  '$graphLookup',
  '$group',
  '$limit',
  '$lookup',
  '$match',
  '$merge',
  '$out',
  '$project',
  '$redact',
  '$replaceRoot',
  '$replaceWith',
  '$sample',
  '$search',
  '$searchMeta',
  '$set',
  '$setWindowFields',
  '$skip',
  '$sort',
  '$sortByCount',
  '$unionWith',
  '$unset',
  '$unwind',
  '$vectorSearch',
]);

/** Refused by name with their own rule (catalogue 25, 26, 28, 29, 63); the list is for messages and docs, not the decision. */
export const REFUSED_STAGES: ReadonlyMap<string, string> = new Map([
  ['$changeStream', 'pipeline.change-stream'],
  ['$changeStreamSplitLargeEvent', 'pipeline.change-stream'],
  ['$collStats', 'pipeline.diagnostic-stage'],
  ['$indexStats', 'pipeline.diagnostic-stage'],
  ['$currentOp', 'pipeline.diagnostic-stage'],
  ['$listSessions', 'pipeline.diagnostic-stage'],
  ['$listLocalSessions', 'pipeline.diagnostic-stage'],
  ['$planCacheStats', 'pipeline.diagnostic-stage'],
  ['$queryStats', 'pipeline.diagnostic-stage'],
  ['$querySettings', 'pipeline.diagnostic-stage'],
  ['$listSampledQueries', 'pipeline.diagnostic-stage'],
  ['$listSearchIndexes', 'pipeline.diagnostic-stage'],
  ['$listCatalog', 'pipeline.diagnostic-stage'],
  ['$listClusterCatalog', 'pipeline.diagnostic-stage'],
  ['$shardedDataDistribution', 'pipeline.diagnostic-stage'],
]);

/** Stages allowed in a `$merge.whenMatched` pipeline (the server's own list). */
const WHEN_MATCHED_STAGES: ReadonlySet<string> = new Set([
  '$addFields',
  '$set',
  '$project',
  '$unset',
  '$replaceRoot',
  '$replaceWith',
]);

/** `$search` / `$searchMeta` operators (exactly one per stage) and options. */
const SEARCH_OPERATORS: ReadonlySet<string> = new Set([
  'autocomplete',
  'compound',
  'embeddedDocument',
  'equals',
  'exists',
  'geoShape',
  'geoWithin',
  'hasAncestor',
  'hasRoot',
  'in',
  'knnBeta',
  'moreLikeThis',
  'near',
  'phrase',
  'queryString',
  'range',
  'regex',
  'span',
  'text',
  'wildcard',
]);
const SEARCH_OPTIONS: ReadonlySet<string> = new Set([
  'index',
  'highlight',
  'count',
  'returnStoredSource',
  'returnScope',
  'scoreDetails',
  'sort',
  'tracking',
  'searchAfter',
  'searchBefore',
  'concurrent',
]);
const VECTOR_SEARCH_FIELDS: ReadonlySet<string> = new Set([
  'index',
  'path',
  'queryVector',
  'numCandidates',
  'limit',
  'filter',
  'exact',
]);

/**
 * Stages that only select or order the documents of a read (their shape unchanged): the tenant
 * field is dropped after them, so the server can still serve them from an index (module comment).
 */
const SELECTING_STAGES: ReadonlySet<string> = new Set(['$match', '$sort', '$limit', '$skip']);

/** The name of a stage document (its single field). */
function stageName(stage: RawValue): string | undefined {
  return stage.type === BsonType.document ? RawDocument.parse(stage.value).first?.name : undefined;
}

/** A namespace a (sub-)pipeline reads: its client collection name (if any) and whether it is tenant-filtered. */
interface Scope {
  coll: string | undefined;
  tenantFiltered: boolean;
  /** Place the tenant predicate in this pipeline (false for $facet, whenMatched and non-filtered inputs). */
  inject: boolean;
}

type PipelineKind = 'top' | 'lookup' | 'unionWith' | 'facet' | 'whenMatched';

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

function typeError(rule: string, message: string): never {
  throw new PolicyRefusal(rule, message, ErrorCodes.TypeMismatch);
}

/** The single `{name: value}` element of a stage document. */
function stageOf(stage: RawValue, where: string): { name: string; value: RawValue } {
  if (stage.type !== BsonType.document) typeError('pipeline.stage-shape', `${where} must be a document`);
  const elements = RawDocument.parse(stage.value).elements;
  if (elements.length !== 1)
    refuse('pipeline.stage-shape', `${where} must have exactly one field`, ErrorCodes.FailedToParse);
  const [only] = elements;
  return { name: only!.name, value: { type: only!.type, value: only!.value } };
}

function stageValue(name: string, value: RawValue): RawValue {
  return documentOf([[name, value]]);
}

function requireDocument(value: RawValue, where: string): RawDocument {
  if (value.type !== BsonType.document) typeError('pipeline.stage-shape', `${where} must be a document`);
  return RawDocument.parse(value.value);
}

function requireString(value: RawValue | undefined, where: string): string {
  if (value === undefined || value.type !== BsonType.string)
    typeError('pipeline.stage-shape', `${where} must be a string`);
  return stringOf(value);
}

/** Refuses fields outside `allowed` (G1: unknown fields are refused, internal ones included). */
function onlyFields(doc: RawDocument, allowed: ReadonlySet<string>, where: string): void {
  const seen = new Set<string>();
  for (const { name } of doc.elements) {
    if (seen.has(name)) refuse('duplicate-key', `${where} names ${JSON.stringify(name)} twice`, ErrorCodes.BadValue);
    seen.add(name);
    if (!allowed.has(name))
      refuse('pipeline.unknown-field', `${where} does not accept ${JSON.stringify(name)}`, ErrorCodes.FailedToParse);
  }
}

/** validateExpression on each value of a `{name: <expression>}` document (let, $addFields…). */
export function validateExpressionFields(value: RawValue, where: string): void {
  const doc = requireDocument(value, where);
  for (const element of doc.elements) {
    validateExpression({ type: element.type, value: element.value }, `${where}.${element.name}`);
  }
}

/** Rewrites one pipeline tree; collects what the caller must know. */
class PipelineRewriter {
  readonly summary: PipelineSummary = { namesMapped: false, touchesTenantFiltered: false, writes: false };
  /** A stage to place right after the one just rewritten (`$graphLookup`'s tenant field drop). */
  private after: RawValue | undefined;

  constructor(
    private readonly context: TenantContext,
    private readonly clientDb: string,
    private readonly physicalDb: string,
    private readonly notes: RewriteNote[],
  ) {}

  private note(rule: string, coll: string | undefined): void {
    this.notes.push({
      kind: 'rewrite',
      rule,
      namespace: coll === undefined ? this.clientDb : `${this.clientDb}.${coll}`,
    });
  }

  /** A collection named inside the pipeline: resolved for reading, in the command's own physical database. */
  private foreign(coll: string, where: string): ResolvedNamespace {
    const resolved = this.context.namespaces.resolve(this.clientDb, coll, 'read');
    if (resolved.db !== this.physicalDb) {
      refuse('namespace.cross-db', `${where} names a collection that is not in the command's database`);
    }
    if (resolved.coll !== coll) this.summary.namesMapped = true;
    if (resolved.tenantFiltered) this.summary.touchesTenantFiltered = true;
    return resolved;
  }

  stages(
    pipeline: RawValue,
    scope: Scope,
    depth: number,
    where: string,
    kind: PipelineKind,
    allowWrites: boolean,
  ): RawValue {
    if (depth > MAX_PIPELINE_DEPTH) {
      refuse('pipeline.depth', `sub-pipelines nest deeper than ${MAX_PIPELINE_DEPTH} levels`, ErrorCodes.BadValue);
    }
    if (pipeline.type !== BsonType.array) typeError('pipeline.not-array', `${where} must be an array`);
    const items = arrayItems(pipeline);
    if (scope.tenantFiltered) this.summary.touchesTenantFiltered = true;
    const out: RawValue[] = [];
    items.forEach((item, index) => {
      const at = `${where}[${index}]`;
      const { name, value } = stageOf(item, at);
      const first = index === 0 && scope.inject;
      const last = index === items.length - 1;
      out.push(this.stage(item, name, value, { scope, depth, at, first, last, kind, allowWrites }));
      if (this.after !== undefined) {
        out.push(this.after);
        this.after = undefined;
      }
    });
    if (scope.inject && !this.injectedInFirstStage(items)) {
      out.unshift(stageValue('$match', tenantEquality(this.context)));
      this.note('pipeline.match', scope.coll);
    }
    if (scope.inject) this.dropTenantField(out, kind === 'top', scope.coll);
    return arrayOf(out);
  }

  /** The tenant field dropped from a tenant-filtered read (`tenantFieldInReplies: hide`; module comment). */
  private dropTenantField(out: RawValue[], top: boolean, coll: string | undefined): void {
    if (this.context.hideTenantField !== true) return;
    // Stage 0 carries the tenant predicate ($match, $geoNear, $search…), or reads nothing ($documents).
    if (out.length === 0 || stageName(out[0]!) === '$documents') return;
    let at = 1;
    while (at < out.length && SELECTING_STAGES.has(stageName(out[at]!) ?? '')) at++;
    if (top && at === out.length) return;
    out.splice(at, 0, this.dropStage(this.context.field));
    this.note('pipeline.hide-tenant-field', coll);
  }

  /** `{$project: {<path>: 0}}` */
  private dropStage(path: string): RawValue {
    return stageValue('$project', documentOf([[path, valueOf(0)]]));
  }

  /** True when stage 0 itself carries (or needs no) tenant predicate; see the module comment. */
  private injectedInFirstStage(items: RawValue[]): boolean {
    const first = items[0];
    if (first === undefined) return false;
    const name = RawDocument.parse(first.value).first?.name;
    return (
      name === '$match' ||
      name === '$geoNear' ||
      name === '$search' ||
      name === '$vectorSearch' ||
      name === '$searchMeta' ||
      name === '$documents'
    );
  }

  private stage(
    original: RawValue,
    name: string,
    value: RawValue,
    at: {
      scope: Scope;
      depth: number;
      at: string;
      first: boolean;
      last: boolean;
      kind: PipelineKind;
      allowWrites: boolean;
    },
  ): RawValue {
    const where = `${at.at}.${name}`;
    if (!ALLOWED_STAGES.has(name)) {
      const rule =
        REFUSED_STAGES.get(name) ?? (name.startsWith('$_') ? 'pipeline.internal-stage' : 'pipeline.unknown-stage');
      // A stage the proxy forbids is Unauthorized (as the server answers a least-privileged user);
      // one nobody knows gets the server's "Unrecognized pipeline stage name" (40324).
      const code = rule === 'pipeline.unknown-stage' ? ErrorCodes.Location40324 : ErrorCodes.Unauthorized;
      refuse(rule, `stage ${JSON.stringify(name)} is not allowed`, code);
    }
    if (at.kind === 'whenMatched' && !WHEN_MATCHED_STAGES.has(name)) {
      refuse(
        'merge.when-matched',
        `stage ${JSON.stringify(name)} is not allowed in $merge.whenMatched`,
        ErrorCodes.FailedToParse,
      );
    }
    assertNoForbidden(value, where);
    switch (name) {
      case '$match':
        validateFilter(value, where);
        if (at.first) {
          this.note('pipeline.match', at.scope.coll);
          return stageValue('$match', tenantFilter(this.context, value, where));
        }
        return original;
      case '$addFields':
      case '$set':
        validateExpressionFields(value, where);
        return original;
      case '$project':
        validateProjection(value, where);
        return original;
      case '$unset':
        if (value.type === BsonType.array)
          arrayItems(value).forEach((item, i) => requireString(item, `${where}[${i}]`));
        else requireString(value, where);
        return original;
      case '$replaceRoot': {
        const doc = requireDocument(value, where);
        onlyFields(doc, new Set(['newRoot']), where);
        const newRoot = doc.get('newRoot');
        if (newRoot === undefined) refuse('pipeline.stage-shape', `${where} needs newRoot`, ErrorCodes.FailedToParse);
        validateExpression(newRoot, `${where}.newRoot`);
        return original;
      }
      case '$replaceWith':
      case '$redact':
      case '$sortByCount':
      case '$documents':
        validateExpression(value, where);
        return original;
      case '$sort':
        validateSort(value, where);
        return original;
      case '$limit':
      case '$skip':
      case '$count':
      case '$unwind':
      case '$sample':
      case '$densify':
        return original; // literals only: assertNoForbidden above; the server checks their shape
      case '$group':
        this.group(value, where);
        return original;
      case '$bucket':
      case '$bucketAuto':
        this.bucket(name, value, where);
        return original;
      case '$setWindowFields':
        this.setWindowFields(value, where);
        return original;
      case '$fill':
        this.fill(value, where);
        return original;
      case '$geoNear':
        return this.geoNear(original, value, where, at.first);
      case '$search':
      case '$searchMeta':
        return this.search(original, name, value, where, at.first);
      case '$vectorSearch':
        return this.vectorSearch(original, value, where, at.first);
      case '$lookup':
        return this.lookup(original, value, where, at.depth);
      case '$graphLookup':
        return this.graphLookup(value, where);
      case '$unionWith':
        return this.unionWith(original, value, where, at.depth);
      case '$facet':
        return this.facet(original, value, where, at.scope, at.depth);
      case '$out':
      case '$merge':
        if (!at.allowWrites || at.kind !== 'top') {
          refuse(
            name === '$out' ? 'pipeline.out' : 'pipeline.merge',
            `${name} is not allowed in a sub-pipeline`,
            ErrorCodes.FailedToParse,
          );
        }
        if (!at.last)
          refuse(
            name === '$out' ? 'pipeline.out' : 'pipeline.merge',
            `${name} must be the last stage`,
            ErrorCodes.FailedToParse,
          );
        this.summary.writes = true;
        return name === '$out' ? this.out(value, where) : this.merge(value, where, at.depth);
      default:
        // ALLOWED_STAGES and this switch must agree; an allowed stage without a rule is refused.
        return refuse(
          'pipeline.unknown-stage',
          `stage ${JSON.stringify(name)} is not allowed`,
          ErrorCodes.Location40324,
        );
    }
  }

  /** `{_id: <expression>, <field>: {<accumulator>: <expression>}}` */
  private group(value: RawValue, where: string): void {
    const doc = requireDocument(value, where);
    if (!doc.has('_id')) refuse('pipeline.stage-shape', `${where} needs _id`, ErrorCodes.FailedToParse);
    for (const element of doc.elements) {
      const field: RawValue = { type: element.type, value: element.value };
      if (element.name === '_id') validateExpression(field, `${where}._id`);
      else validateAccumulatorField(field, `${where}.${element.name}`, 'group');
    }
  }

  private bucket(name: string, value: RawValue, where: string): void {
    const doc = requireDocument(value, where);
    const allowed =
      name === '$bucket'
        ? new Set(['groupBy', 'boundaries', 'default', 'output'])
        : new Set(['groupBy', 'buckets', 'output', 'granularity']);
    onlyFields(doc, allowed, where);
    const groupBy = doc.get('groupBy');
    if (groupBy !== undefined) validateExpression(groupBy, `${where}.groupBy`);
    const output = doc.get('output');
    if (output !== undefined) {
      for (const element of requireDocument(output, `${where}.output`).elements) {
        validateAccumulatorField(element, `${where}.output.${element.name}`, 'group');
      }
    }
  }

  private setWindowFields(value: RawValue, where: string): void {
    const doc = requireDocument(value, where);
    onlyFields(doc, new Set(['partitionBy', 'sortBy', 'output']), where);
    const partitionBy = doc.get('partitionBy');
    if (partitionBy !== undefined) validateExpression(partitionBy, `${where}.partitionBy`);
    const sortBy = doc.get('sortBy');
    if (sortBy !== undefined) validateSort(sortBy, `${where}.sortBy`);
    const output = doc.get('output');
    if (output === undefined) refuse('pipeline.stage-shape', `${where} needs output`, ErrorCodes.FailedToParse);
    for (const element of requireDocument(output, `${where}.output`).elements) {
      validateAccumulatorField(element, `${where}.output.${element.name}`, 'window');
    }
  }

  private fill(value: RawValue, where: string): void {
    const doc = requireDocument(value, where);
    onlyFields(doc, new Set(['partitionBy', 'partitionByFields', 'sortBy', 'output']), where);
    const partitionBy = doc.get('partitionBy');
    if (partitionBy !== undefined) validateExpression(partitionBy, `${where}.partitionBy`);
    const sortBy = doc.get('sortBy');
    if (sortBy !== undefined) validateSort(sortBy, `${where}.sortBy`);
    const output = doc.get('output');
    if (output === undefined) refuse('pipeline.stage-shape', `${where} needs output`, ErrorCodes.FailedToParse);
    for (const element of requireDocument(output, `${where}.output`).elements) {
      const spec = requireDocument(element, `${where}.output.${element.name}`);
      onlyFields(spec, new Set(['value', 'method']), `${where}.output.${element.name}`);
      const fillValue = spec.get('value');
      if (fillValue !== undefined) validateExpression(fillValue, `${where}.output.${element.name}.value`);
    }
  }

  /** `$geoNear` must be stage 0; the tenant is ANDed into its `query` (catalogue 29). */
  private geoNear(original: RawValue, value: RawValue, where: string, first: boolean): RawValue {
    const doc = requireDocument(value, where);
    const query = doc.get('query');
    if (query !== undefined) validateFilter(query, `${where}.query`);
    if (!first) return original;
    this.note('pipeline.geoNear.query', undefined);
    return stageValue('$geoNear', doc.with('query', tenantFilter(this.context, query, `${where}.query`)).toValue());
  }

  /**
   * `$search` must be stage 0: an `equals` clause on the tenant field goes into `compound.filter`
   * (the client's operator becomes `compound.must` when it is something else). `$searchMeta` and
   * the `facet` collector compute counts over what the operator matched; they are refused when the
   * namespace is tenant-filtered (catalogue 29).
   */
  private search(original: RawValue, name: string, value: RawValue, where: string, first: boolean): RawValue {
    const doc = requireDocument(value, where);
    const operators = doc.elements.filter((element) => SEARCH_OPERATORS.has(element.name));
    for (const element of doc.elements) {
      if (!SEARCH_OPERATORS.has(element.name) && !SEARCH_OPTIONS.has(element.name) && element.name !== 'facet') {
        refuse(
          'pipeline.unknown-field',
          `${where} does not accept ${JSON.stringify(element.name)}`,
          ErrorCodes.FailedToParse,
        );
      }
    }
    if (!first) return original;
    if (name === '$searchMeta' || doc.has('facet')) {
      refuse(
        'pipeline.search-meta',
        `${name === '$searchMeta' ? '$searchMeta' : '$search.facet'} counts cannot be limited to the tenant in a shared collection`,
      );
    }
    if (operators.length !== 1)
      refuse('pipeline.stage-shape', `${where} needs exactly one operator`, ErrorCodes.FailedToParse);
    const operator = operators[0]!;
    const clause = documentOf([
      [
        'equals',
        documentOf([
          ['path', valueOf(this.context.field)],
          ['value', this.context.tenantValue],
        ]),
      ],
    ]);
    let compound: RawValue;
    if (operator.name === 'compound') {
      const client = requireDocument(operator, `${where}.compound`);
      const filter = client.get('filter');
      let filters: RawValue[];
      if (filter === undefined) filters = [clause];
      else if (filter.type === BsonType.array) filters = [...arrayItems(filter), clause];
      else if (filter.type === BsonType.document) filters = [filter, clause];
      else typeError('pipeline.stage-shape', `${where}.compound.filter must be a document or an array`);
      compound = client.with('filter', arrayOf(filters)).toValue();
    } else {
      compound = documentOf([
        ['must', arrayOf([documentOf([[operator.name, operator]])])],
        ['filter', arrayOf([clause])],
      ]);
    }
    const rewritten = new RawDocument(
      doc.elements.map((element) =>
        element === operator ? { name: 'compound', type: BsonType.document, value: compound.value } : element,
      ),
    );
    this.note('pipeline.search.filter', undefined);
    return stageValue(name, rewritten.toValue());
  }

  /** `$vectorSearch` must be stage 0: the tenant is ANDed into its `filter` (catalogue 29). */
  private vectorSearch(original: RawValue, value: RawValue, where: string, first: boolean): RawValue {
    const doc = requireDocument(value, where);
    onlyFields(doc, VECTOR_SEARCH_FIELDS, where);
    const filter = doc.get('filter');
    if (filter !== undefined) validateFilter(filter, `${where}.filter`);
    if (!first) return original;
    this.note('pipeline.vectorSearch.filter', undefined);
    return stageValue(
      '$vectorSearch',
      doc.with('filter', tenantFilter(this.context, filter, `${where}.filter`)).toValue(),
    );
  }

  /** True when the pipeline's stage 0 is `$documents` (it then reads no collection). */
  private startsWithDocuments(pipeline: RawValue | undefined): boolean {
    if (pipeline === undefined || pipeline.type !== BsonType.array) return false;
    const first = arrayItems(pipeline)[0];
    return (
      first !== undefined &&
      first.type === BsonType.document &&
      RawDocument.parse(first.value).first?.name === '$documents'
    );
  }

  /** `$lookup` (catalogue 30): string `from` only, resolved; the foreign side filtered; recursion. */
  private lookup(original: RawValue, value: RawValue, where: string, depth: number): RawValue {
    const doc = requireDocument(value, where);
    onlyFields(doc, new Set(['from', 'as', 'localField', 'foreignField', 'let', 'pipeline']), where);
    requireString(doc.get('as'), `${where}.as`);
    const localField = doc.get('localField');
    const foreignField = doc.get('foreignField');
    if (localField !== undefined) requireString(localField, `${where}.localField`);
    if (foreignField !== undefined) requireString(foreignField, `${where}.foreignField`);
    if ((localField === undefined) !== (foreignField === undefined)) {
      refuse('pipeline.stage-shape', `${where} needs both localField and foreignField`, ErrorCodes.FailedToParse);
    }
    const letValue = doc.get('let');
    if (letValue !== undefined) validateExpressionFields(letValue, `${where}.let`);
    const pipeline = doc.get('pipeline');
    if (pipeline === undefined && localField === undefined) {
      refuse('pipeline.stage-shape', `${where} needs localField/foreignField or pipeline`, ErrorCodes.FailedToParse);
    }
    const from = doc.get('from');
    let next = doc;
    let scope: Scope = { coll: undefined, tenantFiltered: false, inject: false };
    if (from === undefined) {
      if (!this.startsWithDocuments(pipeline)) {
        refuse(
          'lookup.from',
          `${where} needs from unless its pipeline starts with $documents`,
          ErrorCodes.FailedToParse,
        );
      }
    } else {
      if (from.type !== BsonType.string) {
        refuse('lookup.from-not-string', `${where}.from must be a collection name string ({db, coll} is refused)`);
      }
      const coll = stringOf(from);
      const resolved = this.foreign(coll, `${where}.from`);
      if (resolved.coll !== coll) next = next.with('from', valueOf(resolved.coll));
      scope = { coll, tenantFiltered: resolved.tenantFiltered, inject: resolved.tenantFiltered };
    }
    if (pipeline !== undefined) {
      next = next.with('pipeline', this.stages(pipeline, scope, depth + 1, `${where}.pipeline`, 'lookup', false));
    } else if (scope.inject) {
      // Equality form: the 5.0+ concise syntax adds a pipeline run on the foreign documents.
      const stages = [stageValue('$match', tenantEquality(this.context))];
      this.dropTenantField(stages, false, scope.coll);
      next = next.with('pipeline', arrayOf(stages));
      this.note('pipeline.lookup.match', scope.coll);
    }
    return next === doc ? original : stageValue('$lookup', next.toValue());
  }

  /** `$graphLookup` (catalogue 31): string `from`, tenant ANDed into restrictSearchWithMatch, maxDepth capped. */
  private graphLookup(value: RawValue, where: string): RawValue {
    const doc = requireDocument(value, where);
    onlyFields(
      doc,
      new Set([
        'from',
        'startWith',
        'connectFromField',
        'connectToField',
        'as',
        'maxDepth',
        'depthField',
        'restrictSearchWithMatch',
      ]),
      where,
    );
    const from = doc.get('from');
    if (from === undefined) refuse('pipeline.stage-shape', `${where} needs from`, ErrorCodes.FailedToParse);
    if (from.type !== BsonType.string)
      refuse('lookup.from-not-string', `${where}.from must be a collection name string`);
    for (const field of ['connectFromField', 'connectToField', 'as'])
      requireString(doc.get(field), `${where}.${field}`);
    const depthField = doc.get('depthField');
    if (depthField !== undefined) requireString(depthField, `${where}.depthField`);
    const startWith = doc.get('startWith');
    if (startWith === undefined) refuse('pipeline.stage-shape', `${where} needs startWith`, ErrorCodes.FailedToParse);
    validateExpression(startWith, `${where}.startWith`);
    const restrict = doc.get('restrictSearchWithMatch');
    if (restrict !== undefined) validateFilter(restrict, `${where}.restrictSearchWithMatch`);

    const coll = stringOf(from);
    const resolved = this.foreign(coll, `${where}.from`);
    let next = doc;
    if (resolved.coll !== coll) next = next.with('from', valueOf(resolved.coll));
    if (resolved.tenantFiltered) {
      next = next.with(
        'restrictSearchWithMatch',
        tenantFilter(this.context, restrict, `${where}.restrictSearchWithMatch`),
      );
      this.note('pipeline.graphLookup.match', coll);
      if (this.context.hideTenantField === true) {
        // No sub-pipeline to end with the drop: each found document loses it right after the stage.
        this.after = this.dropStage(`${requireString(doc.get('as'), `${where}.as`)}.${this.context.field}`);
        this.note('pipeline.hide-tenant-field', coll);
      }
    }
    const maxDepth = doc.get('maxDepth');
    const depth = maxDepth === undefined ? undefined : numberOf(maxDepth);
    if (maxDepth !== undefined && (depth === undefined || !Number.isInteger(depth) || depth < 0)) {
      typeError('pipeline.stage-shape', `${where}.maxDepth must be a non-negative integer`);
    }
    if (depth === undefined || depth > MAX_GRAPH_LOOKUP_DEPTH) {
      next = next.with('maxDepth', valueOf(MAX_GRAPH_LOOKUP_DEPTH));
      this.note('pipeline.graphLookup.maxDepth', coll);
    }
    return stageValue('$graphLookup', next.toValue());
  }

  /** `$unionWith` (catalogue 32): string coll or `{coll, pipeline}`; the tenant predicate prepended; recursion. */
  private unionWith(original: RawValue, value: RawValue, where: string, depth: number): RawValue {
    let coll: string | undefined;
    let pipeline: RawValue | undefined;
    let doc: RawDocument | undefined;
    if (value.type === BsonType.string) {
      coll = stringOf(value);
    } else if (value.type === BsonType.document) {
      doc = RawDocument.parse(value.value);
      onlyFields(doc, new Set(['coll', 'pipeline']), where);
      const collValue = doc.get('coll');
      if (collValue !== undefined) {
        if (collValue.type !== BsonType.string)
          refuse('unionWith.coll-not-string', `${where}.coll must be a collection name string`);
        coll = stringOf(collValue);
      }
      pipeline = doc.get('pipeline');
      if (coll === undefined && !this.startsWithDocuments(pipeline)) {
        refuse(
          'unionWith.coll',
          `${where} needs coll unless its pipeline starts with $documents`,
          ErrorCodes.FailedToParse,
        );
      }
    } else {
      return refuse('unionWith.coll-not-string', `${where} must be a collection name or {coll, pipeline}`);
    }
    let scope: Scope = { coll: undefined, tenantFiltered: false, inject: false };
    let physicalColl: string | undefined;
    if (coll !== undefined) {
      const resolved = this.foreign(coll, `${where}.coll`);
      physicalColl = resolved.coll;
      scope = { coll, tenantFiltered: resolved.tenantFiltered, inject: resolved.tenantFiltered };
    }
    const rewrittenPipeline =
      pipeline !== undefined
        ? this.stages(pipeline, scope, depth + 1, `${where}.pipeline`, 'unionWith', false)
        : scope.inject
          ? this.stages(arrayOf([]), scope, depth + 1, `${where}.pipeline`, 'unionWith', false)
          : undefined;
    if (doc === undefined && physicalColl === coll && rewrittenPipeline === undefined) return original;
    const entries: Array<[string, RawValue]> = [];
    if (physicalColl !== undefined) entries.push(['coll', valueOf(physicalColl)]);
    if (rewrittenPipeline !== undefined) entries.push(['pipeline', rewrittenPipeline]);
    return stageValue('$unionWith', documentOf(entries));
  }

  /** `$facet` (catalogue 32): each sub-pipeline reads the already-filtered input; recursed for its joins. */
  private facet(original: RawValue, value: RawValue, where: string, scope: Scope, depth: number): RawValue {
    const doc = requireDocument(value, where);
    onlyFields(doc, new Set(doc.names), where); // duplicate names
    let changed = false;
    const next = doc.elements.map((element) => {
      const rewritten = this.stages(
        element,
        { coll: scope.coll, tenantFiltered: false, inject: false },
        depth + 1,
        `${where}.${element.name}`,
        'facet',
        false,
      );
      if (
        rewritten.value.length !== element.value.length ||
        Buffer.compare(Buffer.from(rewritten.value), Buffer.from(element.value)) !== 0
      ) {
        changed = true;
      }
      return { name: element.name, type: rewritten.type, value: rewritten.value };
    });
    return changed ? stageValue('$facet', new RawDocument(next).toValue()) : original;
  }

  /** The target of `$out` / `$merge`: never a shared collection; otherwise the tenant's own physical namespace (33-34). */
  private target(
    rule: string,
    dbValue: RawValue | undefined,
    collValue: RawValue | undefined,
    where: string,
  ): ResolvedNamespace {
    const db = dbValue === undefined ? this.clientDb : requireString(dbValue, `${where}.db`);
    const coll = requireString(collValue, `${where}.coll`);
    const resolved = this.context.namespaces.resolve(db, coll, 'write');
    if (resolved.model === 'shared-collection' || resolved.tenantFiltered) {
      refuse(
        rule,
        `${rule === 'pipeline.out' ? '$out' : '$merge'} into a shared collection would affect other tenants`,
      );
    }
    if (resolved.db !== db || resolved.coll !== coll) this.summary.namesMapped = true;
    this.note(`${rule}.target`, coll);
    return resolved;
  }

  /** `$out: "coll"` or `{db, coll, timeseries?}` (catalogue 33). */
  private out(value: RawValue, where: string): RawValue {
    let resolved: ResolvedNamespace;
    let extra: RawDocument | undefined;
    if (value.type === BsonType.string) {
      resolved = this.target('pipeline.out', undefined, value, where);
    } else if (value.type === BsonType.document) {
      const doc = RawDocument.parse(value.value);
      onlyFields(doc, new Set(['db', 'coll', 'timeseries']), where);
      resolved = this.target('pipeline.out', doc.get('db'), doc.get('coll'), where);
      extra = doc.without('db', 'coll');
    } else {
      return typeError('pipeline.stage-shape', `${where} must be a collection name or {db, coll}`);
    }
    const entries: Array<[string, RawValue]> = [
      ['db', valueOf(resolved.db)],
      ['coll', valueOf(resolved.coll)],
    ];
    for (const element of extra?.elements ?? []) entries.push([element.name, element]);
    return stageValue('$out', documentOf(entries));
  }

  /** `$merge` (catalogue 34): `into` resolved for writing; a whenMatched pipeline checked like an update pipeline. */
  private merge(value: RawValue, where: string, depth: number): RawValue {
    const doc =
      value.type === BsonType.string
        ? new RawDocument([{ name: 'into', type: value.type, value: value.value }])
        : requireDocument(value, where);
    onlyFields(doc, new Set(['into', 'on', 'let', 'whenMatched', 'whenNotMatched']), where);
    const into = doc.get('into');
    if (into === undefined) refuse('pipeline.stage-shape', `${where} needs into`, ErrorCodes.FailedToParse);
    let resolved: ResolvedNamespace;
    if (into.type === BsonType.string) {
      resolved = this.target('pipeline.merge', undefined, into, `${where}.into`);
    } else {
      const target = requireDocument(into, `${where}.into`);
      onlyFields(target, new Set(['db', 'coll']), `${where}.into`);
      resolved = this.target('pipeline.merge', target.get('db'), target.get('coll'), `${where}.into`);
    }
    const on = doc.get('on');
    if (on !== undefined) {
      if (on.type === BsonType.array) arrayItems(on).forEach((item, i) => requireString(item, `${where}.on[${i}]`));
      else requireString(on, `${where}.on`);
    }
    const letValue = doc.get('let');
    if (letValue !== undefined) validateExpressionFields(letValue, `${where}.let`);
    let next = doc.with(
      'into',
      documentOf([
        ['db', valueOf(resolved.db)],
        ['coll', valueOf(resolved.coll)],
      ]),
    );
    const whenMatched = doc.get('whenMatched');
    if (whenMatched !== undefined) {
      if (whenMatched.type === BsonType.array) {
        const scope: Scope = { coll: undefined, tenantFiltered: false, inject: false };
        next = next.with(
          'whenMatched',
          this.stages(whenMatched, scope, depth + 1, `${where}.whenMatched`, 'whenMatched', false),
        );
      } else {
        const mode = requireString(whenMatched, `${where}.whenMatched`);
        if (!['replace', 'keepExisting', 'merge', 'fail'].includes(mode)) {
          refuse('pipeline.stage-shape', `${where}.whenMatched is not a known mode`, ErrorCodes.BadValue);
        }
      }
    }
    const whenNotMatched = doc.get('whenNotMatched');
    if (whenNotMatched !== undefined) {
      const mode = requireString(whenNotMatched, `${where}.whenNotMatched`);
      if (!['insert', 'discard', 'fail'].includes(mode)) {
        refuse('pipeline.stage-shape', `${where}.whenNotMatched is not a known mode`, ErrorCodes.BadValue);
      }
    }
    return stageValue('$merge', next.toValue());
  }
}

/**
 * Checks and rewrites an aggregation pipeline (see the module comment). Throws PolicyRefusal.
 * `options.notes` receives the decisions; `rewritePipelineDetailed` also returns a summary.
 */
export function rewritePipeline(pipeline: RawValue, context: TenantContext, options: PipelineOptions): RawValue {
  return rewritePipelineDetailed(pipeline, context, options).pipeline;
}

export function rewritePipelineDetailed(
  pipeline: RawValue,
  context: TenantContext,
  options: PipelineOptions,
): { pipeline: RawValue; summary: PipelineSummary } {
  const physicalDb =
    options.physicalDb ??
    (options.coll === undefined
      ? context.namespaces.resolveDatabase(options.db, 'read').db
      : context.namespaces.resolve(options.db, options.coll, 'read').db);
  const rewriter = new PipelineRewriter(context, options.db, physicalDb, options.notes ?? []);
  if (options.depth === 0) assertNoForbidden(pipeline, 'pipeline');
  const scope: Scope = { coll: options.coll, tenantFiltered: options.tenantFiltered, inject: options.tenantFiltered };
  const rewritten = rewriter.stages(
    pipeline,
    scope,
    options.depth,
    'pipeline',
    'top',
    options.allowWrites ?? options.depth === 0,
  );
  return { pipeline: rewritten, summary: rewriter.summary };
}

/** Exposed for tests and callers that need to tell whether a stage name is accepted. */
export function isAllowedStage(name: string): boolean {
  return ALLOWED_STAGES.has(name);
}
