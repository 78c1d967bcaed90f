/**
 * Namespace policy (catalogue 5, 43, 64 and the "Isolation models" of the engine issue): which
 * namespaces a tenant may name, and where they are on the server.
 *
 * Rules (`isolation.namespaces`) are matched in order against the namespace the CLIENT names
 * (`db` glob, `*` = any run without `.`; collection glob, `*` = any run); the first match
 * decides, otherwise `defaultModel` with access `scoped`. Before any rule, and whatever the rules
 * say, these are refused:
 * - databases `admin`, `local`, `config` (in any case) for data access: the engine lets the
 *   handshake, session and transaction commands and the rewritten bulkWrite through on admin
 *   without resolving a namespace (rule `namespace.system`);
 * - collections `system.*` (system.js, system.views, system.profile, system.buckets.*: catalogue
 *   5 and 43; rule `namespace.system`);
 * - the proxy's ownership catalogue database (`isolation.tenancy.catalogueDatabase`, in any case),
 *   as a client name and as a physical name a template would produce (rule `namespace.catalogue`);
 * - names MongoDB would refuse or read differently: empty, NUL, lone surrogates (invalid UTF-8),
 *   `$` in collection names, `/\. "$*<>:|?` in database names, database names over 63 bytes and
 *   namespaces over 255 bytes, a collection that is not a string (rule `namespace.invalid`,
 *   `namespace.too-long`, `namespace.not-string`).
 *
 * Physical names. `shared-collection` and `shared-readonly` namespaces keep the client's names.
 * `database-per-tenant` maps the database with `databaseTemplate`, `collection-prefix` the
 * collection with `collectionTemplate`. `{tenant}` is replaced by the tenant ESCAPED to
 * `[a-z0-9-]` (every other UTF-8 byte, upper-case letters and `-` included, becomes `-xx` in
 * lower-case hex), and the template's character next to `{tenant}` on the side of the client
 * name is never in that alphabet (checked by the configuration and again here). So the escaped
 * tenant is exactly the maximal `[a-z0-9-]` run at its place, the name splits back uniquely and
 * the mapping is injective (catalogue 64: tenant "a" + db "b_c" → `a_b_c`, tenant "a_b" + db
 * "c" → `a-5fb_c`). Because the escaped tenant has no upper-case letter and the separator is no
 * letter, two tenants' names cannot differ only by case either: MongoDB refuses databases whose
 * names differ only by case, and that error would reveal the other tenant's database. One
 * tenant's own databases that differ only by case (`App`, `app`) still collide, as they would on
 * MongoDB itself; the error names only that tenant's database. The tenant `system` is escaped
 * as `-73ystem`, so `{tenant}.{collection}` never makes a `system.` collection; any physical
 * name that is still reserved is refused.
 *
 * Models mixed in one configuration: a name kept as the client wrote it (shared namespaces, and
 * the database of collection-prefix namespaces) that has the shape of a per-tenant physical name
 * is refused (`namespace.reserved`), so no client name can alias another tenant's private
 * database or collection. Database names are compared without regard to case.
 *
 * Database-level commands (`resolveDatabase`) use the first rule whose database glob matches and
 * whose collection glob is `*`. When that rule denies the database but an earlier, collection-
 * specific rule for it does not, the database may be read (listCollections then shows only what
 * `resolve` allows) provided those rules agree on one model.
 */
