/**
 * The credentials file of method `scram` (identity.scram.credentialsFile): the users the proxy
 * verifies itself, each mapped to one tenant. It holds what a MongoDB server keeps in
 * `admin.system.users` (salt, iteration count, StoredKey, ServerKey per mechanism), never a
 * password:
 *
 *   users:
 *     - user: orders-service
 *       db: admin                 # the authSource clients use; default admin
 *       tenant: acme
 *       mechanisms:
 *         SCRAM-SHA-256: { iterationCount: 15000, salt: <base64>, storedKey: <base64>, serverKey: <base64> }
 *         SCRAM-SHA-1:   { iterationCount: 10000, salt: <base64>, storedKey: <base64>, serverKey: <base64> }
 *
 * `mongo-tenant-proxy hash-password` prints entries (`hashPassword` + `formatCredentialEntry`).
 * The file is validated strictly (unknown and duplicate keys, duplicate users are errors) and
 * re-read when it changes on disk; a file that fails to load leaves the previous users in force.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, stringify, type Node } from 'yaml';
import type { ScramMechanism } from '../config/types.js';
import { ConfigError, CredentialsFileError } from '../errors.js';
import {
  SCRAM_MIN_ITERATIONS,
  decodeBase64Strict,
  deriveKeys,
  hashLength,
  hashOf,
  hi,
  loadSaslprep,
  mongoPasswordDigest,
} from '../protocol/scram-crypto.js';
import { watchFiles, type FileWatch } from './file-watch.js';

/** Every mechanism a credentials entry may hold, in the order entries are written. */
export const SCRAM_MECHANISMS: readonly ScramMechanism[] = ['SCRAM-SHA-256', 'SCRAM-SHA-1'];

/** What the MongoDB server uses when it creates a user (scramIterationCount, scramSHA256IterationCount). */
export const DEFAULT_ITERATIONS: Readonly<Record<ScramMechanism, number>> = {
  'SCRAM-SHA-256': 15_000,
  'SCRAM-SHA-1': 10_000,
};

/** The authentication database when an entry names none. */
export const DEFAULT_AUTH_DB = 'admin';

/** The configuration field that names the file, for start-up errors. */
export const CREDENTIALS_FILE_FIELD = 'identity.scram.credentialsFile';

