/**
 * The view check before a read is forwarded (catalogue 22): is a namespace the read names a view
 * an operator created on the server, and if so, does its definition keep the tenant to its own
 * documents (src/policy/views.ts decides)? A read of a view that does not is refused with
 * `view.not-tenant-scoped` (code 13 Unauthorized).
 *
 * The upstream's listCollections is the truth; the cache in front of it is an optimisation
 * (bounded, short TTL, cleared for a database when DDL goes through the proxy), so a plain
 * collection does not cost a round trip per read. The bound this leaves: a view an operator
 * creates (or a collection he replaces by a view) is only seen once the cached answer expires,
 * at most `ttlMS` later, plus a read already past its check (the check and the read are two
 * commands; nothing makes them atomic).
 */
import { ErrorCodes, PolicyRefusal, ProxyError } from '../errors.js';
import type { Document } from '../wire/bson.js';
import { numberOf, type RawDocument } from '../wire/raw-bson.js';
import type { ResolvedNamespace, TenantContext } from '../policy/types.js';
import { readTargets, viewVerdict, type ViewDefinition } from '../policy/views.js';
import { CommandFailed, type CommandRunner } from './runner.js';
import { MAX_TIME_REPLY_GRACE_MS } from '../upstream/retry.js';

export const VIEW_RULE = 'view.not-tenant-scoped';
/** The `comment` of the proxy's own listCollections: it names the question in the server's logs and profiler. */
export const VIEW_CHECK_COMMENT = 'mongo-tenant-proxy: view check (catalogue 22)';
/** MongoDB's own limit on a chain of views. */
const MAX_VIEW_DEPTH = 20;

export interface ViewGuardOptions {
  runner: CommandRunner;
  /** How long an answer (view, collection, absent) is trusted; default 5 s. */
  ttlMS?: number;
  /** Namespaces remembered at most (the oldest is forgotten first); default 10 000. */
  maxEntries?: number;
  now?: () => number;
}

/** What the upstream says a namespace is: a view (its definition), or not (a collection or nothing). */
type Kind = ViewDefinition | null;

/** Who asks, within which time limit (the read's maxTimeMS). */
interface Asking {
  context: TenantContext;
  maxTimeMS: number;
}

interface Entry {
  expires: number;
  kind: Kind;
}

export class ViewGuard {
  private readonly runner: CommandRunner;
  private readonly ttlMS: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** `db` → `coll` → answer; insertion order is the eviction order. */
  private readonly cache = new Map<string, Map<string, Entry>>();
  private size = 0;
  /** Upstream questions (listCollections commands) asked, for tests and diagnostics. */
  lookups = 0;

  constructor(options: ViewGuardOptions) {
    this.runner = options.runner;
    this.ttlMS = options.ttlMS ?? 5000;
    this.maxEntries = Math.max(1, options.maxEntries ?? 10_000);
    this.now = options.now ?? Date.now;
  }

