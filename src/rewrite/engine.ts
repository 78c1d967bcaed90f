/**
 * The isolation engine: every command of a connection with an established tenant goes through
 * `TenantEngine.rewrite` before it is forwarded, and every reply through `TenantEngine.reply`.
 *
 *   classify (deny by default) → top-level field allowlist → the command's handler (filters,
 *   stamps, pipelines, namespaces) → session ids mapped per tenant, forged $clusterTime dropped.
 *
 * Handlers throw PolicyRefusal; nothing refused is ever forwarded. In `audit-only` mode the
 * decision is computed and reported but the original command is forwarded unchanged.
 * Pure: no sockets and no logging; decisions come back as notes for the audit log and metrics.
 */
import type { IsolationConfig } from '../config/types.js';
import {
  RawDocument,
  arrayItems,
  childDocument,
  isArray,
  isDocument,
  numberOf,
  stringOf,
  type RawValue,
} from '../wire/raw-bson.js';
import { BsonType } from '../wire/bson-scan.js';
import { ReplyScan } from '../wire/reply-scan.js';
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { assertAllowedFields, classify, refusalFor } from '../policy/commands.js';
import { createNamespaceResolver, templatesInUse, type ReservedTemplates } from '../policy/namespaces.js';
import { CursorRegistry, mergeCursorsNotFound, observeCursorReply, type OrphanedCursor } from '../policy/cursors.js';
import { encodeTenant } from './filter.js';
import { mapSession } from './sessions.js';
import { filterListing, mapReplyNames, scrubErrorValues } from './replies.js';
import { hideTenantField } from './tenant-field.js';
import { redactExplain } from './explain.js';
import { buildHandlers } from './handlers.js';
import { VIRTUAL_STATS, statsCommand } from './ddl.js';
import { emptyAdminRead } from './introspection.js';
import type { UpstreamFacts } from './upstream-facts.js';

export type { UpstreamFacts } from './upstream-facts.js';
import type { HandlerName } from '../policy/commands.js';
import type {
  CommandHandler,
  CommandInput,
  ReplyPlan,
  RewriteNote,
  RewriteResult,
  TenantContext,
  VirtualOperation,
} from '../policy/types.js';

export interface EngineOptions {
  config: IsolationConfig;
  /** Shared by every connection: cursors outlive connections. */
  cursors: CursorRegistry;
  /** HMAC key for per-tenant upstream session ids. */
  sessionKey: Buffer;
  /**
   * Whether the upstream applies `collation` fields (Upstream.capabilities.collation), read for
   * every command (a failover may change it). With a string tenant value the simple collation is
   * then pinned on tenant-filtered commands (catalogue 9).
   */
  collationSupported: () => boolean;
  /**
   * Whether the upstream accepts `maxTimeMS` on `distinct` (Upstream.capabilities.distinctMaxTimeMS),
   * read for every command; where it does not, the cap is not added to distinct. Absent: it does.
   */
  distinctMaxTimeMSSupported?: () => boolean;
  /**
   * Whether the upstream derives an upsert's fields and `_id` from the equalities inside the
   * tenant `$and` (Upstream.capabilities.upsertFieldsFromAnd, probed), read for every command.
   * Where it does not, the rewrite adds them (upsert.ts). Absent: it does not, the value that
   * never loses a field (repeating what a server derived is harmless).
   */
  upsertFieldsFromAnd?: () => boolean;
  /** What is known of the upstream (UpstreamServerInfo fits), read by introspection answers. */
  upstreamFacts?: () => UpstreamFacts;
  /** The clock of introspection answers (serverStatus uptime, hostInfo time); default Date.now. */
  now?: () => number;
  /** The proxy's host name in introspection answers; default os.hostname(). */
  host?: string;
  /**
   * Per-tenant name templates of every policy this engine ran since it started (set by the
   * engine): a reload that stops using database-per-tenant or collection-prefix, or changes a
   * template, leaves those physical names upstream, and no tenant may name them as its own.
   */
  reserved?: ReservedTemplates;
  /** A tenancy executor is wired (src/tenancy): shared-collection DDL may become virtual operations. */
  virtualDdl?: boolean;
  /**
   * Open upstream cursors a tenant may have (read per command, so a reload applies at once); a
   * command that would open one more is refused (rule `limit.cursors`). 0 or absent: no cap.
   */
  maxOpenCursorsPerTenant?: () => number;
  /** Cursors whose client connection left (TenantEngine.close): the caller kills them upstream. */
  onOrphanedCursors?: (tenant: string, cursors: OrphanedCursor[]) => void;
}

