/**
 * Contracts of the isolation engine (policy + rewrite). They live in policy, the lower of the two
 * layers, because policy implements some of them too (cursor handlers, namespace resolution) and
 * imports only go down. PolicyRefusal is in src/errors.ts. The specification is
 * docs/threat-catalogue.md; item numbers are cited as "catalogue N".
 *
 * Flow for every command of a connection with an established tenant (src/rewrite/engine.ts):
 *   classify (policy/commands.ts) → refuse | answer locally | rewrite with the command's handler
 *   → validate every filter / update / pipeline / document it touches (policy/validate.ts)
 *   → resolve every namespace it names (NamespaceResolver) → produce the bytes to forward
 *   and, when needed, a reply transform (cursor registration, names mapped back, errors scrubbed).
 * Everything the engine does not understand is refused (deny by default).
 * Pure: no sockets, no logging; decisions are reported as `notes` for audit and metrics.
 */
import type { IsolationModel, NamespaceAccess } from '../config/types.js';
import type { Document } from '../wire/bson.js';
import type { CopyJob } from '../wire/copy-job.js';
import type { RawDocument, RawValue } from '../wire/raw-bson.js';

export type Access = 'read' | 'write';

/** A namespace as the client named it and as it is on the server. */
export interface ResolvedNamespace {
  /** Physical names to send upstream. */
  db: string;
  coll: string;
  model: IsolationModel;
  access: NamespaceAccess;
  /** True when documents must carry / be filtered by the tenant field (shared-collection, scoped). */
  tenantFiltered: boolean;
}

/** Maps client namespaces to physical ones and refuses what the tenant may not touch. */
export interface NamespaceResolver {
  /** Throws PolicyRefusal for system / denied namespaces, writes to shared-readonly ones, bad names. */
  resolve(db: string, coll: string, access: Access): ResolvedNamespace;
  /** A database named without a collection (e.g. `aggregate: 1`, listCollections, dropDatabase). */
  resolveDatabase(db: string, access: Access): { db: string; model: IsolationModel };
  /** Physical → client names for replies (cursor `ns`, listCollections names, error messages); undefined when not the tenant's. */
  toClient(db: string, coll?: string): { db: string; coll?: string } | undefined;
}

/** Everything a handler knows about the caller. */
export interface TenantContext {
  tenant: string;
  /** The tenant as a BSON value of the configured type (G8: never null, always scalar). */
  tenantValue: RawValue;
  /** Name of the tenant field in shared collections. */
  field: string;
  namespaces: NamespaceResolver;
  /** Cap for maxTimeMS (also the default when the client sends none). */
  maxTimeMS: number;
  /**
   * Whether the upstream accepts `maxTimeMS` on `distinct` (Upstream.capabilities; FerretDB v1
   * refuses it). false: the cap is not added to distinct. Absent means it does.
   */
  distinctMaxTimeMS?: boolean;
  /**
   * Add `collation: {locale: "simple"}` to tenant-filtered commands that carry no collation, so
   * a collection's default collation never compares the tenant id loosely (catalogue 9). True
   * when the tenant value is a BSON string and the upstream accepts collation (not FerretDB).
   */
  pinSimpleCollation: boolean;
  /**
   * Shared collections get a private database per tenant (isolation.tenancy.virtualDdl): DDL,
   * listings and stats there become virtual operations run by src/tenancy instead of refusals.
   */
  virtualDdl?: boolean;
  /**
   * Index names a hint may use, resolved before the command is decided (the tenancy executor
   * reads the tenant's indexes from the ownership catalogue): `db.coll` + NUL + name → the
   * tenant's key pattern. Only consulted when `virtualDdl`.
   */
  hintKeys?: Map<string, Document>;
  /**
   * For the explain being run: the tenancy indexes of every shared namespace it reads, so the
   * explain reply shows the tenant's own names (every other tenancy index name is redacted).
   * Filled by the tenancy executor before the explain is forwarded.
   */
  explainIndexes?: ExplainIndexes;
  /**
   * Whether the upstream derives an upsert's new document from the equalities inside the tenant
   * `$and` (MongoDB and DocumentDB do; FerretDB v1 does not, and then the proxy adds them:
   * upsert.ts). The engine sets it from the upstream's probed capability (false when the probe
   * could not tell). Absent (contexts built by hand) means it does.
   */
  upsertFieldsFromAnd?: boolean;
  /**
   * `isolation.tenantFieldInReplies: hide`: aggregation pipelines drop the tenant field upstream
   * from what they read of tenant-filtered namespaces, before any stage can move a document
   * (`$group`, `$replaceRoot`, `$lookup`…) where the reply-side removal would not find it
   * (rewrite/pipeline.ts). Absent means show.
   */
  hideTenantField?: boolean;
  /** `host:port` of the client connection (whatsmyuri). */
  clientAddress?: string;
}