/** One mechanism's stored credentials (RFC 5802 §3: enough to verify, not to authenticate). */
export interface ScramStoredCredentials {
  iterationCount: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export interface CredentialEntry {
  /** The user name exactly as clients send it (never SASLprep'd, as MongoDB does). */
  user: string;
  /** The authentication database (`authSource`). */
  db: string;
  tenant: string;
  /** At least one mechanism. */
  mechanisms: Partial<Record<ScramMechanism, ScramStoredCredentials>>;
}

/** The salt length MongoDB uses: the digest length minus 4 (16 bytes for SHA-1, 28 for SHA-256). */
export function saltLengthOf(mechanism: ScramMechanism): number {
  return hashLength(hashOf(mechanism)) - 4;
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation

const ENTRY_KEYS: ReadonlySet<string> = new Set(['user', 'db', 'tenant', 'mechanisms']);
const STORED_KEYS: ReadonlySet<string> = new Set(['iterationCount', 'salt', 'storedKey', 'serverKey']);
/** Characters MongoDB refuses in database names. */
const INVALID_DB_CHARS = /[/\\. "$\0]/;
const MAX_NAME_LENGTH = 1024;
/** Far above any real count; bounds the work a typo could cause a client (and the proxy) per attempt. */
const MAX_ITERATIONS = 10_000_000;

/** The first line of a yaml error, never the source excerpt (which could show keys). */
function firstLine(message: string): string {
  return (message.split('\n', 1)[0] ?? message).replace(/:\s*$/, '');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a mapping' : typeof value;
}

function checkName(value: unknown, where: string): string {
  if (typeof value !== 'string') throw new CredentialsFileError(`${where}: must be a string (got ${describe(value)})`);
  if (value.length === 0) throw new CredentialsFileError(`${where}: must not be empty`);
  if (value.length > MAX_NAME_LENGTH)
    throw new CredentialsFileError(`${where}: is longer than ${MAX_NAME_LENGTH} characters`);
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw new CredentialsFileError(`${where}: must not contain control characters`);
  return value;
}

function checkKeys(value: Record<string, unknown>, allowed: ReadonlySet<string>, where: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) {
      throw new CredentialsFileError(`${where}: unknown field "${key}" (expected ${[...allowed].join(', ')})`);
    }
  }
}

function checkBase64(value: unknown, where: string, length?: number): Buffer {
  if (typeof value !== 'string')
    throw new CredentialsFileError(`${where}: must be a base64 string (got ${describe(value)})`);
  const bytes = decodeBase64Strict(value);
  if (bytes === null || bytes.length === 0) throw new CredentialsFileError(`${where}: is not valid base64`);
  if (length !== undefined && bytes.length !== length) {
    throw new CredentialsFileError(`${where}: must be ${length} bytes (got ${bytes.length})`);
  }
  return bytes;
}

function parseStored(value: unknown, mechanism: ScramMechanism, where: string): ScramStoredCredentials {
  if (!isPlainObject(value)) throw new CredentialsFileError(`${where}: must be a mapping (got ${describe(value)})`);
  checkKeys(value, STORED_KEYS, where);
  for (const key of STORED_KEYS) {
    if (value[key] === undefined) throw new CredentialsFileError(`${where}.${key}: is required`);
  }
  const count = value.iterationCount;
  if (typeof count !== 'number' || !Number.isInteger(count)) {
    throw new CredentialsFileError(`${where}.iterationCount: must be an integer (got ${describe(count)})`);
  }
  if (count < SCRAM_MIN_ITERATIONS || count > MAX_ITERATIONS) {
    throw new CredentialsFileError(
      `${where}.iterationCount: must be between ${SCRAM_MIN_ITERATIONS} and ${MAX_ITERATIONS} (got ${count}); drivers refuse fewer than ${SCRAM_MIN_ITERATIONS}`,
    );
  }
  const keyLength = hashLength(hashOf(mechanism));
  return {
    iterationCount: count,
    salt: checkBase64(value.salt, `${where}.salt`),
    storedKey: checkBase64(value.storedKey, `${where}.storedKey`, keyLength),
    serverKey: checkBase64(value.serverKey, `${where}.serverKey`, keyLength),
  };
}

function parseEntry(value: unknown, index: number): CredentialEntry {
  const where = `users[${index}]`;
  if (!isPlainObject(value)) throw new CredentialsFileError(`${where}: must be a mapping (got ${describe(value)})`);
  checkKeys(value, ENTRY_KEYS, where);
  const user = checkName(value.user, `${where}.user`);
  const db = value.db === undefined ? DEFAULT_AUTH_DB : checkName(value.db, `${where}.db`);
  if (INVALID_DB_CHARS.test(db)) {
    throw new CredentialsFileError(`${where}.db: "${db}" is not a valid database name (no / \\ . space " $)`);
  }
  const tenant = checkName(value.tenant, `${where}.tenant`);
  const mechanisms = value.mechanisms;
  if (!isPlainObject(mechanisms)) {
    throw new CredentialsFileError(
      `${where}.mechanisms: must be a mapping of ${SCRAM_MECHANISMS.join(' / ')} (got ${describe(mechanisms)})`,
    );
  }
  checkKeys(mechanisms, new Set(SCRAM_MECHANISMS), `${where}.mechanisms`);
  const parsed: Partial<Record<ScramMechanism, ScramStoredCredentials>> = {};
  for (const mechanism of SCRAM_MECHANISMS) {
    if (mechanisms[mechanism] !== undefined) {
      parsed[mechanism] = parseStored(mechanisms[mechanism], mechanism, `${where}.mechanisms.${mechanism}`);
    }
  }
  if (Object.keys(parsed).length === 0)
    throw new CredentialsFileError(`${where}.mechanisms: needs at least one mechanism`);
  return { user, db, tenant, mechanisms: parsed };
}

/**
 * Parses and validates the text of a credentials file (`origin` names it in messages).
 * Throws CredentialsFileError naming the entry index and field.
 */
export function parseCredentials(text: string, origin: string): CredentialEntry[] {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, version: '1.2' });
  const syntaxError = doc.errors[0];
  if (syntaxError !== undefined) {
    const pos = lineCounter.linePos(syntaxError.pos[0]);
    const what =
      syntaxError.code === 'DUPLICATE_KEY' ? 'duplicate key' : `invalid YAML: ${firstLine(syntaxError.message)}`;
    throw new CredentialsFileError(`${origin}:${pos.line}:${pos.col}: ${what}`);
  }
  // Keys must be plain strings: `? [a]: b` or `1: x` would otherwise be stringified silently.
  const checkMapKeys = (node: unknown): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        const key = pair.key as Node | null;
        if (!isScalar(key) || typeof key.value !== 'string') {
          const line = key?.range ? lineCounter.linePos(key.range[0]).line : undefined;
          throw new CredentialsFileError(`${origin}${line === undefined ? '' : `:${line}`}: keys must be plain names`);
        }
        if (key.value === '__proto__') throw new CredentialsFileError(`${origin}: unknown field "__proto__"`);
        checkMapKeys(pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) checkMapKeys(item);
    }
  };
  checkMapKeys(doc.contents);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new CredentialsFileError(
      `${origin}: invalid YAML: ${firstLine(error instanceof Error ? error.message : String(error))}`,
    );
  }
  // An empty file is refused rather than read as "no users": a half-written replacement would
  // otherwise lock everyone out. `users: []` says so on purpose.
  if (!isPlainObject(data)) {
    throw new CredentialsFileError(
      `${origin}: must be a mapping with a "users" list (got ${data === undefined || data === null ? 'an empty file' : describe(data)})`,
    );
  }
  try {
    checkKeys(data, new Set(['users']), 'top level');
    if (!Array.isArray(data.users)) {
      throw new CredentialsFileError(
        `users: must be a list (got ${data.users === undefined ? 'nothing' : describe(data.users)})`,
      );
    }
    const entries = data.users.map((value, index) => parseEntry(value, index));
    const seen = new Map<string, number>();
    entries.forEach((entry, index) => {
      const key = lookupKey(entry.db, entry.user);
      const first = seen.get(key);
      if (first !== undefined) {
        throw new CredentialsFileError(
          `users[${index}]: duplicate user "${entry.user}" in db "${entry.db}" (first in users[${first}])`,
        );
      }
      seen.set(key, index);
    });
    return entries;
  } catch (error) {
    if (error instanceof CredentialsFileError) throw new CredentialsFileError(`${origin}: ${error.message}`);
    throw error;
  }
}