/** The outcome of checking one command. */
export type Decision =
  | { action: 'forward'; result: RewriteResult }
  /** audit-only: what enforcement would have done, while the original is forwarded. */
  | { action: 'forward-original'; wouldRefuse?: PolicyRefusal; notes: RewriteNote[] }
  | { action: 'refuse'; refusal: PolicyRefusal }
  /** Shared-collection DDL, listings and stats: answered by the tenancy executor (src/tenancy), not forwarded. */
  | { action: 'virtual'; operation: VirtualOperation; notes: RewriteNote[] };

type HandlerTable = Partial<Record<HandlerName, CommandHandler>>;

/** What a tenant engine knows of its client connection. */
export interface ConnectionFacts {
  /** `host:port` of the client, as the server's whatsmyuri shows it. */
  clientAddress?: string;
}

export class IsolationEngine {
  private readonly handlers: HandlerTable;
  #options: EngineOptions;

  constructor(options: EngineOptions) {
    this.#options = { ...options, reserved: mergeTemplates(options.reserved, templatesInUse(options.config)) };
    const now = options.now ?? Date.now;
    this.handlers = buildHandlers(options.cursors, options.sessionKey, {
      upstream: () => this.#options.upstreamFacts?.() ?? {},
      startedAt: now(),
      now,
      ...(options.host === undefined ? {} : { host: options.host }),
    });
  }

  /** The current options; replaced as a whole by `reconfigure`. */
  get options(): EngineOptions {
    return this.#options;
  }

  get auditOnly(): boolean {
    return this.options.config.mode === 'audit-only';
  }

  /**
   * A reloaded policy (hot reload): new tenant engines use it, and existing ones switch to it
   * before their next command. The cursor registry and the session key stay (cursors and
   * sessions outlive a reload).
   */
  reconfigure(config: IsolationConfig): void {
    this.#options = {
      ...this.#options,
      config,
      reserved: mergeTemplates(this.#options.reserved, templatesInUse(config)),
    };
  }

  /** The engine bound to one connection's tenant; `connection.clientAddress` is what whatsmyuri answers. */
  forTenant(tenant: string, connection: ConnectionFacts = {}): TenantEngine {
    return new TenantEngine(this, this.handlers, tenant, connection);
  }
}

export class TenantEngine {
  #context: TenantContext;
  /** The parent's options the context was built from. */
  private options: EngineOptions;

  constructor(
    private readonly parent: IsolationEngine,
    private readonly handlers: HandlerTable,
    readonly tenant: string,
    private readonly connection: ConnectionFacts = {},
  ) {
    this.options = parent.options;
    this.#context = contextFor(tenant, this.options, connection);
  }

  get context(): TenantContext {
    return this.#context;
  }

  /**
   * Checks and rewrites one command. Never throws for policy reasons: see Decision. A policy
   * reloaded since the last command applies from this one on (a tenant the new settings cannot
   * represent gets the ProxyError thrown here, on every command, until the policy changes back).
   */
  decide(input: CommandInput): Decision {
    if (this.options !== this.parent.options) {
      this.#context = contextFor(this.tenant, this.parent.options, this.connection);
      this.options = this.parent.options;
    }
    let result: RewriteResult;
    try {
      result = this.rewrite(input);
    } catch (error) {
      if (!(error instanceof PolicyRefusal)) throw error;
      if (this.options.config.mode === 'audit-only')
        return { action: 'forward-original', wouldRefuse: error, notes: [] };
      return { action: 'refuse', refusal: error };
    }
    if (this.options.config.mode === 'audit-only') return { action: 'forward-original', notes: result.notes };
    if (result.virtual !== undefined) return { action: 'virtual', operation: result.virtual, notes: result.notes };
    const overCap = this.#overCursorCap(result.reply);
    if (overCap !== undefined) return { action: 'refuse', refusal: overCap };
    if (input.name === 'endSessions') this.#endSessions(input);
    const sessionKey = result.reply.registerCursor === undefined ? undefined : sessionKeyOf(input.body.get('lsid'));
    const hideTenantField =
      this.options.config.tenantFieldInReplies === 'hide' && result.reply.tenantDocuments !== undefined
        ? this.context.field
        : undefined;
    // A new plan object: handlers may share theirs.
    if (sessionKey !== undefined || hideTenantField !== undefined) {
      const reply = { ...result.reply };
      if (sessionKey !== undefined) reply.sessionKey = sessionKey;
      if (hideTenantField !== undefined) reply.hideTenantField = hideTenantField;
      result = { ...result, reply };
    }
    return { action: 'forward', result };
  }

