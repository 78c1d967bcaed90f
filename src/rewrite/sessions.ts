/**
 * Logical sessions and transactions per tenant (catalogue 54-57, G7).
 *
 * The server keys a session by `lsid.id` plus the authenticated user, and every tenant shares
 * the proxy's user, so a client lsid is never forwarded as sent: the upstream id is a UUID
 * derived by HMAC-SHA256(key, tenant ‖ client id). Two tenants sending the same lsid reach two
 * different server sessions (no joining, committing or aborting someone else's transaction, no
 * replaying someone else's retryable write); the same tenant always reaches the same one
 * (retries, and restarts too when the key is configured).
 *
 * Contract with the engine: `mapSession` is applied to EVERY command body exactly once (it maps
 * the top-level `lsid` and strips `$clusterTime`); it is not idempotent for `lsid`, so the
 * handlers below never map the top-level `lsid` themselves. They map the lsid *lists* that
 * endSessions / refreshSessions / killSessions carry, and check the fields of
 * commitTransaction / abortTransaction. killSessions therefore only ever names upstream sessions
 * derived from the tenant's own ids; an empty list, which kills every session of the (shared)
 * backend user, is refused. killAllSessions / killAllSessionsByPattern are refused by the
 * classification table and are not handled here.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { ErrorCodes, ProxyError, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import { arrayItems, arrayOf, documentOf, RawDocument, type RawValue } from '../wire/raw-bson.js';
import { capMaxTimeMS } from '../policy/limits.js';
import { GENERIC_FIELDS as GENERIC_COMMAND_FIELDS } from '../policy/commands.js';
import type { CommandHandler, CommandInput, RewriteNote, RewriteResult } from '../policy/types.js';

const UUID_SUBTYPE = 0x04;
const UUID_BYTES = 16;
/** Domain separation for the HMAC input, so the key can never be confused with another use. */
const DERIVATION_LABEL = Buffer.from('mongo-tenant-proxy lsid v1\0', 'utf8');
/** A configured key shorter than this is refused: it is the only secret between tenants' sessions. */
export const MIN_SESSION_KEY_BYTES = 16;

/**
 * The HMAC key from `isolation.sessionKey`: its UTF-8 bytes, or 32 random bytes when null.
 * With a random key, sessions do not survive a proxy restart (a retried write after a restart
 * reaches a new server session): the caller should log a warning when `sessionKey` is null.
 */
export function sessionKeyFrom(sessionKey: string | null): Buffer {
  if (sessionKey === null) return randomBytes(32);
  const key = Buffer.from(sessionKey, 'utf8');
  if (key.length < MIN_SESSION_KEY_BYTES) {
    throw new ProxyError(ErrorCodes.BadValue, `isolation.sessionKey must be at least ${MIN_SESSION_KEY_BYTES} bytes`);
  }
  return key;
}

/**
 * The upstream session id for a tenant's client session id: the first 16 bytes of
 * HMAC-SHA256(key, label ‖ uint32 length(tenant) ‖ tenant ‖ id), with the RFC 9562 version 8
 * (custom) and variant bits set so it is a well-formed UUID.
 */
