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
 *   shown: one the tenant owns on the explained collection becomes the tenant's own name for it
 *   (plan stages, SBE plan text, `indexesUsed`), its stage's key pattern, bounds and multikey
 *   paths without the tenant field the proxy put first (what the tenant's listIndexes shows);
 *   any other (another tenant's, a shared one the tenant does not own) becomes `<redacted>`,
 *   and such a stage's key pattern, bounds and multikey paths are dropped.
 * - `namespace` values are physical: mapped back to the client's, or redacted.
 * - `serverInfo.host` / `port` name the upstream: dropped.
 * Everything else (the parsed query with the caller's own tenant predicate, plan shapes,
 * operator-declared and client index names on private data) is forwarded as it is.
 */
import { BsonType } from '../wire/bson-scan.js';
import { arrayItems, arrayOf, documentOf, RawDocument, stringOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import type { NamespaceResolver } from '../policy/types.js';
import { REDACTED } from './replies.js';

export interface ExplainRedaction {
  /** Withhold execution figures (the explained namespace holds other tenants' documents). */
  withholdFigures: boolean;
}

/** The tenant's own tenancy indexes: physical name → its name, and the tenant field they start with. */
export interface OwnIndexNames {
  names: ReadonlyMap<string, string>;
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
const INDEX_DETAILS = ['keyPattern', 'indexBounds', 'multiKeyPaths'];
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

class Redactor {
  readonly withheld = new Set<string>();
  redactedIndexes = 0;

  constructor(
    private readonly options: ExplainRedaction,
    private readonly resolver: NamespaceResolver,
    private readonly own: OwnIndexNames,
  ) {}

  /** A document of the reply; `stats`: inside execution figures; `top`: the `executionStats` document itself. */
  document(doc: RawDocument, stats: boolean, top = false): RawDocument | undefined {
    let changed = false;
    const out: RawDocument['elements'][number][] = [];
    const indexName = doc.get('indexName');
    const name = indexName === undefined ? undefined : stringValue(indexName);
    const tenancyIndex = (name?.match(TENANCY_INDEX)?.length ?? 0) > 0;
    // The tenant's own index (the whole name is one it owns): its details without the tenant field.
    const ownIndex = tenancyIndex && WHOLE_TENANCY_INDEX.test(name!) && this.own.names.has(name!);
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
      const next = this.element(element.name, element, stats, top);
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
  private element(name: string, value: RawValue, stats: boolean, top: boolean): RawValue | null | undefined {
    if (QUERY_ECHO.has(name) || name.startsWith('$')) {
      // The client's query and stage specifications; only tenancy index names inside plan text matter.
      return name === '$cursor' ? this.value(value, false) : undefined;
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
    if (name === 'stages' && value.type === BsonType.array) {
      // aggregate: each stage's figures sit beside its specification.
      return this.array(value, true);
    }
    if (STATS_CONTAINERS.has(name)) {
      if (value.type === BsonType.document)
        return this.document(RawDocument.parse(value.value), true, name === 'executionStats')?.toValue();
      if (value.type === BsonType.array) return this.array(value, true);
      return undefined;
    }
    return this.value(value, stats);
  }

  private value(value: RawValue, stats: boolean): RawValue | undefined {
    if (value.type === BsonType.document) return this.document(RawDocument.parse(value.value), stats)?.toValue();
    if (value.type === BsonType.array) return this.array(value, stats);
    const text = stringValue(value);
    if (text === undefined) return undefined;
    const redacted = text.replace(TENANCY_INDEX, (physical) => {
      const own = this.own.names.get(physical);
      if (own !== undefined) return own;
      this.redactedIndexes++;
      return REDACTED;
    });
    return redacted === text ? undefined : valueOf(redacted);
  }

  private array(value: RawValue, stats: boolean): RawValue | undefined {
    let changed = false;
    const items = arrayItems(value).map((item) => {
      const next = this.value(item, stats);
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
  own: OwnIndexNames = { names: new Map(), field: '' },
): Uint8Array | undefined {
  const reply = RawDocument.parse(body);
  const ok = reply.get('ok');
  if (ok !== undefined && isNumber(ok.type) && ok.value.every((byte) => byte === 0)) return undefined;
  const redactor = new Redactor(options, resolver, own);
  let next = redactor.document(reply, false);
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