/** Reads and validates a credentials file. Throws CredentialsFileError. */
export function loadCredentialsFile(file: string): CredentialEntry[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    const reason =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'it is a directory'
            : String(code ?? error);
    throw new CredentialsFileError(`${file}: cannot read credentials file: ${reason}`);
  }
  return parseCredentials(text, file);
}

function lookupKey(db: string, user: string): string {
  return `${db}\0${user}`;
}

// ---------------------------------------------------------------------------------------------
// The hot-reloaded store

export interface CredentialLookup {
  /** The entry for this user in this authentication database, or undefined. */
  lookup(db: string, user: string): CredentialEntry | undefined;
}

export interface CredentialStore extends CredentialLookup {
  /** Stops watching the file. */
  close(): void;
}

export interface CredentialStoreOptions {
  /** How often the file is checked for changes (identity.reloadIntervalMS). */
  reloadIntervalMS: number;
  logger?: Logger;
  /** After every reload attempt: `ok` false means the previous users stay in force. */
  onReload?(ok: boolean, error?: Error): void;
}

/** An in-memory lookup over entries (tests, and the store's current state). */
export function credentialLookup(entries: readonly CredentialEntry[]): CredentialLookup {
  const map = new Map(entries.map((entry) => [lookupKey(entry.db, entry.user), entry]));
  return { lookup: (db, user) => map.get(lookupKey(db, user)) };
}

/**
 * Loads the credentials file and re-reads it whenever it changes on disk. A file that fails to
 * load at start throws ConfigError naming identity.scram.credentialsFile; later, a broken file is
 * reported (logger, onReload) and the users loaded before stay in force.
 */