import type { IsolationConfig, IsolationModel, NamespaceAccess, NamespaceRule } from '../config/types.js';
import { ErrorCodes, ProxyError, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import { stringOf, type RawValue } from '../wire/raw-bson.js';
import type { Access, NamespaceResolver, ResolvedNamespace } from './types.js';

/** Longest database name MongoDB accepts, in bytes. */
export const MAX_DB_NAME_BYTES = 63;
/** Longest `db.collection` namespace MongoDB accepts, in bytes. */
export const MAX_NAMESPACE_BYTES = 255;
/** Databases never reachable for data access. */
export const SYSTEM_DATABASES: readonly string[] = ['admin', 'local', 'config'];

/**
 * Why each system database is refused, in the refusal a tenant reads: `mongodump --oplog` reads
 * `config.transactions` then `local.oplog.rs` (or `oplog.$main`), which span every tenant (issue 14).
 */
const SYSTEM_DATABASE_REASONS: Readonly<Record<string, string>> = {
  admin: 'the admin database (users, roles, server-wide state) is not reachable through the proxy',
  local:
    "the local database is not reachable through the proxy: its oplog (local.oplog.rs) records every tenant's " +
    'writes (mongodump --oplog and oplog tailing are not supported; dump without --oplog)',
  config:
    'the config database is not reachable through the proxy: its sessions and transactions span every tenant ' +
    '(mongodump --oplog reads config.transactions; dump without --oplog)',
};

const DB_NAME_FORBIDDEN = /[/\\. "$*<>:|?\0]/;
const LONE_SURROGATE = /\p{Cs}/u;
const ESCAPED_CHAR = /^[a-z0-9-]$/;
const SEPARATOR_FORBIDDEN = /^[A-Za-z0-9-]$/;

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

// ---------------------------------------------------------------------------------------------
// The tenant in names

/** The tenant as it appears in physical names: `[a-z0-9]` kept, every other UTF-8 byte `-xx`. */
export function escapeTenant(tenant: string): string {
  let out = '';
  for (const byte of Buffer.from(tenant, 'utf8')) {
    const char = String.fromCharCode(byte);
    out +=
      (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39)
        ? char
        : `-${byte.toString(16).padStart(2, '0')}`;
  }
  // `system` + "." would be a system collection with `{tenant}.{collection}`.
  return out === 'system' ? '-73ystem' : out;
}

/** The tenant an escaped form stands for; undefined when it is not the escape of any tenant. */
export function unescapeTenant(escaped: string): string | undefined {
  const bytes: number[] = [];
  for (let i = 0; i < escaped.length; i++) {
    const char = escaped[i]!;
    if (char === '-') {
      const hex = escaped.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) return undefined;
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (ESCAPED_CHAR.test(char)) {
      bytes.push(char.charCodeAt(0));
    } else {
      return undefined;
    }
  }
  const tenant = Buffer.from(bytes).toString('utf8');
  return escapeTenant(tenant) === escaped ? tenant : undefined;
}

/** A physical-name template split around its two placeholders. */
export interface NameTemplate {
  readonly prefix: string;
  readonly middle: string;
  readonly suffix: string;
  /** `{tenant}` comes before the client name. */
  readonly tenantFirst: boolean;
}

/**
 * Splits `template` (`{tenant}` and `{<placeholder>}` exactly once each, no other braces, a
 * separator whose character next to `{tenant}` is not a letter, digit or `-`). Throws
 * ProxyError(BadValue) otherwise; the configuration reports the same problems field by field.
 */
export function parseNameTemplate(template: string, placeholder: 'db' | 'collection'): NameTemplate {
  const other = `{${placeholder}}`;
  const bad = (why: string): never => {
    throw new ProxyError(ErrorCodes.BadValue, `isolation template ${JSON.stringify(template)}: ${why}`);
  };
  if (template.split('{tenant}').length !== 2 || template.split(other).length !== 2) {
    bad(`must contain {tenant} and ${other} exactly once each`);
  }
  const tenantAt = template.indexOf('{tenant}');
  const otherAt = template.indexOf(other);
  const tenantFirst = tenantAt < otherAt;
  const [first, second] = tenantFirst ? [tenantAt, otherAt] : [otherAt, tenantAt];
  const firstLength = tenantFirst ? '{tenant}'.length : other.length;
  const secondLength = tenantFirst ? other.length : '{tenant}'.length;
  const parts = {
    prefix: template.slice(0, first),
    middle: template.slice(first + firstLength, second),
    suffix: template.slice(second + secondLength),
    tenantFirst,
  };
  if (/[{}]/.test(parts.prefix + parts.middle + parts.suffix))
    bad(`may contain no braces other than {tenant} and ${other}`);
  const boundary = tenantFirst ? parts.middle[0] : parts.middle[parts.middle.length - 1];
  if (boundary === undefined || SEPARATOR_FORBIDDEN.test(boundary)) {
    bad(`needs a separator next to {tenant} that is not a letter, a digit or "-"`);
  }
  return parts;
}

/** The physical name of `name` for the escaped tenant. */
export function fillTemplate(template: NameTemplate, escapedTenant: string, name: string): string {
  const [first, second] = template.tenantFirst ? [escapedTenant, name] : [name, escapedTenant];
  return template.prefix + first + template.middle + second + template.suffix;
}

/**
 * The inverse of fillTemplate: the escaped tenant and the client name a physical name was made
 * from, or undefined when it does not have that shape. `ignoreCase` compares the template's
 * literals without regard to case and lets the tenant part hold upper-case letters (to find
 * names MongoDB would consider equal to a per-tenant database).
 */
export function splitPhysicalName(
  template: NameTemplate,
  physical: string,
  ignoreCase = false,
): { escapedTenant: string; name: string } | undefined {
  const fold = (text: string): string => (ignoreCase ? text.toLowerCase() : text);
  const folded = fold(physical);
  const { prefix, middle, suffix } = template;
  if (!folded.startsWith(fold(prefix)) || !folded.endsWith(fold(suffix))) return undefined;
  if (physical.length < prefix.length + middle.length + suffix.length) return undefined;
  const inner = physical.slice(prefix.length, physical.length - suffix.length);
  const run = ignoreCase ? /^[a-zA-Z0-9-]*/ : /^[a-z0-9-]*/;
  const runEnd = ignoreCase ? /[a-zA-Z0-9-]*$/ : /[a-z0-9-]*$/;
  if (template.tenantFirst) {
    const escapedTenant = run.exec(inner)![0];
    const rest = inner.slice(escapedTenant.length);
    if (!fold(rest).startsWith(fold(middle))) return undefined;
    return { escapedTenant, name: rest.slice(middle.length) };
  }
  const escapedTenant = runEnd.exec(inner)![0];
  const rest = inner.slice(0, inner.length - escapedTenant.length);
  if (!fold(rest).endsWith(fold(middle))) return undefined;
  return { escapedTenant, name: rest.slice(0, rest.length - middle.length) };
}

// ---------------------------------------------------------------------------------------------
// Names

/** A collection named by a command field: must be a string (catalogue 17: no UUID, `useUUID`). */
export function collectionNameOf(value: RawValue | undefined, where: string): string {
  if (value === undefined || value.type !== BsonType.string) {
    refuse('namespace.not-string', `${where} must be a collection name (a string)`, ErrorCodes.InvalidNamespace);
  }
  return stringOf(value);
}

/** Splits `db.coll` (bulkWrite nsInfo, renameCollection) at the first dot; refused when there is none. */
export function splitNamespace(namespace: string, where: string): { db: string; coll: string } {
  const dot = namespace.indexOf('.');
  if (dot <= 0 || dot === namespace.length - 1) {
    refuse('namespace.invalid', `${where} must be a "database.collection" namespace`, ErrorCodes.InvalidNamespace);
  }
  return { db: namespace.slice(0, dot), coll: namespace.slice(dot + 1) };
}

function checkDatabaseName(db: unknown, what = 'database name'): asserts db is string {
  if (typeof db !== 'string')
    refuse('namespace.not-string', `the ${what} must be a string`, ErrorCodes.InvalidNamespace);
  if (db.length === 0 || DB_NAME_FORBIDDEN.test(db) || LONE_SURROGATE.test(db)) {
    refuse(
      'namespace.invalid',
      `invalid ${what}: empty, or with one of /\\. "$*<>:|? or NUL`,
      ErrorCodes.InvalidNamespace,
    );
  }
  if (SYSTEM_DATABASES.includes(db.toLowerCase()))
    refuse('namespace.system', SYSTEM_DATABASE_REASONS[db.toLowerCase()]!);
  if (Buffer.byteLength(db) > MAX_DB_NAME_BYTES) {
    refuse('namespace.too-long', `the ${what} is longer than ${MAX_DB_NAME_BYTES} bytes`, ErrorCodes.InvalidNamespace);
  }
}

function checkCollectionName(coll: unknown, what = 'collection name'): asserts coll is string {
  if (typeof coll !== 'string')
    refuse('namespace.not-string', `the ${what} must be a string`, ErrorCodes.InvalidNamespace);
  if (coll.length === 0 || coll.includes('\0') || coll.includes('$') || LONE_SURROGATE.test(coll)) {
    refuse('namespace.invalid', `invalid ${what}: empty, or with "$" or NUL`, ErrorCodes.InvalidNamespace);
  }
  if (coll.startsWith('system.'))
    refuse('namespace.system', 'system collections (system.*) are not reachable through the proxy');
}

function checkNamespaceLength(db: string, coll: string): void {
  if (Buffer.byteLength(db) + 1 + Buffer.byteLength(coll) > MAX_NAMESPACE_BYTES) {
    refuse(
      'namespace.too-long',
      `the namespace is longer than ${MAX_NAMESPACE_BYTES} bytes`,
      ErrorCodes.InvalidNamespace,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Rules

interface CompiledRule {
  db: RegExp;
  coll: RegExp;
  /** The collection glob is `*`: the rule covers the whole database. */
  wholeDatabase: boolean;
  model: IsolationModel;
  access: NamespaceAccess;
}

function globToRegExp(glob: string, star: string): RegExp {
  const body = glob
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join(star);
  return new RegExp(`^${body}$`, 'u');
}

/** Compiles `isolation.namespaces` (a glob without a dot is refused like the configuration does). */
export function compileRules(rules: readonly NamespaceRule[], defaultModel: IsolationModel): CompiledRule[] {
  return rules.map((rule) => {
    const dot = rule.match.indexOf('.');
    if (dot <= 0 || dot === rule.match.length - 1) {
      throw new ProxyError(
        ErrorCodes.BadValue,
        `isolation.namespaces: ${JSON.stringify(rule.match)} is not a "db.collection" glob`,
      );
    }
    const collGlob = rule.match.slice(dot + 1);
    return {
      db: globToRegExp(rule.match.slice(0, dot), '[^.]*'),
      coll: globToRegExp(collGlob, '[^]*'),
      wholeDatabase: collGlob === '*',
      model: rule.model ?? defaultModel,
      access: rule.access ?? 'scoped',
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Database listing (listDatabases, catalogue 24)

/** What listDatabases may show one tenant. */
export interface DatabaseListing {
  /** PCRE pattern matching exactly this tenant's physical databases (database-per-tenant in use). */
  pattern?: string;
  /** Databases named literally (no `*`) by rules, kept as named, that the tenant may read. */
  databases: readonly string[];
}

const listings = new WeakMap<NamespaceResolver, () => DatabaseListing>();

/** The listing of a resolver made by createNamespaceResolver; undefined for any other resolver. */
export function databaseListing(resolver: NamespaceResolver): DatabaseListing | undefined {
  return listings.get(resolver)?.();
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A PCRE pattern matching exactly the physical names `template` gives this escaped tenant. */
export function tenantNamePattern(template: NameTemplate, escapedTenant: string): string {
  const { prefix, middle, suffix, tenantFirst } = template;
  return tenantFirst
    ? `^${escapeRegex(prefix + escapedTenant + middle)}.+${escapeRegex(suffix)}$`
    : `^${escapeRegex(prefix)}.+${escapeRegex(middle + escapedTenant + suffix)}$`;
}

// ---------------------------------------------------------------------------------------------
// The resolver

/** Templates of per-tenant physical names whose shape no client name may have. */
export interface ReservedTemplates {
  databaseTemplates: readonly string[];
  collectionTemplates: readonly string[];
}

/** The per-tenant name templates `config` puts to use (its database-per-tenant and collection-prefix namespaces). */
export function templatesInUse(config: IsolationConfig): ReservedTemplates {
  const models = new Set<IsolationModel>([
    config.defaultModel,
    ...config.namespaces.map((rule) => rule.model ?? config.defaultModel),
  ]);
  return {
    databaseTemplates: models.has('database-per-tenant') ? [config.databaseTemplate] : [],
    collectionTemplates: models.has('collection-prefix') ? [config.collectionTemplate] : [],
  };
}

/**
 * The namespace policy of one tenant. Throws ProxyError(BadValue) for an empty tenant or an
 * invalid template (the configuration refuses those first). `reserved`: templates used earlier
 * (before a hot reload): the physical names they made still exist upstream, so client names of
 * their shape stay refused even where the current policy keeps names as written.
 */
export function createNamespaceResolver(
  config: IsolationConfig,
  tenant: string,
  reserved?: ReservedTemplates,
): NamespaceResolver {
  if (tenant.length === 0 || tenant.includes('\0'))
    throw new ProxyError(ErrorCodes.BadValue, 'the tenant must be a non-empty string without NUL');
  const databaseTemplate = parseNameTemplate(config.databaseTemplate, 'db');
  const collectionTemplate = parseNameTemplate(config.collectionTemplate, 'collection');
  const rules = compileRules(config.namespaces, config.defaultModel);
  const models = new Set<IsolationModel>([config.defaultModel, ...rules.map((rule) => rule.model)]);
  const usesDatabases = models.has('database-per-tenant');
  const usesPrefixes = models.has('collection-prefix');
  const escaped = escapeTenant(tenant);
  const reservedDatabases = [
    ...(usesDatabases ? [databaseTemplate] : []),
    ...(reserved?.databaseTemplates ?? []).map((template) => parseNameTemplate(template, 'db')),
  ];
  const reservedCollections = [
    ...(usesPrefixes ? [collectionTemplate] : []),
    ...(reserved?.collectionTemplates ?? []).map((template) => parseNameTemplate(template, 'collection')),
  ];

  const catalogue = config.tenancy?.catalogueDatabase.toLowerCase();
  /** The ownership catalogue is the proxy's own: no client name and no physical name may reach it. */
  const checkCatalogue = (db: string): void => {
    if (catalogue !== undefined && db.toLowerCase() === catalogue)
      refuse('namespace.catalogue', "the proxy's ownership catalogue database is not reachable through the proxy");
  };

  const ruleFor = (db: string, coll: string): { model: IsolationModel; access: NamespaceAccess } =>
    rules.find((rule) => rule.db.test(db) && rule.coll.test(coll)) ?? { model: config.defaultModel, access: 'scoped' };

  /** Names kept as the client wrote them must not look like another model's per-tenant names. */
  const checkKeptDatabase = (db: string): void => {
    if (reservedDatabases.some((template) => splitPhysicalName(template, db, true) !== undefined)) {
      refuse(
        'namespace.reserved',
        'the database name has the shape of a per-tenant database name (isolation.databaseTemplate)',
      );
    }
  };
  const checkKeptCollection = (coll: string): void => {
    if (reservedCollections.some((template) => splitPhysicalName(template, coll) !== undefined)) {
      refuse(
        'namespace.reserved',
        'the collection name has the shape of a per-tenant collection name (isolation.collectionTemplate)',
      );
    }
  };

  const tenantDatabase = (db: string): string => {
    const physical = fillTemplate(databaseTemplate, escaped, db);
    if (Buffer.byteLength(physical) > MAX_DB_NAME_BYTES) {
      refuse(
        'namespace.too-long',
        `the tenant's database for this name would be longer than ${MAX_DB_NAME_BYTES} bytes; use a shorter database name`,
        ErrorCodes.InvalidNamespace,
      );
    }
    checkDatabaseName(physical, 'physical database name');
    checkCatalogue(physical);
    return physical;
  };

  const resolve = (db: string, coll: string, access: Access): ResolvedNamespace => {
    checkDatabaseName(db);
    checkCatalogue(db);
    checkCollectionName(coll);
    const rule = ruleFor(db, coll);
    if (rule.access === 'denied') refuse('namespace.denied', 'the namespace is denied by isolation.namespaces');
    if (rule.access === 'shared-readonly') {
      if (access === 'write') refuse('namespace.readonly', 'the namespace is shared read-only reference data');
      checkKeptDatabase(db);
      checkKeptCollection(coll);
      checkNamespaceLength(db, coll);
      return { db, coll, model: rule.model, access: rule.access, tenantFiltered: false };
    }
    switch (rule.model) {
      case 'shared-collection':
        checkKeptDatabase(db);
        checkKeptCollection(coll);
        checkNamespaceLength(db, coll);
        return { db, coll, model: rule.model, access: rule.access, tenantFiltered: true };
      case 'database-per-tenant': {
        const physical = tenantDatabase(db);
        checkNamespaceLength(physical, coll);
        return { db: physical, coll, model: rule.model, access: rule.access, tenantFiltered: false };
      }
      case 'collection-prefix': {
        checkKeptDatabase(db);
        const physical = fillTemplate(collectionTemplate, escaped, coll);
        checkCollectionName(physical, 'physical collection name');
        checkNamespaceLength(db, physical);
        return { db, coll: physical, model: rule.model, access: rule.access, tenantFiltered: false };
      }
    }
  };

  const resolveDatabase = (db: string, access: Access): { db: string; model: IsolationModel } => {
    checkDatabaseName(db);
    checkCatalogue(db);
    const candidates = rules.filter((rule) => rule.db.test(db));
    const wideIndex = candidates.findIndex((rule) => rule.wholeDatabase);
    let rule: { model: IsolationModel; access: NamespaceAccess } =
      wideIndex < 0 ? { model: config.defaultModel, access: 'scoped' } : candidates[wideIndex]!;
    if (rule.access === 'denied') {
      const earlier = candidates.slice(0, wideIndex).filter((candidate) => candidate.access !== 'denied');
      const earlierModels = new Set(earlier.map((candidate) => candidate.model));
      if (access === 'write' || earlier.length === 0 || earlierModels.size !== 1) {
        refuse('namespace.denied', 'the database is denied by isolation.namespaces');
      }
      rule = {
        model: earlier[0]!.model,
        access: earlier.every((c) => c.access === 'shared-readonly') ? 'shared-readonly' : 'scoped',
      };
    }
    if (rule.access === 'shared-readonly' && access === 'write')
      refuse('namespace.readonly', 'the database holds shared read-only reference data');
    if (rule.model === 'database-per-tenant' && rule.access === 'scoped')
      return { db: tenantDatabase(db), model: rule.model };
    checkKeptDatabase(db);
    return { db, model: rule.model };
  };

  const attempt = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof PolicyRefusal) return undefined;
      throw error;
    }
  };

  const toClient = (db: string, coll?: string): { db: string; coll?: string } | undefined => {
    if (typeof db !== 'string' || (coll !== undefined && typeof coll !== 'string')) return undefined;
    const candidates: { db: string; coll?: string }[] = [];
    const own = splitPhysicalName(databaseTemplate, db);
    if (own !== undefined && own.escapedTenant === escaped)
      candidates.push(coll === undefined ? { db: own.name } : { db: own.name, coll });
    if (coll !== undefined) {
      const prefixed = splitPhysicalName(collectionTemplate, coll);
      if (prefixed !== undefined && prefixed.escapedTenant === escaped) candidates.push({ db, coll: prefixed.name });
    }
    candidates.push(coll === undefined ? { db } : { db, coll });
    // A candidate is the answer only when resolving it gives back exactly these physical names.
    for (const candidate of candidates) {
      if (candidate.coll === undefined) {
        const forward = attempt(() => resolveDatabase(candidate.db, 'read'));
        if (forward?.db === db) return candidate;
      } else {
        const client = candidate.coll;
        const forward = attempt(() => resolve(candidate.db, client, 'read'));
        if (forward !== undefined && forward.db === db && forward.coll === coll) return candidate;
      }
    }
    return undefined;
  };

  const resolver: NamespaceResolver = { resolve, resolveDatabase, toClient };
  let listing: DatabaseListing | undefined;
  listings.set(resolver, () => {
    if (listing !== undefined) return listing;
    const literal = new Set<string>();
    for (const rule of config.namespaces) {
      const db = rule.match.slice(0, rule.match.indexOf('.'));
      if (db.includes('*') || rule.access === 'denied') continue;
      const shown = attempt(() => resolveDatabase(db, 'read'));
      if (shown?.db === db) literal.add(db);
    }
    listing = {
      ...(usesDatabases ? { pattern: tenantNamePattern(databaseTemplate, escaped) } : {}),
      databases: [...literal],
    };
    return listing;
  });
  return resolver;
}