/**
 * The tenancy indexes (issue 13) of the shared namespaces an explain reads: the explained
 * collection and every `$lookup` / `$graphLookup` / `$unionWith` target, nested pipelines included.
 */
export interface ExplainIndexes {
  /** The command's physical database (a `$lookup`'s `from` names a collection in it). */
  db: string;
  /** The explained collection's physical namespace (`db.coll`), when it is a shared one. */
  explained?: string;
  /**
   * Physical namespace (`db.coll`) → each tenancy index recorded there (physical name) → the
   * tenant's own name for it, or null when it is not the tenant's (another tenant's: redacted).
   */
  namespaces: Map<string, Map<string, string | null>>;
}

/** A command as parsed from OP_MSG: body plus kind-1 sequences folded in by identifier. */
export interface CommandInput {
  name: string;
  db: string;
  body: RawDocument;
  /** Kind-1 document sequences by identifier (`documents`, `updates`, `deletes`, `ops`, `nsInfo`). */
  sequences: ReadonlyMap<string, readonly Uint8Array[]>;
  /** The request has moreToCome (w:0): there will be no reply to correct or scrub. */
  moreToCome: boolean;
  /**
   * Every document of the body and the sequences passed `validateDocument` with duplicate keys
   * rejected (the request parser's rules): the write handlers' one-pass checks rely on it and
   * take the reference path without it.
   */
  validated?: boolean;
  /**
   * With `validated`: what validation saw (bson-scan's DocumentFact bits) in the body, and in
   * each sequence document by identifier, so a handler need not walk a document again for it.
   */
  facts?: { body: number; sequences: ReadonlyMap<string, Uint8Array> };
  /**
   * Where a handler may put off the copies of a large rewrite (insert's stamped documents and
   * the array they go into, wire/copy-job.ts) instead of making them at once. Whoever passes a
   * job runs it before the rewritten body or sequences are read (the server: in slices, issue
   * 15). Absent: every byte is written before the handler returns.
   */
  copies?: CopyJob | undefined;
}

/** A decision worth auditing and counting. */
export interface RewriteNote {
  kind: 'rewrite' | 'refusal';
  /** e.g. `filter.tenant`, `insert.stamp`, `pipeline.match`, `maxTimeMS.cap`, `lsid.map`. */
  rule: string;
  namespace?: string;
}

/**
 * Where a reply carries documents of a tenant-filtered namespace, so `isolation.tenantFieldInReplies:
 * hide` can take the tenant field out of them (rewrite/tenant-field.ts).
 */
export interface TenantDocuments {
  /** `cursor`: every document of `cursor.firstBatch` / `cursor.nextBatch`; `value`: findAndModify's `value`. */
  in: 'cursor' | 'value';
  /**
   * Dotted paths, in each of those documents, holding joined documents of tenant-filtered
   * namespaces (an array of them, or one after `$unwind`): `$lookup` / `$graphLookup` `as`, `$facet` outputs.
   */
  joined?: readonly string[];
}

