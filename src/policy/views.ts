/**
 * Views created directly on the server (catalogue 22). A view's pipeline runs before anything
 * the proxy adds, so the proxy's tenant `$match` comes after the view's `$group` or `$lookup`,
 * which already saw every tenant. Tenants cannot create views through the proxy (`command.view`);
 * these are the pure decisions about a view an operator created: which namespaces a read names,
 * and whether a view's definition keeps a tenant to its own documents.
 *
 * Pure: the definitions come from the upstream's listCollections (src/tenancy/views.ts asks).
 */
import { RawDocument, sameValue, stringOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import { BsonType } from '../wire/bson-scan.js';
import { deserialize, type Document } from '../wire/bson.js';

/** A view as listCollections shows it (`options`), values deserialized with their exact BSON types. */
export interface ViewDefinition {
  viewOn: string;
  pipeline: readonly Document[];
  collation?: Document | undefined;
}

export type ViewVerdict =
  /** `reads`: what the view reads besides itself, its `viewOn` first, then every join's collection (same database). */
  { scoped: true; reads: string[] } | { scoped: false; reason: string };

export interface ViewScope {
  /**
   * The view or what it is on holds every tenant's documents (shared-collection model): its
   * pipeline must start with a `$match` pinning the tenant field to the caller, and join nothing.
   * Otherwise (database-per-tenant, collection-prefix) the namespaces it reads are what matters.
   */
  tenantFiltered: boolean;
  /** The tenant field of shared collections. */
  field: string;
  /** The caller's tenant value (its BSON type counts). */
  tenantValue: RawValue;
}

/** Commands whose main namespace is read through a view's pipeline. */
const VIEW_READS: ReadonlySet<string> = new Set(['find', 'aggregate', 'count', 'distinct']);

/** Stages that read another collection (found at any depth: `$facet`, sub-pipelines). */
const JOIN_STAGES = ['$lookup', '$graphLookup', '$unionWith'] as const;

/**
 * The collections a read command names in its own database: the main target and every
 * `$lookup`/`$graphLookup` `from` and `$unionWith` `coll` at any depth of its pipeline;
 * `explain` is looked through. Undefined for commands a view's pipeline does not serve (writes
 * to a view are errors on the server). `foreign`: a join names a collection by a form other than
 * a string (e.g. `{db, coll}`), which the caller must treat as unsafe.
 */
export function readTargets(body: RawDocument): { colls: string[]; foreign: boolean } | undefined {
  let command = body;
  if (command.first?.name === 'explain') {
    const inner = command.first;
    if (inner.type !== BsonType.document) return undefined;
    command = RawDocument.parse(inner.value);
  }
  const first = command.first;
  if (first === undefined || !VIEW_READS.has(first.name)) return undefined;
  const colls: string[] = [];
  if (first.type === BsonType.string) colls.push(stringOf(first));
  let foreign = false;
  const pipeline = command.get('pipeline');
  if (first.name === 'aggregate' && pipeline !== undefined && pipeline.type === BsonType.array) {
    const joins = joinTargets(Object.values(deserialize(pipeline.value)) as Document[]);
    colls.push(...joins.colls);
    foreign = joins.foreign;
  }
  return { colls: [...new Set(colls)], foreign };
}

/** The collections the join stages of `pipeline` read, at any depth; `foreign` when one is not named by a string. */
export function joinTargets(pipeline: readonly unknown[]): { colls: string[]; foreign: boolean } {
  const colls: string[] = [];
  let foreign = false;
  const visit = (value: unknown, depth: number): void => {
    // Validated documents are at most maxBsonDepth deep; the bound only keeps a cycle from hanging.
    if (depth > 200 || value === null || typeof value !== 'object') return;
    if (Array.isArray(value)) {
      for (const item of value) visit(item, depth + 1);
      return;
    }
    if (isBsonValue(value)) return;
    const document = value as Document;
    for (const stage of JOIN_STAGES) {
      if (!(stage in document)) continue;
      const spec = document[stage] as unknown;
      if (stage === '$unionWith' && typeof spec === 'string') colls.push(spec);
      else if (isPlainDocument(spec)) {
        const from = stage === '$unionWith' ? spec['coll'] : spec['from'];
        if (typeof from === 'string') colls.push(from);
        // $lookup without `from` reads `$documents` only; anything else names a namespace some other way.
        else if (from !== undefined) foreign = true;
      } else foreign = true;
    }
    for (const child of Object.values(document)) visit(child, depth + 1);
  };
  visit(pipeline, 0);
  return { colls: [...new Set(colls)], foreign };
}

/**
 * Whether reading the view keeps the caller to its own documents. Where data is shared
 * (`scope.tenantFiltered`) the view must start with a `$match` that pins the tenant field to
 * exactly the caller's tenant by equality (a top-level field, `$eq`, or inside a top-level
 * `$and`: all conjunctive, so no other part of the match can widen it), join no other collection
 * (a join after the match reads the joined collection unfiltered) and have no collation other
 * than simple (a case-insensitive collation would compare the tenant loosely, catalogue 9).
 * The namespaces it reads (`reads`) must still be checked by the caller: each must be the
 * tenant's, and a view among them is checked in turn.
 */
export function viewVerdict(view: ViewDefinition, scope: ViewScope): ViewVerdict {
  const joins = joinTargets(view.pipeline);
  if (joins.foreign) return { scoped: false, reason: 'its pipeline joins a namespace not named by a string' };
  if (scope.tenantFiltered) {
    const first = view.pipeline[0];
    const match = first !== undefined && Object.keys(first).length === 1 ? first['$match'] : undefined;
    if (!isPlainDocument(match) || !pinsTenant(match, scope))
      return {
        scoped: false,
        reason: `its pipeline does not start with a $match pinning ${scope.field} to the caller's tenant`,
      };
    if (joins.colls.length > 0 || hasJoinStage(view.pipeline))
      return { scoped: false, reason: 'its pipeline joins another collection, which it reads for every tenant' };
    const locale = isPlainDocument(view.collation) ? view.collation['locale'] : undefined;
    if (view.collation !== undefined && locale !== 'simple')
      return { scoped: false, reason: 'it has a collation other than simple, which compares the tenant loosely' };
  }
  return { scoped: true, reads: [...new Set([view.viewOn, ...joins.colls])] };
}

/** The `$match` document keeps only the tenant's documents: equality on the field, conjunctively. */
export function pinsTenant(match: Document, scope: Pick<ViewScope, 'field' | 'tenantValue'>): boolean {
  const isTenant = (value: unknown): boolean => value !== undefined && sameValue(valueOf(value), scope.tenantValue);
  for (const [key, value] of Object.entries(match)) {
    if (key === scope.field) {
      if (isOperatorDocument(value)) {
        // Field operators are conjunctive: `$eq` to the tenant pins it whatever else is there.
        if ('$eq' in value && isTenant(value['$eq'])) return true;
      } else if (isTenant(value)) return true;
    } else if (key === '$and' && Array.isArray(value)) {
      if (value.some((member) => isPlainDocument(member) && pinsTenant(member, scope))) return true;
    }
  }
  return false;
}

/** A join stage somewhere (also one without `from`, which joinTargets does not list). */
function hasJoinStage(value: unknown): boolean {
  if (value === null || typeof value !== 'object' || isBsonValue(value)) return false;
  if (Array.isArray(value)) return value.some(hasJoinStage);
  const document = value as Document;
  return JOIN_STAGES.some((stage) => stage in document) || Object.values(document).some(hasJoinStage);
}

/** A BSON class instance (ObjectId, Int32, Long, regex…), not a document. */
function isBsonValue(value: object): boolean {
  return '_bsontype' in value || value instanceof Date || value instanceof RegExp || value instanceof Uint8Array;
}

function isPlainDocument(value: unknown): value is Document {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !isBsonValue(value);
}

function isOperatorDocument(value: unknown): value is Document {
  if (!isPlainDocument(value)) return false;
  const keys = Object.keys(value);
  return keys.length > 0 && keys.every((key) => key.startsWith('$'));
}
