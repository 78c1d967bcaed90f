/**
 * Cursor ownership (catalogue 20, G7). The server ties a cursor to the user that created it,
 * and every tenant shares the proxy's user, so the proxy remembers which tenant each cursor id
 * belongs to and lets getMore / killCursors reach only the tenant's own.
 *
 * ONE registry per proxy, shared by all connections: a cursor outlives the connection that
 * opened it (drivers continue cursors on any pooled connection) and pooled upstream connections
 * carry every tenant. Entries are keyed by (cursor id, physical namespace), because ids are only
 * unique per server and collide across shards. Foreign and unknown ids get the same answer
 * (CursorNotFound, rule `cursor.foreign`), so a probe learns nothing about other tenants' ids.
 */
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { Long, type Document } from '../wire/bson.js';
import {
  BsonType,
  findElement,
  readInt64,
  readString,
  subDocument,
  elements as scanElements,
} from '../wire/bson-scan.js';
import { arrayItems, arrayOf, numberOf, RawDocument, stringOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import { ReplyScan } from '../wire/reply-scan.js';
import { capMaxTimeMS } from './limits.js';
import type { CommandHandler, CommandInput, ReplyPlan, RewriteNote, TenantContext, TenantDocuments } from './types.js';

/** The server's default cursorTimeoutMillis: idle cursors die after 10 minutes. */
export const DEFAULT_CURSOR_IDLE_MS = 10 * 60 * 1000;
export const DEFAULT_MAX_CURSORS = 100_000;
export const DEFAULT_MAX_CURSORS_PER_TENANT = 10_000;

export interface CursorRegistryOptions {
  /** Entries idle longer than this are dropped (default: the server's 10 minutes). */
  idleTimeoutMS?: number;
  /** Most entries kept; beyond, the least recently used is evicted. */
  maxEntries?: number;
  /** Most entries per tenant, so one tenant cannot evict everyone else's cursors. */
  maxPerTenant?: number;
  /** Clock (tests). */
  now?: () => number;
}

interface CursorEntry {
  readonly key: string;
  readonly tenant: string;
  readonly lsidKey: string | undefined;
  /** Where its batches carry tenant documents (the opening command's plan), for getMore's plan. */
  readonly documents: TenantDocuments | undefined;
  readonly id: bigint;
  readonly db: string;
  readonly coll: string;
  /** The client connection that last used it (opened it or ran a getMore): its leaving kills the cursor. */
  owner: object | undefined;
  lastUsed: number;
}

/** A cursor to kill upstream (its owner left). */
export interface OrphanedCursor {
  id: bigint;
  db: string;
  coll: string;
}

function keyOf(id: bigint, db: string, coll: string): string {
  // `\0` cannot appear in names (refused on input), so the key is unambiguous.
  return `${id}\0${db}\0${coll}`;
}

export class CursorRegistry {
  readonly idleTimeoutMS: number;
  readonly maxEntries: number;
  readonly maxPerTenant: number;
  private readonly now: () => number;
  /** Insertion order is least-recently-used order: a touched entry is moved to the end. */
  private readonly entries = new Map<string, CursorEntry>();
  /** Keys per tenant, in the same LRU order. */
  private readonly byTenant = new Map<string, Set<string>>();

  constructor(options: CursorRegistryOptions = {}) {
    this.idleTimeoutMS = options.idleTimeoutMS ?? DEFAULT_CURSOR_IDLE_MS;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_CURSORS;
    this.maxPerTenant = options.maxPerTenant ?? DEFAULT_MAX_CURSORS_PER_TENANT;
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Open cursors of `tenant` (idle-expired ones are dropped first). */
  countFor(tenant: string): number {
    this.sweep();
    return this.byTenant.get(tenant)?.size ?? 0;
  }

  /**
   * Records a cursor the server returned to `tenant` (physical namespace). Id 0 is no cursor.
   * `owner` is the client connection it was returned to (see releaseOwner); `documents` where its
   * batches carry tenant documents.
   */
  register(
    tenant: string,
    id: bigint,
    db: string,
    coll: string,
    lsidKey?: string,
    owner?: object,
    documents?: TenantDocuments,
  ): void {
    if (id === 0n) return;
    this.sweep();
    const key = keyOf(id, db, coll);
    this.remove(key);
    const tenantKeys = this.byTenant.get(tenant) ?? new Set<string>();
    this.byTenant.set(tenant, tenantKeys);
    while (tenantKeys.size >= this.maxPerTenant) this.remove(tenantKeys.values().next().value!);
    while (this.entries.size >= this.maxEntries) this.remove(this.entries.keys().next().value!);
    this.entries.set(key, { key, tenant, lsidKey, id, db, coll, owner, documents, lastUsed: this.now() });
    tenantKeys.add(key);
  }

  /** True when the cursor exists, is `tenant`'s and has not expired; refreshes its idle time. */
  owns(tenant: string, id: bigint, db: string, coll: string): boolean {
    this.sweep();
    const key = keyOf(id, db, coll);
    const entry = this.entries.get(key);
    if (entry === undefined || entry.tenant !== tenant) return false;
    entry.lastUsed = this.now();
    this.entries.delete(key);
    this.entries.set(key, entry);
    const tenantKeys = this.byTenant.get(tenant)!;
    tenantKeys.delete(key);
    tenantKeys.add(key);
    return true;
  }

  /** The session key recorded with an owned cursor, if any. */
  lsidOf(id: bigint, db: string, coll: string): string | undefined {
    return this.entries.get(keyOf(id, db, coll))?.lsidKey;
  }

  /** Where an owned cursor's batches carry tenant documents, if they do. */
  documentsOf(id: bigint, db: string, coll: string): TenantDocuments | undefined {
    return this.entries.get(keyOf(id, db, coll))?.documents;
  }

  forget(id: bigint, db: string, coll: string): void {
    this.remove(keyOf(id, db, coll));
  }

  /** A getMore continued the cursor on `owner`'s connection: it now goes with that connection. */
  adopt(id: bigint, db: string, coll: string, owner: object): void {
    const entry = this.entries.get(keyOf(id, db, coll));
    if (entry !== undefined) entry.owner = owner;
  }

  /** `tenant` ended these sessions (lsid id keys): their cursors are forgotten and returned, to be killed. */
  releaseSessions(tenant: string, lsidKeys: ReadonlySet<string>): OrphanedCursor[] {
    const released: OrphanedCursor[] = [];
    for (const key of [...(this.byTenant.get(tenant) ?? [])]) {
      const entry = this.entries.get(key);
      if (entry?.lsidKey === undefined || !lsidKeys.has(entry.lsidKey)) continue;
      this.remove(key);
      released.push({ id: entry.id, db: entry.db, coll: entry.coll });
    }
    return released;
  }

  /**
   * The client connection `owner` left: its cursors are forgotten and returned, to be killed
   * upstream (nobody else may continue them, and they would hold server resources until the
   * idle timeout). A cursor a driver continued on another of its connections went with that one.
   */
  releaseOwner(owner: object): OrphanedCursor[] {
    const released: OrphanedCursor[] = [];
    for (const entry of [...this.entries.values()]) {
      if (entry.owner !== owner) continue;
      this.remove(entry.key);
      released.push({ id: entry.id, db: entry.db, coll: entry.coll });
    }
    return released;
  }

  /** Drops entries idle longer than the timeout; returns how many. */
  sweep(): number {
    const oldest = this.now() - this.idleTimeoutMS;
    let dropped = 0;
    for (const entry of this.entries.values()) {
      if (entry.lastUsed > oldest) break; // LRU order: the rest are newer
      this.remove(entry.key);
      dropped++;
    }
    return dropped;
  }

  clear(): void {
    this.entries.clear();
    this.byTenant.clear();
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    const tenantKeys = this.byTenant.get(entry.tenant);
    tenantKeys?.delete(key);
    if (tenantKeys?.size === 0) this.byTenant.delete(entry.tenant);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading cursor replies

/** `{id, ns}` of the reply's `cursor` (find, aggregate, list*, bulkWrite, getMore…), decoding nothing else. */
export function cursorIdOf(replyBody: Uint8Array): { id: bigint; ns: string } | undefined {
  const cursor = findElement(replyBody, 'cursor');
  if (cursor === null || cursor.type !== BsonType.document) return undefined;
  const doc = subDocument(replyBody, cursor);
  const id = findElement(doc, 'id');
  const ns = findElement(doc, 'ns');
  if (id === null || id.type !== BsonType.int64 || ns === null || ns.type !== BsonType.string) return undefined;
  return { id: readInt64(doc, id), ns: readString(doc, ns) };
}

/** Splits a physical `db.coll` at its first dot (database names cannot contain one). */
export function splitNamespace(ns: string): { db: string; coll: string } | undefined {
  const dot = ns.indexOf('.');
  if (dot <= 0 || dot === ns.length - 1) return undefined;
  return { db: ns.slice(0, dot), coll: ns.slice(dot + 1) };
}

function errorCodeOf(replyBody: Uint8Array): number | undefined {
  const ok = findElement(replyBody, 'ok');
  if (ok === null) return undefined;
  const okValue = numberOf({ type: ok.type, value: replyBody.subarray(ok.offset, ok.offset + ok.length) });
  if (okValue !== 0) return undefined;
  const code = findElement(replyBody, 'code');
  if (code === null) return -1;
  return numberOf({ type: code.type, value: replyBody.subarray(code.offset, code.offset + code.length) }) ?? -1;
}

function int64List(doc: Uint8Array, name: string): bigint[] {
  const element = findElement(doc, name);
  if (element === null || element.type !== BsonType.array) return [];
  const array = subDocument(doc, element);
  return scanElements(array)
    .filter((item) => item.type === BsonType.int64)
    .map((item) => readInt64(array, item));
}

const CURSOR_GONE_CODES: ReadonlySet<number> = new Set([
  ErrorCodes.CursorNotFound,
  237 /* CursorKilled */,
  175 /* QueryPlanKilled */,
]);

/**
 * Keeps the registry in step with one upstream reply, per the command's ReplyPlan:
 * - a reply with a live cursor registers it for `tenant` (namespace from `cursor.ns`, else the plan's);
 * - getMore: an exhausted cursor (id 0) or a CursorNotFound/CursorKilled error forgets it;
 * - killCursors: ids the server killed or did not find are forgotten.
 * `scan` is the reply's one scan (wire/reply-scan.ts) when the caller has it; else the body is scanned here.
 */
export function observeCursorReply(
  registry: CursorRegistry,
  tenant: string,
  plan: ReplyPlan,
  replyBody: Uint8Array,
  lsidKey?: string,
  owner?: object,
  scan: ReplyScan = new ReplyScan(replyBody),
): void {
  const request = plan.cursorsInRequest;
  if (request?.command === 'killCursors') {
    if (scan.errorCode() !== undefined) return;
    for (const id of [
      ...int64List(replyBody, 'cursorsKilled'),
      ...int64List(replyBody, 'cursorsNotFound'),
      ...int64List(replyBody, 'cursorsUnknown'),
    ]) {
      registry.forget(id, request.db, request.coll);
    }
    return;
  }
  const code = scan.errorCode();
  if (code !== undefined) {
    if (request !== undefined && CURSOR_GONE_CODES.has(code))
      request.ids.forEach((id) => registry.forget(id, request.db, request.coll));
    return;
  }
  const found = scan.cursor();
  if (found === undefined) return;
  if (request !== undefined) {
    if (found.id === 0n) request.ids.forEach((id) => registry.forget(id, request.db, request.coll));
    else if (owner !== undefined) request.ids.forEach((id) => registry.adopt(id, request.db, request.coll, owner));
    return; // a live getMore cursor keeps its id; owns() already refreshed it
  }
  if (plan.registerCursor === undefined || found.id === 0n) return;
  const ns = splitNamespace(found.ns) ?? plan.registerCursor;
  registry.register(tenant, found.id, ns.db, ns.coll, lsidKey, owner, plan.registerCursor.documents);
}

// ---------------------------------------------------------------------------------------------
// Handlers

/** Fields a getMore may carry; the session fields are mapped by the engine (rewrite/sessions.ts). */
const GETMORE_FIELDS = new Set([
  'getMore',
  'collection',
  'batchSize',
  'maxTimeMS',
  'comment',
  '$db',
  'lsid',
  'txnNumber',
  'autocommit',
  '$clusterTime',
  '$readPreference',
  'apiVersion',
  'apiStrict',
  'apiDeprecationErrors',
]);
const KILLCURSORS_FIELDS = new Set([
  'killCursors',
  'cursors',
  'maxTimeMS',
  'comment',
  '$db',
  'lsid',
  'txnNumber',
  'autocommit',
  '$clusterTime',
  '$readPreference',
  'apiVersion',
  'apiStrict',
  'apiDeprecationErrors',
]);

function checkFields(input: CommandInput, allowed: ReadonlySet<string>): void {
  for (const name of input.body.names) {
    if (!allowed.has(name))
      throw new PolicyRefusal(
        `${input.name}.field`,
        `field "${name}" is not allowed in ${input.name}`,
        ErrorCodes.Location40415,
      );
  }
  if (input.sequences.size > 0)
    throw new PolicyRefusal(
      `${input.name}.field`,
      `${input.name} takes no document sequences`,
      ErrorCodes.Location40415,
    );
}

/**
 * The physical namespace a getMore / killCursors names. Cursors of database-level commands
 * (`$cmd.listCollections`, `$cmd.aggregate`) live on the tenant's physical database; bulkWrite
 * cursors on `admin.$cmd.bulkWrite`. Ownership is what protects them, checked by the caller.
 */
function cursorNamespace(
  input: CommandInput,
  coll: string,
  context: TenantContext,
): { db: string; coll: string; client: string } {
  const client = `${input.db}.${coll}`;
  if (input.db === 'admin' && coll === '$cmd.bulkWrite') return { db: 'admin', coll, client };
  if (coll.startsWith('$cmd.')) return { db: context.namespaces.resolveDatabase(input.db, 'read').db, coll, client };
  const resolved = context.namespaces.resolve(input.db, coll, 'read');
  return { db: resolved.db, coll: resolved.coll, client };
}

function collectionName(input: CommandInput, field: string): string {
  const element = input.body.get(field);
  if (element === undefined || element.type !== BsonType.string) {
    throw new PolicyRefusal(`${input.name}.invalid`, `${field} must be a collection name`, ErrorCodes.TypeMismatch);
  }
  return stringOf(element);
}

function cursorId(value: RawValue, where: string): bigint {
  if (value.type !== BsonType.int64)
    throw new PolicyRefusal(`${where}.invalid`, 'cursor ids are int64', ErrorCodes.TypeMismatch);
  return Buffer.from(value.value.buffer, value.value.byteOffset, value.value.byteLength).readBigInt64LE(0);
}

/** The body naming the physical collection and database (`$db` mapped). */
function physical(
  input: CommandInput,
  ns: { db: string; coll: string },
  field: string,
  clientColl: string,
): RawDocument {
  let body = input.body;
  if (ns.coll !== clientColl) body = body.with(field, valueOf(ns.coll));
  if (ns.db !== input.db) body = body.with('$db', valueOf(ns.db));
  return body;
}

function foreign(id: bigint): PolicyRefusal {
  // Same rule and message whether the id is another tenant's or nobody's: no existence oracle.
  return new PolicyRefusal('cursor.foreign', `cursor id ${id} not found`, ErrorCodes.CursorNotFound);
}

export function getMoreHandler(registry: CursorRegistry): CommandHandler {
  return (input, context) => {
    checkFields(input, GETMORE_FIELDS);
    const id = cursorId(input.body.first!, 'getMore');
    const collection = collectionName(input, 'collection');
    const ns = cursorNamespace(input, collection, context);
    if (!registry.owns(context.tenant, id, ns.db, ns.coll)) throw foreign(id);
    const notes: RewriteNote[] = [];
    let body = physical(input, ns, 'collection', collection);
    const capped = capMaxTimeMS(body, context.maxTimeMS, { whenMissing: 'leave' });
    if (capped !== body) notes.push({ kind: 'rewrite', rule: 'maxTimeMS.cap', namespace: ns.client });
    body = capped;
    const documents = registry.documentsOf(id, ns.db, ns.coll);
    return {
      body,
      sequences: new Map(),
      reply: {
        registerCursor: { db: ns.db, coll: ns.coll, ...(documents === undefined ? {} : { documents }) },
        ...(documents === undefined ? {} : { tenantDocuments: documents }),
        cursorsInRequest: { command: 'getMore', db: ns.db, coll: ns.coll, ids: [id] },
        mapNames: true,
        scrubErrors: true,
      },
      notes,
    };
  };
}

export function killCursorsHandler(registry: CursorRegistry): CommandHandler {
  return (input, context) => {
    checkFields(input, KILLCURSORS_FIELDS);
    const collection = collectionName(input, 'killCursors');
    const ns = cursorNamespace(input, collection, context);
    const list = input.body.get('cursors');
    if (list === undefined || list.type !== BsonType.array) {
      throw new PolicyRefusal('killCursors.invalid', 'cursors must be an array of cursor ids', ErrorCodes.TypeMismatch);
    }
    const own: RawValue[] = [];
    const ownIds: bigint[] = [];
    const foreignIds: bigint[] = [];
    for (const item of arrayItems(list)) {
      const id = cursorId(item, 'killCursors');
      if (registry.owns(context.tenant, id, ns.db, ns.coll)) {
        own.push(item);
        ownIds.push(id);
      } else {
        foreignIds.push(id);
      }
    }
    const notes: RewriteNote[] =
      foreignIds.length > 0 ? [{ kind: 'refusal', rule: 'cursor.foreign', namespace: ns.client }] : [];
    let body = physical(input, ns, 'killCursors', collection);
    if (foreignIds.length > 0) body = body.with('cursors', arrayOf(own));
    const reply: ReplyPlan = {
      cursorsInRequest: { command: 'killCursors', db: ns.db, coll: ns.coll, ids: ownIds },
      scrubErrors: true,
    };
    if (foreignIds.length > 0) reply.cursorsNotFound = foreignIds;
    if (ownIds.length === 0) reply.localReply = killCursorsReply([], foreignIds);
    return { body, sequences: new Map(), reply, notes };
  };
}

/** The server's killCursors reply shape. */
export function killCursorsReply(killed: readonly bigint[], notFound: readonly bigint[]): Document {
  const longs = (ids: readonly bigint[]): Long[] => ids.map((id) => Long.fromBigInt(id));
  return {
    cursorsKilled: longs(killed),
    cursorsNotFound: longs(notFound),
    cursorsAlive: [],
    cursorsUnknown: [],
    ok: 1,
  };
}

/**
 * Adds ids the proxy withheld to a forwarded killCursors reply's `cursorsNotFound` (ReplyPlan
 * `cursorsNotFound`). Returns the body unchanged when there is nothing to add or it is an error.
 */
export function mergeCursorsNotFound(replyBody: Uint8Array, ids: readonly bigint[]): Uint8Array {
  if (ids.length === 0 || errorCodeOf(replyBody) !== undefined) return replyBody;
  const reply = RawDocument.parse(replyBody);
  const existing = reply.get('cursorsNotFound');
  const items = existing !== undefined && existing.type === BsonType.array ? arrayItems(existing) : [];
  const merged = arrayOf([...items, ...ids.map((id) => valueOf(Long.fromBigInt(id)))]);
  return reply.with('cursorsNotFound', merged).toBytes();
}

/** Both handlers, for the engine's table. */
export function createCursorHandlers(
  registry: CursorRegistry,
): Readonly<Record<'getMore' | 'killCursors', CommandHandler>> {
  return { getMore: getMoreHandler(registry), killCursors: killCursorsHandler(registry) };
}
