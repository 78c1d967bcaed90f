/**
 * explain replies as a tenant may see them (catalogue 21, 59), at every verbosity.
 *
 * Written against MongoDB's documented shape (queryPlanner / executionStats / allPlansExecution,
 * classic and slot-based engines, aggregate `stages`, sharded `shards`), and harmless on others:
 * - Execution figures (`totalDocsExamined`, `keysExamined`, `nReturned` of inner stages, `works`,
 *   timings…) count every document and key the server touched, other tenants' included, where
 *   the data is shared: every number under `executionStats`, `allPlansExecution`,
 *   `executionStages` and an aggregate stage's figures is withheld, except the query's own
 *   parameters (`limitAmount`, `skipAmount`…) and `executionStats.nReturned` (what the tenant
 *   itself receives); so are planner estimates (`estimated…`, e.g. DocumentDB's
 *   `estimatedTotalKeysExamined`) anywhere. The reply says so in `mtpWithheld` (the names
 *   withheld, and why).
 * - Index names made by the tenancy layer (`mtp_t_…` per tenant, `mtp_s_…` shared) are never
 *   shown: one the tenant owns on the namespace it is used on (the explained collection, or a
 *   `$lookup` / `$graphLookup` / `$unionWith` target) becomes the tenant's own name for it (plan
 *   stages, SBE plan text, `indexesUsed`), its stage's key pattern, bounds and multikey paths
 *   without the tenant field the proxy put first (what the tenant's listIndexes shows); any other
 *   (another tenant's, a shared one the tenant does not own there) becomes `<redacted>`, and such
 *   a stage's key pattern, bounds and multikey paths are dropped. Which namespace a plan part is
 *   about is read from the reply where it says (`namespace`, an `EQ_LOOKUP`'s
 *   `foreignCollection`, a `$lookup` stage's `from`); where it does not (DocumentDB names no
 *   namespace), a name is mapped only when every namespace read that has that physical index has
 *   it as the tenant's, under one name (`mtp_s_` names repeat across collections).
 * - The stage specifications of `$lookup`, `$graphLookup` and `$unionWith` are walked too: some
 *   upstreams put the foreign collection's plan and figures there (DocumentDB; MongoDB's
 *   `$unionWith` sub-pipeline).
 * - `namespace` values are physical: mapped back to the client's, or redacted.
 * - `serverInfo.host` / `port` name the upstream: dropped.
 * Everything else (the parsed query with the caller's own tenant predicate, plan shapes,
 * operator-declared and client index names on private data) is forwarded as it is.
 */