  /**
   * A command that may open a cursor (find, aggregate, list*, bulkWrite: its reply registers one)
   * while the tenant already has maxOpenCursorsPerTenant open is refused before it is sent:
   * cursors hold upstream resources (a connection each on FerretDB), so one tenant must not take
   * them all. OperationFailed (96), like the other per-tenant limits; no retry label, since only
   * closing cursors helps. getMore and killCursors are never refused (they free cursors).
   */
  #overCursorCap(plan: ReplyPlan): PolicyRefusal | undefined {
    if (plan.registerCursor === undefined || plan.cursorsInRequest !== undefined || plan.localReply !== undefined)
      return undefined;
    const cap = this.parent.options.maxOpenCursorsPerTenant?.() ?? 0;
    if (cap <= 0) return undefined;
    const open = this.parent.options.cursors.countFor(this.tenant);
    if (open < cap) return undefined;
    return new PolicyRefusal(
      'limit.cursors',
      `tenant open cursor limit (${cap}) reached: exhaust or close cursors (killCursors) before opening more`,
      ErrorCodes.OperationFailed,
    );
  }

  /** endSessions: the cursors of those sessions are killed upstream (the server reaps them with the session). */
  #endSessions(input: CommandInput): void {
    const list = input.body.first;
    if (list === undefined || !isArray(list)) return;
    const keys = new Set<string>();
    for (const item of arrayItems(list)) {
      const key = isDocument(item) ? sessionKeyOf(item) : undefined;
      if (key !== undefined) keys.add(key);
    }
    if (keys.size === 0) return;
    const orphaned = this.parent.options.cursors.releaseSessions(this.tenant, keys);
    if (orphaned.length > 0) this.parent.options.onOrphanedCursors?.(this.tenant, orphaned);
  }

  /**
   * The client connection left: the cursors it last used are forgotten and handed to
   * `onOrphanedCursors` to be killed upstream. Idempotent.
   */
  close(): void {
    const orphaned = this.parent.options.cursors.releaseOwner(this);
    if (orphaned.length > 0) this.parent.options.onOrphanedCursors?.(this.tenant, orphaned);
  }

  private rewrite(input: CommandInput): RewriteResult {
    const command = classify(input.name);
    // With a private database per tenant, the statistics of shared collections are computed from the tenant's own documents.
    if (command.kind === 'refuse' && this.context.virtualDdl === true && VIRTUAL_STATS.has(input.name))
      return statsCommand(input, this.context);
    if (command.kind === 'refuse') throw refusalFor(input.name, command);
    if (command.kind === 'local') {
      // Answered by the pipeline before the engine is asked; reaching here is a bug upstream of us.
      throw new PolicyRefusal('command.local', `${input.name} is answered by the proxy`);
    }
    const handler = this.handlers[command.handler];
    if (handler === undefined)
      throw new PolicyRefusal('command.unhandled', `${input.name} is not supported by this proxy`);
    assertAllowedFields(command.handler, input.body);
    assertReadPreference(input.body);
    // The tenant's own `admin` database is empty: answered here, nothing forwarded.
    const empty = emptyAdminRead(input);
    if (empty !== undefined) return empty;
    const result = handler(input, this.context);
    // Session ids are per tenant upstream; forged cluster times never travel (catalogue 54, 57).
    const body = mapSession(result.body, this.tenant, this.options.sessionKey);
    return { ...result, body };
  }

  /**
   * Applies a reply plan to one reply body (the upstream's bytes). Returns the bytes to send, or
   * undefined when the reply goes out exactly as the upstream sent it. `scan` is the reply's one
   * scan (wire/reply-scan.ts, the forwarding layer's); without it the body is scanned here.
   */
  reply(plan: ReplyPlan, body: Uint8Array, scan: ReplyScan = new ReplyScan(body)): Uint8Array | undefined {
    observeCursorReply(this.options.cursors, this.tenant, plan, body, plan.sessionKey, this, scan);
    let current: Uint8Array | undefined;
    // The scan's facts hold for `current` while only the tenant field was cut out of it (the
    // top-level elements, the cursor's id and ns, stay as they were).
    let scanned: ReplyScan | undefined = scan;
    if (plan.hideTenantField !== undefined && plan.tenantDocuments !== undefined)
      current = hideTenantField(body, plan.hideTenantField, plan.tenantDocuments);
    if (plan.explain !== undefined) {
      scanned = undefined;
      current =
        redactExplain(current ?? body, plan.explain, this.context.namespaces, {
          indexes: this.context.explainIndexes ?? { db: '', namespaces: new Map() },
          field: this.context.field,
        }) ?? current;
    }
    if (plan.cursorsNotFound !== undefined && plan.cursorsNotFound.length > 0) {
      scanned = undefined;
      current = mergeCursorsNotFound(current ?? body, plan.cursorsNotFound);
    }
    if (plan.filterListing !== undefined) {
      scanned = undefined;
      current = filterListing(current ?? body, plan.filterListing, this.context.namespaces) ?? current;
    }
    if (plan.mapNames === true) {
      const mapped = mapReplyNames(current ?? body, this.context.namespaces, {}, scanned);
      if (mapped !== undefined) {
        scanned = undefined;
        current = mapped;
      }
    }
    if (plan.scrubErrors) {
      // bulkWrite reports per-operation errors inside its result cursor.
      const bulkWriteCursor = plan.registerCursor?.coll === '$cmd.bulkWrite';
      current = scrubErrorValues(current ?? body, { bulkWriteCursor }, scanned) ?? current;
    }
    return current;
  }
}