  /**
   * Before a read is forwarded: `body` is the command as it goes upstream (physical names), `db`
   * its physical database. Throws PolicyRefusal when a namespace it reads is a view that does not
   * keep the tenant to its own documents; a ProxyError when the upstream cannot say (fail closed).
   */
  check(db: string, body: RawDocument, context: TenantContext): Promise<void> | undefined {
    let targets: ReturnType<typeof readTargets>;
    try {
      targets = readTargets(body);
      if (targets === undefined || targets.colls.length === 0) return undefined;
      // The common read: every namespace it names is known, unexpired, not to be a view. Nothing
      // to ask or check, so no promise either (the slow path would come to the same answer).
      if (this.knownPlain(db, targets.colls)) return undefined;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.checkTargets(db, body, targets.colls, context);
  }

  /** Every one of `colls` is cached, unexpired, as not a view. */
  private knownPlain(db: string, colls: readonly string[]): boolean {
    const entries = this.cache.get(db);
    if (entries === undefined) return false;
    const now = this.now();
    for (const coll of colls) {
      const entry = entries.get(coll);
      if (entry === undefined || entry.expires <= now || entry.kind !== null) return false;
    }
    return true;
  }

  private async checkTargets(
    db: string,
    body: RawDocument,
    colls: readonly string[],
    context: TenantContext,
  ): Promise<void> {
    // The read's own time limit (the proxy always sets one, catalogue 15) bounds the question too.
    const limit = body.get('maxTimeMS');
    const maxTimeMS = (limit === undefined ? undefined : numberOf(limit)) || context.maxTimeMS;
    const ask: Asking = { context, maxTimeMS };
    const kinds = await this.kinds(db, colls, ask);
    for (const coll of colls) {
      const view = kinds.get(coll);
      if (view) await this.checkView(db, coll, view, ask, 0, clientName(context, db, coll));
    }
  }

  /** DDL went through the proxy: what it knew of `db` may be wrong now. */
  invalidate(db: string): void {
    const entries = this.cache.get(db);
    if (entries === undefined) return;
    this.size -= entries.size;
    this.cache.delete(db);
  }

  /** DDL that names several databases (renameCollection) went through the proxy. */
  invalidateAll(): void {
    this.cache.clear();
    this.size = 0;
  }

  private async checkView(
    db: string,
    coll: string,
    view: ViewDefinition,
    ask: Asking,
    depth: number,
    named: string,
  ): Promise<void> {
    const { context } = ask;
    const refuse = (reason: string): never => {
      throw new PolicyRefusal(
        VIEW_RULE,
        `${named} is a view whose definition does not keep a tenant to its own documents: ${reason} (catalogue 22)`,
        ErrorCodes.Unauthorized,
      );
    };
    if (depth >= MAX_VIEW_DEPTH) refuse('its chain of views is too deep to check');
    const self = ownNamespace(context, db, coll);
    const source = ownNamespace(context, db, view.viewOn);
    if (self === undefined || source === undefined) return refuse('it reads a namespace that is not the tenant’s');
    const verdict = viewVerdict(view, {
      tenantFiltered: self.tenantFiltered || source.tenantFiltered,
      field: context.field,
      tenantValue: context.tenantValue,
    });
    if (!verdict.scoped) return refuse(verdict.reason);
    for (const read of verdict.reads.slice(1)) {
      const joined = ownNamespace(context, db, read);
      if (joined === undefined) return refuse('it joins a namespace that is not the tenant’s');
      // The proxy filters only the client's own pipeline: a join inside a view reads every tenant.
      if (joined.tenantFiltered) return refuse('it joins a collection shared by every tenant');
    }
    const kinds = await this.kinds(db, verdict.reads, ask);
    for (const read of verdict.reads) {
      const inner = kinds.get(read);
      if (inner) await this.checkView(db, read, inner, ask, depth + 1, named);
    }
  }

  /**
   * What each of `colls` in `db` is: from the cache, the rest with one listCollections (on the
   * pool as `tenant`, so the questions count against the tenant's share of it).
   */
  private async kinds(db: string, colls: readonly string[], ask: Asking): Promise<Map<string, Kind>> {
    const now = this.now();
    const known = new Map<string, Kind>();
    const missing: string[] = [];
    const entries = this.cache.get(db);
    for (const coll of colls) {
      const entry = entries?.get(coll);
      if (entry !== undefined && entry.expires > now) known.set(coll, entry.kind);
      else missing.push(coll);
    }
    if (missing.length === 0) return known;
    const found = await this.listViews(db, missing, ask);
    const expires = this.now() + this.ttlMS;
    for (const coll of missing) {
      const kind = found.get(coll) ?? null;
      known.set(coll, kind);
      this.remember(db, coll, { expires, kind });
    }
    return known;
  }

  private async listViews(
    db: string,
    colls: readonly string[],
    { context, maxTimeMS }: Asking,
  ): Promise<Map<string, ViewDefinition>> {
    this.lookups += 1;
    let reply: Document;
    const ask = (): Promise<Document> =>
      this.runner.run(
        db,
        {
          listCollections: 1,
          filter: { name: { $in: [...colls] } },
          cursor: {},
          maxTimeMS,
          comment: VIEW_CHECK_COMMENT,
        },
        // Bounded like a forwarded command: a half-open upstream fails the read, it does not hang it.
        { exact: true, tenant: context.tenant, replyTimeoutMS: maxTimeMS + MAX_TIME_REPLY_GRACE_MS },
      );
    try {
      try {
        reply = await ask();
      } catch (error) {
        // A network failure (not the server's answer, nor a timeout): asked once more, as the proxy retries a read.
        if (error instanceof CommandFailed || (ProxyError.is(error) && error.code === ErrorCodes.NetworkTimeout))
          throw error;
        reply = await ask();
      }
    } catch (error) {
      // Fail closed: without the upstream's answer the read is not forwarded.
      const code = ProxyError.is(error) ? error.code : ErrorCodes.HostUnreachable;
      // The upstream's labels (RetryableError…) stay: a driver retries the read as it would the read itself.
      const labels = ProxyError.is(error) ? error.labels : [];
      throw new ProxyError(
        code,
        `mongo-tenant-proxy could not check whether the namespace is a view (catalogue 22): ${
          error instanceof CommandFailed || ProxyError.is(error) ? error.message : 'upstream unavailable'
        }`,
        { cause: error, labels },
      );
    }
    const views = new Map<string, ViewDefinition>();
    const cursor = reply['cursor'] as Document | undefined;
    for (const entry of (cursor?.['firstBatch'] as Document[] | undefined) ?? []) {
      if (entry['type'] !== 'view' || typeof entry['name'] !== 'string') continue;
      const options = (entry['options'] ?? {}) as Document;
      const pipeline = Array.isArray(options['pipeline']) ? (options['pipeline'] as Document[]) : [];
      views.set(entry['name'], {
        viewOn: typeof options['viewOn'] === 'string' ? options['viewOn'] : '',
        pipeline,
        collation: options['collation'] as Document | undefined,
      });
    }
    return views;
  }

  private remember(db: string, coll: string, entry: Entry): void {
    let entries = this.cache.get(db);
    if (entries === undefined) {
      entries = new Map();
      this.cache.set(db, entries);
    }
    if (entries.delete(coll)) this.size -= 1;
    while (this.size >= this.maxEntries) this.evictOldest();
    entries.set(coll, entry);
    this.size += 1;
  }

  private evictOldest(): void {
    const [db, entries] = this.cache.entries().next().value as [string, Map<string, Entry>];
    const oldest = entries.keys().next().value as string | undefined;
    if (oldest !== undefined) {
      entries.delete(oldest);
      this.size -= 1;
    }
    if (entries.size === 0) this.cache.delete(db);
  }

  /** Cached namespaces (for tests). */
  get cachedEntries(): number {
    return this.size;
  }
}

/**
 * The namespace resolved for the tenant when `db.coll` (physical) is one the tenant may read
 * under some client name; undefined otherwise (another tenant's, denied, a system namespace).
 */
function ownNamespace(context: TenantContext, db: string, coll: string): ResolvedNamespace | undefined {
  if (coll === '') return undefined;
  const client = context.namespaces.toClient(db, coll);
  if (client?.coll === undefined) return undefined;
  try {
    const resolved = context.namespaces.resolve(client.db, client.coll, 'read');
    return resolved.db === db && resolved.coll === coll ? resolved : undefined;
  } catch (error) {
    if (error instanceof PolicyRefusal) return undefined;
    throw error;
  }
}

/** How the client names `db.coll` in messages (never another tenant's physical name). */
function clientName(context: TenantContext, db: string, coll: string): string {
  const client = context.namespaces.toClient(db, coll);
  return client?.coll === undefined ? 'the namespace' : `${client.db}.${client.coll}`;
}