import { BsonType } from '../wire/bson-scan.js';
import { arrayItems, arrayOf, documentOf, RawDocument, stringOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import type { ExplainIndexes, NamespaceResolver } from '../policy/types.js';
import { REDACTED } from './replies.js';

export interface ExplainRedaction {
  /** Withhold execution figures (the explained namespace holds other tenants' documents). */
  withholdFigures: boolean;
}

/**
 * The tenant's tenancy indexes and the tenant field they start with: `indexes` per namespace read
 * (what the engine passes), or `names` alone (physical → the tenant's name), applied everywhere.
 */
export interface OwnIndexNames {
  names?: ReadonlyMap<string, string>;
  indexes?: ExplainIndexes;
  field: string;
}

/** Sub-documents holding execution figures. */
const STATS_CONTAINERS: ReadonlySet<string> = new Set(['executionStats', 'allPlansExecution', 'executionStages']);
/** Numbers inside figures that are the query's own parameters or structure, not counts. */
const KEPT_NUMBERS: ReadonlySet<string> = new Set([
  'limitAmount',
  'skipAmount',
  'indexVersion',
  'planNodeId',
  'explainVersion',
]);
/** The client's own query, echoed: never rewritten. */
const QUERY_ECHO: ReadonlySet<string> = new Set([
  'filter',
  'parsedQuery',
  'keyPattern',
  'indexBounds',
  'sortPattern',
  'transformBy',
  'multiKeyPaths',
  'command',
  'indexFilterSet',
]);
/** Stage fields that show an index's keys: dropped with a redacted index name. */
const INDEX_DETAILS = ['keyPattern', 'indexKeyPattern', 'indexBounds', 'multiKeyPaths'];
/** Stages naming another collection: their specification holds its plan on some upstreams. */
const FOREIGN_STAGES: ReadonlySet<string> = new Set(['$lookup', '$graphLookup', '$unionWith']);
/** A plan part whose namespace the reply does not say. */
const UNKNOWN = undefined;
const TENANCY_INDEX = /mtp_[st]_[0-9a-f]{24}/g;
const WHOLE_TENANCY_INDEX = /^mtp_[st]_[0-9a-f]{24}$/;
const WITHHELD_REASON =
  "execution figures count every document and key the server examined, other tenants' included: withheld " +
  '(catalogue 21, 59)';

function isNumber(type: number): boolean {
  return type === BsonType.int32 || type === BsonType.int64 || type === BsonType.double || type === BsonType.decimal128;
}

function stringValue(value: RawValue): string | undefined {
  if (value.type !== BsonType.string) return undefined;
  try {
    return stringOf(value);
  } catch {
    return undefined;
  }
}

function splitNs(ns: string): { db: string; coll: string } | undefined {
  const dot = ns.indexOf('.');
  return dot <= 0 ? undefined : { db: ns.slice(0, dot), coll: ns.slice(dot + 1) };
}

/** Where a plan part is: a physical namespace (`db.coll`), or UNKNOWN. */
type Context = string | undefined;

class Redactor {
  readonly withheld = new Set<string>();
  redactedIndexes = 0;
  /** Physical namespace → tenancy index → the tenant's name (null: not its own). */
  private readonly namespaces: ReadonlyMap<string, ReadonlyMap<string, string | null>>;
  /** Whether namespaces are told apart (otherwise `names` applies to every plan part). */
  private readonly tracked: boolean;
  private readonly db: string;
  readonly initial: Context;

  constructor(
    private readonly options: ExplainRedaction,
    private readonly resolver: NamespaceResolver,
    private readonly own: OwnIndexNames,
  ) {
    const indexes = own.indexes;
    this.tracked = indexes !== undefined;
    this.db = indexes?.db ?? '';
    this.namespaces = indexes?.namespaces ?? new Map([['', own.names ?? new Map()]]);
    // One namespace read: every plan part is about it. Several: a part says which, or it is unknown.
    const others = [...this.namespaces.keys()].filter((ns) => ns !== indexes?.explained).length;
    this.initial = !this.tracked ? '' : others === 0 ? (indexes?.explained ?? UNKNOWN) : UNKNOWN;
  }

  /**
   * The tenant's name for a tenancy index used in `context`, or undefined (redact). Where the
   * namespace is unknown: only when every namespace read that has it has it as the tenant's,
   * under one name.
   */
  private nameFor(physical: string, context: Context): string | undefined {
    if (context !== UNKNOWN) return this.namespaces.get(context)?.get(physical) ?? undefined;
    let found: string | undefined;
    for (const names of this.namespaces.values()) {
      if (!names.has(physical)) continue;
      const name = names.get(physical);
      if (name === null || name === undefined || (found !== undefined && found !== name)) return undefined;
      found = name;
    }
    return found;
  }

  /** The namespace a document says it is about, or the one it is in. */
  private contextOf(doc: RawDocument, field: string, context: Context): Context {
    if (!this.tracked) return context;
    const value = doc.get(field);
    const ns = value === undefined ? undefined : stringValue(value);
    return ns === undefined ? context : ns;
  }

  /** A `$lookup` / `$graphLookup` stage's foreign namespace (`from`), where the stage names one. */
  private foreignOf(doc: RawDocument, context: Context): Context {
    if (!this.tracked) return context;
    for (const stage of ['$lookup', '$graphLookup']) {
      const spec = doc.get(stage);
      if (spec === undefined || spec.type !== BsonType.document) continue;
      const from = RawDocument.parse(spec.value).get('from');
      if (from === undefined) return UNKNOWN;
      const coll = stringValue(from);
      if (coll !== undefined) return `${this.db}.${coll}`;
      if (from.type !== BsonType.document) return UNKNOWN;
      const target = RawDocument.parse(from.value);
      const db = target.get('db');
      const named = target.get('coll');
      const dbName = db === undefined ? undefined : stringValue(db);
      const collName = named === undefined ? undefined : stringValue(named);
      return dbName === undefined || collName === undefined ? UNKNOWN : `${dbName}.${collName}`;
    }
    return context;
  }

  /** A document of the reply; `stats`: inside execution figures; `top`: the `executionStats` document itself. */
  document(doc: RawDocument, stats: boolean, context: Context, top = false): RawDocument | undefined {
    let changed = false;
    const out: RawDocument['elements'][number][] = [];
    // A queryPlanner names its namespace; an EQ_LOOKUP's own index is on its foreign collection.
    const inner = this.contextOf(doc, 'namespace', context);
    const indexContext = this.contextOf(doc, 'foreignCollection', inner);
    const foreign = this.foreignOf(doc, inner);
    const indexName = doc.get('indexName');
    const name = indexName === undefined ? undefined : stringValue(indexName);
    const tenancyIndex = (name?.match(TENANCY_INDEX)?.length ?? 0) > 0;
    // The tenant's own index (the whole name is one it owns): its details without the tenant field.
    const ownIndex = tenancyIndex && WHOLE_TENANCY_INDEX.test(name!) && this.nameFor(name!, indexContext) !== undefined;
    for (const element of doc.elements) {
      if (tenancyIndex && INDEX_DETAILS.includes(element.name)) {
        changed = true;
        if (!ownIndex) continue;
        const details = element.type === BsonType.document ? RawDocument.parse(element.value) : undefined;
        if (details === undefined) continue;
        const stripped = details.has(this.own.field) ? details.without(this.own.field) : details;
        out.push({ name: element.name, type: BsonType.document, value: stripped.toValue().value });
        continue;
      }
      const elementContext =
        element.name === 'indexName' ? indexContext : element.name === 'indexesUsed' ? foreign : inner;
      const next = this.element(element.name, element, stats, top, elementContext);
      if (next === null) {
        changed = true;
        continue;
      }
      if (next !== undefined) changed = true;
      const value = next ?? element;
      out.push({ name: element.name, type: value.type, value: value.value });
    }
    return changed ? new RawDocument(out) : undefined;
  }

  /** The new value, null to drop it, undefined when unchanged. */
  private element(
    name: string,
    value: RawValue,
    stats: boolean,
    top: boolean,
    context: Context,
  ): RawValue | null | undefined {
    if (QUERY_ECHO.has(name) || name.startsWith('$')) {
      // The client's query and stage specifications; only tenancy index names inside plan text
      // matter. A foreign stage's may hold the other collection's plan and figures (DocumentDB),
      // about either collection.
      if (name === '$cursor') return this.value(value, false, context);
      if (FOREIGN_STAGES.has(name)) return this.value(value, false, this.tracked ? UNKNOWN : context);
      return undefined;
    }
    // Planner estimates (DocumentDB's `estimatedTotalKeysExamined` in queryPlanner) are sized by
    // the whole collection, other tenants' documents included, at any verbosity.
    if (this.options.withholdFigures && isNumber(value.type) && name.startsWith('estimated')) {
      this.withheld.add(name);
      return null;
    }
    if (stats && isNumber(value.type) && this.options.withholdFigures) {
      if (KEPT_NUMBERS.has(name) || (top && name === 'nReturned')) return undefined;
      this.withheld.add(name);
      return null;
    }
    if (name === 'namespace') {
      const ns = stringValue(value);
      if (ns === undefined) return undefined;
      const parts = splitNs(ns);
      const mapped = parts === undefined ? undefined : this.resolver.toClient(parts.db, parts.coll);
      const client = mapped?.coll === undefined ? REDACTED : `${mapped.db}.${mapped.coll}`;
      return client === ns ? undefined : valueOf(client);
    }
    if (name === 'serverInfo' && value.type === BsonType.document) {
      const info = RawDocument.parse(value.value);
      return info.has('host') || info.has('port') ? info.without('host', 'port').toValue() : undefined;
    }
    if ((name === 'stages' || name === 'pipeline') && value.type === BsonType.array) {
      // aggregate: each stage's figures sit beside its specification (a `$unionWith`'s sub-pipeline too).
      return this.array(value, true, context);
    }
    if (STATS_CONTAINERS.has(name)) {
      if (value.type === BsonType.document)
        return this.document(RawDocument.parse(value.value), true, context, name === 'executionStats')?.toValue();
      if (value.type === BsonType.array) return this.array(value, true, context);
      return undefined;
    }
    return this.value(value, stats, context);
  }

  private value(value: RawValue, stats: boolean, context: Context): RawValue | undefined {
    if (value.type === BsonType.document)
      return this.document(RawDocument.parse(value.value), stats, context)?.toValue();
    if (value.type === BsonType.array) return this.array(value, stats, context);
    const text = stringValue(value);
    if (text === undefined) return undefined;
    const redacted = text.replace(TENANCY_INDEX, (physical) => {
      const own = this.nameFor(physical, context);
      if (own !== undefined) return own;
      this.redactedIndexes++;
      return REDACTED;
    });
    return redacted === text ? undefined : valueOf(redacted);
  }

  private array(value: RawValue, stats: boolean, context: Context): RawValue | undefined {
    let changed = false;
    const items = arrayItems(value).map((item) => {
      const next = this.value(item, stats, context);
      if (next !== undefined) changed = true;
      return next ?? item;
    });
    return changed ? arrayOf(items) : undefined;
  }
}

/**
 * The explain reply as the tenant may see it, or undefined when nothing changed. Errors (ok: 0)
 * are left to the error scrubbing.
 */
export function redactExplain(
  body: Uint8Array,
  options: ExplainRedaction,
  resolver: NamespaceResolver,
  own: OwnIndexNames = { field: '' },
): Uint8Array | undefined {
  const reply = RawDocument.parse(body);
  const ok = reply.get('ok');
  if (ok !== undefined && isNumber(ok.type) && ok.value.every((byte) => byte === 0)) return undefined;
  const redactor = new Redactor(options, resolver, own);
  let next = redactor.document(reply, false, redactor.initial);
  if (redactor.withheld.size > 0) {
    const note = documentOf([
      ['reason', valueOf(WITHHELD_REASON)],
      ['fields', arrayOf([...redactor.withheld].sort().map((name) => valueOf(name)))],
    ]);
    // Before `ok` and the cluster time, as servers put their own fields.
    const base = next ?? reply;
    const at = base.elements.findIndex((element) => element.name === 'ok');
    const elements = [...base.elements];
    elements.splice(at < 0 ? elements.length : at, 0, { name: 'mtpWithheld', type: note.type, value: note.value });
    next = new RawDocument(elements);
  }
  return next?.toBytes();
}