/** What to do with the upstream's reply. */
export interface ReplyPlan {
  /**
   * Register cursor ids found in the reply (`cursor.id`) as owned by this tenant, for this
   * namespace; `documents` is remembered with the cursor so its getMore replies are treated alike.
   */
  registerCursor?: { db: string; coll: string; documents?: TenantDocuments };
  /** The reply carries tenant documents here (set by handlers whatever the setting). */
  tenantDocuments?: TenantDocuments;
  /** Set by the engine with `tenantFieldInReplies: hide`: the field removed from `tenantDocuments`. */
  hideTenantField?: string;
  /**
   * An explain reply (rewrite/explain.ts): names and tenancy index names redacted, and with
   * `withholdFigures` the execution figures that count other tenants' documents withheld.
   */
  explain?: { withholdFigures: boolean };
  /** The client session (lsid id, hex) a registered cursor belongs to: endSessions kills it. */
  sessionKey?: string;
  /** Map physical names in the reply back to the client's (database-per-tenant, collection-prefix). */
  mapNames?: boolean;
  /** For listCollections / listIndexes: drop entries the tenant may not see, strip `options`. */
  filterListing?: 'collections' | 'indexes';
  /** Remove values from error messages (duplicate-key, conversion errors: catalogue 60-61). */
  scrubErrors: boolean;
  /**
   * getMore / killCursors: the cursors the forwarded request names (physical namespace), so the
   * registry forgets them when the reply shows them exhausted, killed or gone (policy/cursors.ts
   * observeCursorReply).
   */
  cursorsInRequest?: { command: 'getMore' | 'killCursors'; db: string; coll: string; ids: readonly bigint[] };
  /**
   * killCursors: ids withheld from the request because they are not the tenant's; the reply must
   * list them in `cursorsNotFound` (policy/cursors.ts mergeCursorsNotFound).
   */
  cursorsNotFound?: readonly bigint[];
  /** Forward nothing and answer with this document (e.g. killCursors naming only foreign ids). */
  localReply?: Document;
}

/** One index as a tenant asked for it (validated by the engine; names and keys are the client's). */
export interface VirtualIndexSpec {
  name: string;
  /** The key pattern, in order. */
  key: Document;
  /** Every other option of the specification (unique, sparse, collation, partialFilterExpression…), minus v/background. */
  options: Document;
}

/**
 * Work on a shared collection that one forwarded command cannot do per tenant: answered by the
 * tenancy executor (src/tenancy) from the ownership catalogue and the tenant's own documents.
 * Namespaces are physical (shared collections keep the client's names) and already checked.
 */
export type VirtualOperation =
  | { kind: 'create'; db: string; coll: string }
  | { kind: 'createIndexes'; db: string; coll: string; indexes: VirtualIndexSpec[] }
  | { kind: 'listIndexes'; db: string; coll: string }
  | { kind: 'dropIndexes'; db: string; coll: string; index: string | string[] | Document }
  | { kind: 'drop'; db: string; coll: string }
  | { kind: 'dropDatabase'; db: string }
  | { kind: 'listCollections'; db: string; filter: Document | undefined; nameOnly: boolean }
  | { kind: 'listDatabases'; filter: Document | undefined; nameOnly: boolean }
  | { kind: 'collStats'; db: string; coll: string; scale: number }
  | { kind: 'dbStats'; db: string; scale: number }
  | { kind: 'validate'; db: string; coll: string; full: boolean };

export interface RewriteResult {
  /** The command body to forward (with `$db` possibly mapped). */
  body: RawDocument;
  /** Sequences to forward, by identifier (already rewritten). */
  sequences: ReadonlyMap<string, readonly Uint8Array[]>;
  reply: ReplyPlan;
  notes: RewriteNote[];
  /** Set instead of forwarding `body`: the tenancy executor answers (engine decision `virtual`). */
  virtual?: VirtualOperation;
}

/** A command handler: checks and rewrites one command kind. Throws PolicyRefusal. */
export type CommandHandler = (input: CommandInput, context: TenantContext) => RewriteResult;