export function createCredentialStore(file: string, options: CredentialStoreOptions): CredentialStore {
  let current: CredentialLookup;
  try {
    current = credentialLookup(loadCredentialsFile(file));
  } catch (error) {
    throw new ConfigError(CREDENTIALS_FILE_FIELD, error instanceof Error ? error.message : String(error));
  }
  const { logger, onReload } = options;
  const reload = (): void => {
    let entries: CredentialEntry[];
    try {
      entries = loadCredentialsFile(file);
    } catch (error) {
      const err = error instanceof Error ? error : new Error(String(error));
      logger?.error({ file, reason: err.message }, 'credentials file not reloaded; the previous users stay in force');
      onReload?.(false, err);
      return;
    }
    current = credentialLookup(entries);
    logger?.info({ file, users: entries.length }, 'credentials file reloaded');
    onReload?.(true);
  };
  const watch: FileWatch = watchFiles([file], options.reloadIntervalMS, reload);
  return {
    lookup: (db, user) => current.lookup(db, user),
    close: () => watch.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// Creating entries

export interface HashPasswordInput {
  user: string;
  /** Default admin. */
  db?: string;
  tenant: string;
  password: string;
  /** Default ['SCRAM-SHA-256']. */
  mechanisms?: readonly ScramMechanism[];
  /** One count for every mechanism; default 15000 for SCRAM-SHA-256 and 10000 for SCRAM-SHA-1. */
  iterations?: number;
  /** Test hook: fixed salts instead of random ones. */
  salts?: Partial<Record<ScramMechanism, Buffer>>;
}

/**
 * The stored credentials for a password, computed as a MongoDB server does in createUser:
 * SCRAM-SHA-256 over the SASLprep'd password, SCRAM-SHA-1 over HEX(MD5(user:mongo:password)).
 * Throws a plain Error (never quoting the password) for bad input.
 */
export function hashPassword(input: HashPasswordInput): CredentialEntry {
  const user = checkName(input.user, 'user');
  const db = checkName(input.db ?? DEFAULT_AUTH_DB, 'db');
  if (INVALID_DB_CHARS.test(db)) throw new CredentialsFileError(`db: "${db}" is not a valid database name`);
  const tenant = checkName(input.tenant, 'tenant');
  if (typeof input.password !== 'string' || input.password.length === 0) {
    throw new CredentialsFileError('password: must not be empty');
  }
  const mechanisms: ScramMechanism[] = [...new Set<ScramMechanism>(input.mechanisms ?? ['SCRAM-SHA-256'])];
  if (mechanisms.length === 0) throw new CredentialsFileError('mechanisms: needs at least one mechanism');
  for (const mechanism of mechanisms) {
    if (!SCRAM_MECHANISMS.includes(mechanism))
      throw new CredentialsFileError(`mechanisms: unknown mechanism "${mechanism}"`);
  }
  const iterations = input.iterations;
  if (
    iterations !== undefined &&
    (!Number.isInteger(iterations) || iterations < SCRAM_MIN_ITERATIONS || iterations > MAX_ITERATIONS)
  ) {
    throw new CredentialsFileError(
      `iterations: must be an integer between ${SCRAM_MIN_ITERATIONS} and ${MAX_ITERATIONS}`,
    );
  }
  const stored: Partial<Record<ScramMechanism, ScramStoredCredentials>> = {};
  for (const mechanism of SCRAM_MECHANISMS) {
    if (!mechanisms.includes(mechanism)) continue;
    const hash = hashOf(mechanism);
    let normalized: string;
    if (mechanism === 'SCRAM-SHA-1') {
      normalized = mongoPasswordDigest(user, input.password);
    } else {
      const saslprep = loadSaslprep();
      try {
        normalized = saslprep(input.password);
      } catch {
        throw new CredentialsFileError('password: contains characters SASLprep prohibits (e.g. control characters)');
      }
      if (normalized.length === 0) throw new CredentialsFileError('password: is empty after SASLprep');
    }
    const salt = input.salts?.[mechanism] ?? randomBytes(saltLengthOf(mechanism));
    const iterationCount = iterations ?? DEFAULT_ITERATIONS[mechanism];
    const keys = deriveKeys(hash, hi(hash, normalized, salt, iterationCount));
    stored[mechanism] = { iterationCount, salt, storedKey: keys.storedKey, serverKey: keys.serverKey };
  }
  return { user, db, tenant, mechanisms: stored };
}

/** The entry as the file stores it (base64 strings). */
export function credentialEntryToYamlObject(entry: CredentialEntry): Record<string, unknown> {
  const mechanisms: Record<string, unknown> = {};
  for (const mechanism of SCRAM_MECHANISMS) {
    const stored = entry.mechanisms[mechanism];
    if (stored === undefined) continue;
    mechanisms[mechanism] = {
      iterationCount: stored.iterationCount,
      salt: stored.salt.toString('base64'),
      storedKey: stored.storedKey.toString('base64'),
      serverKey: stored.serverKey.toString('base64'),
    };
  }
  return { user: entry.user, db: entry.db, tenant: entry.tenant, mechanisms };
}

/**
 * One list item, indented to go under `users:` as `yaml` writes it (`users:` then `  - user: …`):
 * appending it to such a file (`>>`) adds the user.
 */
export function formatCredentialEntry(entry: CredentialEntry): string {
  const text = stringify([credentialEntryToYamlObject(entry)], { lineWidth: 0 });
  return text
    .split('\n')
    .map((line) => (line === '' ? line : `  ${line}`))
    .join('\n');
}

/** A whole credentials file holding `entries`. */
export function formatCredentialsFile(entries: readonly CredentialEntry[]): string {
  return stringify({ users: entries.map(credentialEntryToYamlObject) }, { lineWidth: 0 });
}