export function deriveSessionId(key: Buffer, tenant: string, clientId: Uint8Array): Buffer {
  const tenantBytes = Buffer.from(tenant, 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(tenantBytes.length, 0);
  const digest = createHmac('sha256', key)
    .update(DERIVATION_LABEL)
    .update(length)
    .update(tenantBytes)
    .update(clientId)
    .digest();
  const id = digest.subarray(0, UUID_BYTES);
  id[6] = (id[6]! & 0x0f) | 0x80;
  id[8] = (id[8]! & 0x3f) | 0x80;
  return Buffer.from(id);
}

/** Binary value bytes: int32 length, subtype, payload. */
function binaryValue(subtype: number, payload: Uint8Array): RawValue {
  const value = Buffer.allocUnsafe(5 + payload.length);
  value.writeInt32LE(payload.length, 0);
  value[4] = subtype;
  value.set(payload, 5);
  return { type: BsonType.binary, value };
}

/**
 * Maps one lsid document (`{id: UUID}`) to its upstream form. Anything else is refused: another
 * type, a missing or non-UUID `id`, and any other field (`uid`, `txnNumber`, `txnUUID` are the
 * server's internal session fields: catalogue 54).
 */
export function mapLsidValue(value: RawValue, tenant: string, key: Buffer, where = 'lsid'): RawValue {
  // What drivers send: exactly `{id: <16-byte UUID, subtype 4>}` in its one encoding. Read in
  // place, without parsing the document; anything else takes the checks below (a subset of what
  // they accept: test/unit/rewrite/sessions-fast-path.test.ts).
  const plain = plainLsidId(value);
  if (plain !== undefined) return upstreamLsid(key, tenant, plain);
  return mapLsidValueParsed(value, tenant, key, where);
}

/** `mapLsidValue` without its fast path: the document parsed and checked. Exported for tests. */
export function mapLsidValueParsed(value: RawValue, tenant: string, key: Buffer, where = 'lsid'): RawValue {
  if (value.type !== BsonType.document) {
    throw new PolicyRefusal('lsid.invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
  }
  const lsid = RawDocument.parse(value.value);
  if (lsid.elements.length !== 1 || lsid.elements[0]!.name !== 'id') {
    throw new PolicyRefusal('lsid.fields', `${where} may only contain "id"`);
  }
  const id = lsid.elements[0]!;
  const bytes = Buffer.from(id.value.buffer, id.value.byteOffset, id.value.byteLength);
  if (id.type !== BsonType.binary || bytes.readInt32LE(0) !== UUID_BYTES || bytes[4] !== UUID_SUBTYPE) {
    throw new PolicyRefusal('lsid.invalid', `${where}.id must be a UUID`, ErrorCodes.TypeMismatch);
  }
  return upstreamLsid(key, tenant, bytes.subarray(5, 5 + UUID_BYTES));
}

/** `{id: UUID}` as one encoding has it: length, binary type, "id", length 16, subtype 4, 16 bytes, end. */
const PLAIN_LSID_BYTES = 4 + 1 + 3 + 4 + 1 + UUID_BYTES + 1;
const PLAIN_LSID_PREFIX = [
  PLAIN_LSID_BYTES,
  0,
  0,
  0,
  BsonType.binary,
  0x69,
  0x64,
  0,
  UUID_BYTES,
  0,
  0,
  0,
  UUID_SUBTYPE,
];

/** The 16 id bytes of an lsid value in exactly the plain encoding, else undefined (the full checks decide). */
function plainLsidId(value: RawValue): Buffer | undefined {
  if (value.type !== BsonType.document || value.pieces !== undefined) return undefined;
  const bytes = value.value;
  if (bytes.length !== PLAIN_LSID_BYTES || bytes[PLAIN_LSID_BYTES - 1] !== 0) return undefined;
  for (let i = 0; i < PLAIN_LSID_PREFIX.length; i++) if (bytes[i] !== PLAIN_LSID_PREFIX[i]) return undefined;
  const start = PLAIN_LSID_PREFIX.length;
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, UUID_BYTES);
}

/** Mapped lsids remembered per (tenant, client id), per key: drivers reuse a session for many commands. */
const MAX_CACHED_LSIDS = 10_000;
const lsidCaches = new WeakMap<Buffer, LsidCache>();

/** One key's mapped lsids, least recently used first; `newest`: the key used last (already last). */
interface LsidCache {
  readonly entries: Map<string, RawValue>;
  newest: string | undefined;
}

/** The cache of the key used last: one proxy has one session key, so no WeakMap lookup per command. */
let lastKey: Buffer | undefined;
let lastCache: LsidCache | undefined;

function cacheOf(key: Buffer): LsidCache {
  if (key === lastKey && lastCache !== undefined) return lastCache;
  let cache = lsidCaches.get(key);
  if (cache === undefined) {
    cache = { entries: new Map(), newest: undefined };
    lsidCaches.set(key, cache);
  }
  lastKey = key;
  lastCache = cache;
  return cache;
}

/**
 * The upstream lsid document for a (checked) client UUID: an HMAC per command is the costliest
 * step of a small command, so results are cached, bounded (least recently used out first). The
 * cache key ends with the fixed 16 id bytes, so tenant and id can never run into each other.
 * The returned value is shared: RawValue bytes are never written to.
 */
function upstreamLsid(key: Buffer, tenant: string, clientId: Buffer): RawValue {
  const cache = cacheOf(key);
  const { entries } = cache;
  const cacheKey = tenant + clientId.toString('latin1');
  const cached = entries.get(cacheKey);
  if (cached !== undefined) {
    // Most recently used last (Map iteration order is insertion order): already so when it was
    // the last one used, as for a client connection repeating its session.
    if (cache.newest !== cacheKey) {
      entries.delete(cacheKey);
      entries.set(cacheKey, cached);
      cache.newest = cacheKey;
    }
    return cached;
  }
  const mapped = documentOf([['id', binaryValue(UUID_SUBTYPE, deriveSessionId(key, tenant, clientId))]]);
  if (entries.size >= MAX_CACHED_LSIDS) entries.delete(entries.keys().next().value as string);
  entries.set(cacheKey, mapped);
  cache.newest = cacheKey;
  return mapped;
}

/**
 * The body with its `lsid` mapped for `tenant` (see the module comment) and `$clusterTime`
 * stripped (catalogue 57: the proxy never forwards a cluster time a client could have forged).
 * `txnNumber`, `autocommit` and `startTransaction` are kept as sent. Returns the same instance
 * when there is nothing to change.
 */
export function mapSession(body: RawDocument, tenant: string, key: Buffer): RawDocument {
  let lsidSeen = false;
  let changed = false;
  const elements = [];
  for (const element of body.elements) {
    if (element.name === '$clusterTime') {
      changed = true;
      continue;
    }
    if (element.name === 'lsid') {
      if (lsidSeen) throw new PolicyRefusal('lsid.fields', 'lsid appears more than once');
      lsidSeen = true;
      const mapped = mapLsidValue(element, tenant, key);
      elements.push({ name: 'lsid', type: mapped.type, value: mapped.value });
      changed = true;
      continue;
    }
    elements.push(element);
  }
  return changed ? new RawDocument(elements) : body;
}

/**
 * Fields any of these commands may carry besides their own: the generic arguments every command
 * takes (drivers add read preference, cluster time, write concern, API version, comments); the
 * session ids among them are mapped by the engine, the cluster time dropped.
 */
const GENERIC_FIELDS: ReadonlySet<string> = new Set([...GENERIC_COMMAND_FIELDS, 'maxTimeMS']);

function checkFields(input: CommandInput, allowed: ReadonlySet<string>): void {
  for (const name of input.body.names) {
    if (!allowed.has(name) && !GENERIC_FIELDS.has(name)) {
      throw new PolicyRefusal(
        `${input.name}.field`,
        `field "${name}" is not allowed in ${input.name}`,
        ErrorCodes.Location40415,
      );
    }
  }
  if (input.sequences.size > 0) {
    throw new PolicyRefusal(
      `${input.name}.field`,
      `${input.name} takes no document sequences`,
      ErrorCodes.Location40415,
    );
  }
}

function result(body: RawDocument, notes: RewriteNote[]): RewriteResult {
  return { body, sequences: new Map(), reply: { scrubErrors: true }, notes };
}

/**
 * endSessions / refreshSessions / killSessions: every lsid in the list mapped for the tenant.
 * `otherFields`: what the command may carry besides its list.
 */
function sessionListHandler(key: Buffer, allowEmpty: boolean, otherFields: readonly string[] = []): CommandHandler {
  return (input, context) => {
    checkFields(input, new Set([input.name, ...otherFields]));
    const list = input.body.first!;
    if (list.type !== BsonType.array) {
      throw new PolicyRefusal(
        `${input.name}.invalid`,
        `${input.name} must be an array of sessions`,
        ErrorCodes.TypeMismatch,
      );
    }
    const items = arrayItems(list);
    if (items.length === 0 && !allowEmpty) {
      // killSessions: [] kills every session of the *user*, i.e. of every tenant (catalogue 56).
      throw new PolicyRefusal(
        `${input.name}.all`,
        `${input.name} needs the sessions to act on; an empty list would reach every tenant`,
      );
    }
    const mapped = arrayOf(
      items.map((item, index) => mapLsidValue(item, context.tenant, key, `${input.name}.${index}`)),
    );
    const body = new RawDocument(
      input.body.elements.map((element, index) =>
        index === 0 ? { name: element.name, type: mapped.type, value: mapped.value } : element,
      ),
    );
    return result(body, [{ kind: 'rewrite', rule: 'lsid.map' }]);
  };
}

const TRANSACTION_FIELDS = new Set(['txnNumber', 'autocommit', 'writeConcern', 'recoveryToken', 'maxTimeMS']);

/** commitTransaction / abortTransaction: on admin, with a session and a transaction number. */
function transactionHandler(): CommandHandler {
  return (input, context) => {
    checkFields(input, new Set([input.name, ...TRANSACTION_FIELDS]));
    if (input.db !== 'admin') {
      throw new PolicyRefusal('transaction.admin', `${input.name} runs on the admin database`);
    }
    if (!input.body.has('lsid') || !input.body.has('txnNumber')) {
      throw new PolicyRefusal('transaction.session', `${input.name} needs lsid and txnNumber`, ErrorCodes.BadValue);
    }
    const notes: RewriteNote[] = [];
    const body = capMaxTimeMS(input.body, context.maxTimeMS);
    if (body !== input.body) notes.push({ kind: 'rewrite', rule: 'maxTimeMS.cap' });
    return result(body, notes);
  };
}

/** Handlers by command name, for the engine's table. */
export function createSessionHandlers(
  key: Buffer,
): Readonly<
  Record<'endSessions' | 'refreshSessions' | 'killSessions' | 'commitTransaction' | 'abortTransaction', CommandHandler>
> {
  return {
    // Drivers close their clients with an unacknowledged endSessions: writeConcern {w: 0}.
    endSessions: sessionListHandler(key, true, ['writeConcern']),
    refreshSessions: sessionListHandler(key, true),
    killSessions: sessionListHandler(key, false),
    commitTransaction: transactionHandler(),
    abortTransaction: transactionHandler(),
  };
}