/** The client's session id (`{id: <binary>}`) as hex, or undefined. */
function sessionKeyOf(lsid: RawValue | undefined): string | undefined {
  if (lsid === undefined || !isDocument(lsid)) return undefined;
  const id = childDocument(lsid).get('id');
  if (id === undefined || id.type !== BsonType.binary) return undefined;
  return Buffer.from(id.value.buffer, id.value.byteOffset, id.value.byteLength).toString('hex');
}

function contextFor(tenant: string, options: EngineOptions, connection: ConnectionFacts): TenantContext {
  const { config } = options;
  const tenantValue = encodeTenant(tenant, config.tenantValueType);
  return {
    tenant,
    tenantValue,
    field: config.tenantField,
    namespaces: createNamespaceResolver(config, tenant, options.reserved),
    maxTimeMS: config.maxTimeMS,
    // Non-string tenant values are immune to collation (G8); only strings need the pin. A getter:
    // the upstream's answer may change with a failover while a connection's engine lives on.
    get pinSimpleCollation() {
      return tenantValue.type === BsonType.string && options.collationSupported();
    },
    get distinctMaxTimeMS() {
      return options.distinctMaxTimeMSSupported?.() ?? true;
    },
    // Virtual operations need the executor; audit-only forwards originals and never runs them.
    virtualDdl: config.tenancy?.virtualDdl === true && options.virtualDdl === true,
    hintKeys: new Map(),
    explainIndexes: { db: '', namespaces: new Map() },
    get upsertFieldsFromAnd() {
      return options.upsertFieldsFromAnd?.() ?? false;
    },
    hideTenantField: config.tenantFieldInReplies === 'hide',
    ...(connection.clientAddress === undefined ? {} : { clientAddress: connection.clientAddress }),
  };
}

/** `earlier` plus the templates of `now` it lacks. */
function mergeTemplates(earlier: ReservedTemplates | undefined, now: ReservedTemplates): ReservedTemplates {
  const union = (a: readonly string[] = [], b: readonly string[]): string[] => [...new Set([...a, ...b])];
  return {
    databaseTemplates: union(earlier?.databaseTemplates, now.databaseTemplates),
    collectionTemplates: union(earlier?.collectionTemplates, now.collectionTemplates),
  };
}

const READ_PREFERENCE_MODES: ReadonlySet<string> = new Set([
  'primary',
  'primaryPreferred',
  'secondary',
  'secondaryPreferred',
  'nearest',
]);
const READ_PREFERENCE_FIELDS: ReadonlySet<string> = new Set(['mode', 'tags', 'maxStalenessSeconds', 'hedge']);

/** `$readPreference` is checked by type and mode (catalogue 53): a document the server would act on. */
function assertReadPreference(body: RawDocument): void {
  const value = body.get('$readPreference');
  if (value === undefined) return;
  const refuse = (why: string): never => {
    throw new PolicyRefusal('field.read-preference', `$readPreference ${why}`, ErrorCodes.BadValue);
  };
  if (!isDocument(value)) refuse('must be a document');
  const preference = RawDocument.parse(value.value);
  for (const element of preference.elements)
    if (!READ_PREFERENCE_FIELDS.has(element.name)) refuse(`has an unknown field "${element.name}"`);
  const mode = preference.get('mode');
  if (mode === undefined || mode.type !== BsonType.string || !READ_PREFERENCE_MODES.has(stringOf(mode)))
    refuse('mode must be one of primary, primaryPreferred, secondary, secondaryPreferred, nearest');
  const tags = preference.get('tags');
  if (tags !== undefined && (!isArray(tags) || arrayItems(tags).some((tag) => !isDocument(tag))))
    refuse('tags must be an array of documents');
  const staleness = preference.get('maxStalenessSeconds');
  if (staleness !== undefined && numberOf(staleness) === undefined) refuse('maxStalenessSeconds must be a number');
  const hedge = preference.get('hedge');
  if (hedge !== undefined && !isDocument(hedge)) refuse('hedge must be a document');
}

/** Parses a body for the engine; exported for tests that build inputs from bytes. */
export function commandInput(
  name: string,
  db: string,
  body: Uint8Array,
  sequences: ReadonlyArray<{ identifier: string; documents: readonly Uint8Array[] }>,
  moreToCome: boolean,
): CommandInput {
  return {
    name,
    db,
    body: RawDocument.parse(body),
    sequences: new Map(sequences.map((sequence) => [sequence.identifier, sequence.documents])),
    moreToCome,
  };
}
