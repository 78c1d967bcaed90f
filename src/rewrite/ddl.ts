/**
 * DDL and database listing: create, createIndexes, dropIndexes, drop, dropDatabase, listDatabases,
 * collMod, renameCollection. Catalogue items 22, 23, 24, 43, 59, 61 and 64
 * (docs/threat-catalogue.md).
 *
 * Shared collections (`shared-collection`, access `scoped`) hold every tenant's documents, so DDL
 * there would act on every tenant (catalogue 23). Refused there: drop, dropIndexes, collMod,
 * renameCollection, dropDatabase, and `create` with any option (validator, validation level or
 * action, collation, capped, size, max, timeseries, expireAfterSeconds, clusteredIndex…); a plain
 * `create` is allowed (the first insert would create the collection anyway). `createIndexes` is
 * allowed when EVERY index key pattern starts with the tenant field (so unique indexes are unique
 * per tenant and every index serves tenant-prefixed queries: catalogue 60, 61) and has no
 * `expireAfterSeconds` (a TTL index deletes every tenant's documents) and no
 * `partialFilterExpression` (its literals are shown to every tenant by listIndexes and it cannot
 * be scoped to one tenant). Shared read-only namespaces refuse every write, DDL included.
 *
 * Per-tenant namespaces (`database-per-tenant`, `collection-prefix`) are the tenant's own, so DDL
 * is allowed inside them with physical names substituted and every embedded namespace resolved
 * (renameCollection `to`; a rename across databases or models is refused). Filters inside DDL
 * (validator, partialFilterExpression) are validated like query filters. `dropDatabase` is allowed
 * only for a database-per-tenant database.
 *
 * Everywhere: views (`create` or `collMod` with `viewOn` / `pipeline`) are refused, because the
 * view's pipeline runs before any tenant filter (catalogue 22); `storageEngine`,
 * `indexOptionDefaults` and `encryptedFields` (which creates collections outside the tenant's
 * names) are refused; duplicate fields are refused (G3).
 *
 * listDatabases (catalogue 24, 59): the client's `filter` is refused (it would name client
 * databases the server does not know) and replaced with one that matches only the tenant's own
 * databases (the database template's shape for this tenant) and the databases named literally
 * (without `*`) by non-denied rules of `isolation.namespaces`; `nameOnly: true` is forced, so no
 * sizes (other tenants' activity) are shown. With the default configuration (shared collections,
 * no rules) the answer is an empty list: which databases exist on the shared server is not the
 * tenant's business. The reply's `databases[].name` must be mapped back (`reply.mapNames`).
 */
import type { IsolationModel } from '../config/types.js';
import { ErrorCodes, PolicyRefusal } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import { RawDocument, arrayItems, arrayOf, documentOf, stringOf, valueOf, type RawValue } from '../wire/raw-bson.js';
import { assertNoForbidden, validateCollation, validateFilter } from '../policy/validate.js';
import { collectionNameOf, databaseListing, splitNamespace } from '../policy/namespaces.js';
import { capMaxTimeMS } from '../policy/limits.js';
import { deserialize, type Document } from '../wire/bson.js';
import type {
  CommandHandler,
  CommandInput,
  ResolvedNamespace,
  RewriteNote,
  RewriteResult,
  TenantContext,
  VirtualIndexSpec,
  VirtualOperation,
} from '../policy/types.js';

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

/** Fields of `create` that change how a collection behaves for everyone: refused in shared collections. */
const CREATE_OPTIONS = [
  'capped',
  'size',
  'max',
  'timeseries',
  'expireAfterSeconds',
  'clusteredIndex',
  'changeStreamPreAndPostImages',
  'validator',
  'validationLevel',
  'validationAction',
  'collation',
] as const;

/** Refused on create / collMod in every model. */
const REFUSED_EVERYWHERE: ReadonlyMap<string, { rule: string; reason: string }> = new Map([
  ['viewOn', { rule: 'ddl.view', reason: "views run their pipeline before the tenant's filter (catalogue 22)" }],
  ['pipeline', { rule: 'ddl.view', reason: "views run their pipeline before the tenant's filter (catalogue 22)" }],
  ['storageEngine', { rule: 'ddl.storage-engine', reason: 'storage engine options are not allowed' }],
  ['indexOptionDefaults', { rule: 'ddl.storage-engine', reason: 'storage engine options are not allowed' }],
  [
    'encryptedFields',
    { rule: 'ddl.encrypted-fields', reason: "queryable encryption creates collections outside the tenant's names" },
  ],
]);

/** Fields an index specification may have (createIndexes manual page). */
const INDEX_FIELDS: ReadonlySet<string> = new Set([
  'key',
  'name',
  'unique',
  'sparse',
  'partialFilterExpression',
  'expireAfterSeconds',
  'hidden',
  'collation',
  'weights',
  'default_language',
  'language_override',
  'textIndexVersion',
  '2dsphereIndexVersion',
  'bits',
  'min',
  'max',
  'wildcardProjection',
  'v',
  'background',
]);

class Notes {
  readonly list: RewriteNote[] = [];
  add(rule: string, namespace?: string): void {
    this.list.push(namespace === undefined ? { kind: 'rewrite', rule } : { kind: 'rewrite', rule, namespace });
  }
}

/** G3: a field appearing twice in a document the proxy reads is refused. */
function assertUniqueNames(doc: RawDocument, where: string): void {
  const seen = new Set<string>();
  for (const name of doc.names) {
    if (seen.has(name))
      refuse('field.duplicate', `${where}: field appears more than once (catalogue G3)`, ErrorCodes.BadValue);
    seen.add(name);
  }
}

function isShared(target: ResolvedNamespace): boolean {
  return target.model === 'shared-collection' && target.access === 'scoped';
}

/** The collection a collection-level DDL command names, resolved for writing. */
function commandTarget(input: CommandInput, context: TenantContext): { client: string; target: ResolvedNamespace } {
  const first = input.body.first;
  if (first === undefined) refuse('command.invalid', 'empty command', ErrorCodes.FailedToParse);
  const coll = collectionNameOf(first, `${input.name}`);
  return { client: `${input.db}.${coll}`, target: context.namespaces.resolve(input.db, coll, 'write') };
}

/** Body with physical names (command value and `$db`) and maxTimeMS capped. */
function finish(
  input: CommandInput,
  context: TenantContext,
  body: RawDocument,
  client: string,
  target: ResolvedNamespace,
  notes: Notes,
): RawDocument {
  let out = body.with(input.body.first!.name, valueOf(target.coll)).with('$db', valueOf(target.db));
  if (client !== `${target.db}.${target.coll}`) notes.add('namespace.map', client);
  const capped = capMaxTimeMS(out, context.maxTimeMS);
  if (capped !== out) notes.add('maxTimeMS.cap');
  out = capped;
  return out;
}

function result(
  body: RawDocument,
  target: { model: IsolationModel } | undefined,
  notes: Notes,
  mapNames?: boolean,
): RewriteResult {
  return {
    body,
    sequences: new Map(),
    reply: { scrubErrors: true, mapNames: mapNames ?? (target !== undefined && target.model !== 'shared-collection') },
    notes: notes.list,
  };
}

/** Shared collection with a private database per tenant: the tenancy executor answers (see src/tenancy). */
function isVirtual(target: ResolvedNamespace, context: TenantContext): boolean {
  return context.virtualDdl === true && isShared(target);
}

function virtualResult(
  input: CommandInput,
  operation: VirtualOperation,
  rule: string,
  namespace: string,
): RewriteResult {
  const notes = new Notes();
  notes.add(rule, namespace);
  return {
    body: input.body,
    sequences: new Map(),
    reply: { scrubErrors: true },
    notes: notes.list,
    virtual: operation,
  };
}

/** A raw BSON value as a plain document value (numbers promoted; int64 beyond 2^53 kept as Long). */
function plain(value: RawValue): unknown {
  const holder = documentOf([['v', value]]);
  return (deserialize(holder.value) as Document)['v'];
}

function assertNoSequences(input: CommandInput): void {
  if (input.sequences.size > 0)
    refuse('opmsg.sequence-unexpected', `${input.name} takes no document sequences`, ErrorCodes.Location40433);
}

function checkRefusedEverywhere(input: CommandInput): void {
  assertUniqueNames(input.body, input.name);
  for (const name of input.body.names) {
    const refused = REFUSED_EVERYWHERE.get(name);
    if (refused !== undefined) refuse(refused.rule, `${input.name}: ${name} is not allowed: ${refused.reason}`);
  }
}

function sharedRefusal(input: CommandInput): never {
  refuse(
    'ddl.shared',
    `${input.name} is not allowed on a shared collection: it would act on every tenant's data (catalogue 23)`,
  );
}

// ---------------------------------------------------------------------------------------------
// create (catalogue 22, 23)

/**
 * `idIndex` (mongorestore sends the dumped one): the default `_id` index, which the server builds
 * anyway, so it is checked and not forwarded. Its `ns`, when present, must be the client's
 * namespace, as the server requires. In a tenant's own collection (database-per-tenant,
 * collection-prefix) a `collation` may come with it (a collection with a default collation): then
 * it is forwarded without `ns` (the physical namespace differs). Anything else, and a collation
 * in a shared collection, would change the `_id` index every tenant shares: refused.
 * Returns whether the spec must be forwarded.
 */
function checkIdIndex(value: RawValue, client: string, ownCollection: boolean): boolean {
  let forward = false;
  const where = 'create.idIndex';
  if (value.type !== BsonType.document) refuse('ddl.id-index', `${where} must be a document`, ErrorCodes.TypeMismatch);
  const spec = deserialize(value.value);
  for (const [name, item] of Object.entries(spec)) {
    if (name === 'key') {
      const keys = Object.entries(item as Document);
      const [field, direction] = keys[0] ?? [];
      if (keys.length !== 1 || field !== '_id' || direction !== 1)
        refuse('ddl.id-index', `${where}.key must be {_id: 1}`, ErrorCodes.BadValue);
    } else if (name === 'name') {
      if (item !== '_id_') refuse('ddl.id-index', `${where}.name must be "_id_"`, ErrorCodes.BadValue);
    } else if (name === 'ns') {
      if (item !== client)
        refuse('ddl.id-index', `${where}.ns must match the collection being created`, ErrorCodes.BadValue);
    } else if (name === 'v') {
      if (typeof item !== 'number') refuse('ddl.id-index', `${where}.v must be a number`, ErrorCodes.TypeMismatch);
    } else if (name === 'collation' && ownCollection) {
      validateCollation(RawDocument.parse(value.value).get('collation')!, `${where}.collation`);
      forward = true;
    } else {
      refuse('ddl.id-index', `${where}: only the default _id index is allowed (${JSON.stringify(name)} is not)`);
    }
  }
  if (spec.key === undefined) refuse('ddl.id-index', `${where} must have a key`, ErrorCodes.BadValue);
  return forward;
}

export const create: CommandHandler = (input, context) => {
  assertNoSequences(input);
  checkRefusedEverywhere(input);
  const { client, target } = commandTarget(input, context);
  const notes = new Notes();
  const idIndex = input.body.get('idIndex');
  if (idIndex !== undefined) {
    if (checkIdIndex(idIndex, client, !isShared(target))) {
      input = { ...input, body: input.body.with('idIndex', RawDocument.parse(idIndex.value).without('ns').toValue()) };
    } else {
      input = { ...input, body: input.body.without('idIndex') };
      notes.add('ddl.id-index-default', client);
    }
  }
  if (isShared(target)) {
    const option = CREATE_OPTIONS.find((name) => input.body.has(name));
    if (option !== undefined) {
      refuse(
        'ddl.shared-create-options',
        `create: ${option} is not allowed on a shared collection (it applies to every tenant: catalogue 23); ` +
          'declare the namespace collection-prefix or database-per-tenant in isolation.namespaces to have it per tenant',
      );
    }
  }
  if (isVirtual(target, context)) {
    const comment = input.body.get('comment');
    if (comment !== undefined) assertNoForbidden(comment, 'create.comment');
    return virtualResult(input, { kind: 'create', db: target.db, coll: target.coll }, 'tenancy.create', client);
  }
  const validator = input.body.get('validator');
  if (validator !== undefined) validateFilter(validator, 'create.validator');
  const collation = input.body.get('collation');
  if (collation !== undefined) validateCollation(collation, 'create.collation');
  for (const name of ['timeseries', 'clusteredIndex', 'changeStreamPreAndPostImages'] as const) {
    const value = input.body.get(name);
    if (value !== undefined) assertNoForbidden(value, `create.${name}`);
  }
  return result(finish(input, context, input.body, client, target, notes), target, notes);
};

// ---------------------------------------------------------------------------------------------
// createIndexes (catalogue 23, 60, 61)

function checkIndex(spec: RawValue, index: number, context: TenantContext, shared: boolean): void {
  const where = `createIndexes.indexes.${index}`;
  if (spec.type !== BsonType.document)
    refuse('ddl.index-invalid', `${where} must be a document`, ErrorCodes.TypeMismatch);
  const doc = RawDocument.parse(spec.value);
  assertUniqueNames(doc, where);
  for (const name of doc.names) {
    if (name === 'storageEngine') refuse('ddl.storage-engine', `${where}: storageEngine options are not allowed`);
    if (!INDEX_FIELDS.has(name))
      refuse('ddl.index-unknown-field', `${where}: unknown index option`, ErrorCodes.InvalidOptions);
  }
  const key = doc.get('key');
  if (key === undefined || key.type !== BsonType.document)
    refuse('ddl.index-invalid', `${where}.key must be a document`, ErrorCodes.TypeMismatch);
  const keyDoc = RawDocument.parse(key.value);
  assertUniqueNames(keyDoc, `${where}.key`);
  if (keyDoc.elements.length === 0)
    refuse('ddl.index-invalid', `${where}.key must name at least one field`, ErrorCodes.BadValue);
  assertNoForbidden(key, `${where}.key`);
  for (const name of ['weights', 'wildcardProjection'] as const) {
    const value = doc.get(name);
    if (value !== undefined) assertNoForbidden(value, `${where}.${name}`);
  }
  const collation = doc.get('collation');
  if (collation !== undefined) validateCollation(collation, `${where}.collation`);
  const partial = doc.get('partialFilterExpression');
  if (partial !== undefined) validateFilter(partial, `${where}.partialFilterExpression`);
  if (!shared) return;
  if (keyDoc.first!.name !== context.field) {
    refuse(
      'ddl.index-tenant-prefix',
      `${where}: an index on a shared collection must start with the tenant field (unique indexes would otherwise span tenants: catalogue 23, 61)`,
    );
  }
  if (doc.has('expireAfterSeconds')) {
    refuse(
      'ddl.index-ttl',
      `${where}: TTL indexes are not allowed on a shared collection (they delete every tenant's documents: catalogue 23)`,
    );
  }
  if (partial !== undefined) {
    refuse(
      'ddl.index-partial-filter',
      `${where}: partialFilterExpression is not allowed on a shared collection (every tenant sees it in listIndexes: catalogue 23)`,
    );
  }
}

/**
 * An index spec's `ns` (old servers' listIndexes; mongorestore sets it): it must be the client's
 * namespace, as the server requires, and is removed, since the physical namespace can differ.
 */
function withoutIndexNs(items: RawValue[], client: string): RawValue[] {
  return items.map((spec, index) => {
    if (spec.type !== BsonType.document) return spec;
    const doc = RawDocument.parse(spec.value);
    const ns = doc.get('ns');
    if (ns === undefined) return spec;
    if (ns.type !== BsonType.string || stringOf(ns) !== client)
      refuse(
        'ddl.index-invalid',
        `createIndexes.indexes.${index}.ns must match the collection the index is created on`,
        ErrorCodes.BadValue,
      );
    return doc.without('ns').toValue();
  });
}

export const createIndexes: CommandHandler = (input, context) => {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  const { client, target } = commandTarget(input, context);
  const indexes = input.body.get('indexes');
  if (indexes === undefined || indexes.type !== BsonType.array) {
    refuse('ddl.index-invalid', 'createIndexes.indexes must be an array', ErrorCodes.TypeMismatch);
  }
  const sent = arrayItems(indexes);
  const items = withoutIndexNs(sent, client);
  if (items.length === 0) refuse('ddl.index-invalid', 'createIndexes.indexes must not be empty', ErrorCodes.BadValue);
  if (items.some((item, index) => item !== sent[index]))
    input = { ...input, body: input.body.with('indexes', arrayOf(items)) };
  if (isVirtual(target, context)) {
    // Checked as in a private namespace: the executor scopes every index to the tenant.
    items.forEach((spec, index) => checkIndex(spec, index, context, false));
    const indexes = items.map((spec, index) => virtualIndexSpec(spec, index, context));
    const names = new Set<string>();
    for (const spec of indexes) {
      if (names.has(spec.name))
        refuse('ddl.index-invalid', `createIndexes: index name "${spec.name}" appears twice`, ErrorCodes.BadValue);
      names.add(spec.name);
    }
    return virtualResult(
      input,
      { kind: 'createIndexes', db: target.db, coll: target.coll, indexes },
      'tenancy.createIndexes',
      client,
    );
  }
  items.forEach((spec, index) => checkIndex(spec, index, context, isShared(target)));
  const notes = new Notes();
  return result(finish(input, context, input.body, client, target, notes), target, notes);
};

/** Options a virtual index keeps as the tenant's own (v and background are the server's business). */
const IGNORED_INDEX_FIELDS: ReadonlySet<string> = new Set(['key', 'name', 'v', 'background']);

function virtualIndexSpec(spec: RawValue, index: number, context: TenantContext): VirtualIndexSpec {
  const doc = RawDocument.parse(spec.value);
  const where = `createIndexes.indexes.${index}`;
  const key = RawDocument.parse(doc.get('key')!.value);
  if (key.elements.slice(1).some((element) => element.name === context.field)) {
    // The proxy prefixes the tenant field itself (a key that already starts with it, as the refusal
    // mode required, is kept as it is); elsewhere in the key it would repeat the field.
    refuse(
      'ddl.index-tenant-field',
      `${where}.key may name the tenant field only first: every index is already scoped to your documents`,
      ErrorCodes.BadValue,
    );
  }
  const name = doc.get('name');
  if (name === undefined || name.type !== BsonType.string || stringOf(name).length === 0)
    refuse('ddl.index-invalid', `${where}.name must be a non-empty string`, ErrorCodes.TypeMismatch);
  const options: Document = {};
  for (const element of doc.elements)
    if (!IGNORED_INDEX_FIELDS.has(element.name)) options[element.name] = plain(element);
  const keyDoc: Document = {};
  for (const element of key.elements) keyDoc[element.name] = plain(element);
  return { name: stringOf(name), key: keyDoc, options };
}

// ---------------------------------------------------------------------------------------------
// dropIndexes, drop, collMod (catalogue 23)

export const dropIndexes: CommandHandler = (input, context) => {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  const { client, target } = commandTarget(input, context);
  if (isVirtual(target, context)) {
    const index = input.body.get('index');
    if (index === undefined) refuse('ddl.index-invalid', 'dropIndexes.index is required', ErrorCodes.FailedToParse);
    let which: string | string[] | Document;
    if (index.type === BsonType.string) which = stringOf(index);
    else if (index.type === BsonType.array && arrayItems(index).every((item) => item.type === BsonType.string))
      which = arrayItems(index).map(stringOf);
    else if (index.type === BsonType.document) {
      assertNoForbidden(index, 'dropIndexes.index');
      which = plain(index) as Document;
    } else
      refuse(
        'ddl.index-invalid',
        'dropIndexes.index must be a name, an array of names or a key pattern',
        ErrorCodes.TypeMismatch,
      );
    return virtualResult(
      input,
      { kind: 'dropIndexes', db: target.db, coll: target.coll, index: which },
      'tenancy.dropIndexes',
      client,
    );
  }
  if (isShared(target)) sharedRefusal(input);
  const index = input.body.get('index');
  if (index !== undefined) assertNoForbidden(index, 'dropIndexes.index');
  const notes = new Notes();
  return result(finish(input, context, input.body, client, target, notes), target, notes);
};

export const drop: CommandHandler = (input, context) => {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  const { client, target } = commandTarget(input, context);
  if (isVirtual(target, context))
    return virtualResult(input, { kind: 'drop', db: target.db, coll: target.coll }, 'tenancy.drop', client);
  if (isShared(target)) sharedRefusal(input);
  const notes = new Notes();
  return result(finish(input, context, input.body, client, target, notes), target, notes);
};

export const collMod: CommandHandler = (input, context) => {
  assertNoSequences(input);
  checkRefusedEverywhere(input);
  const { client, target } = commandTarget(input, context);
  if (isShared(target)) sharedRefusal(input);
  const validator = input.body.get('validator');
  if (validator !== undefined) validateFilter(validator, 'collMod.validator');
  const index = input.body.get('index');
  if (index !== undefined) assertNoForbidden(index, 'collMod.index');
  const notes = new Notes();
  return result(finish(input, context, input.body, client, target, notes), target, notes);
};

// ---------------------------------------------------------------------------------------------
// dropDatabase (catalogue 23, 64)

export const dropDatabase: CommandHandler = (input, context) => {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  const resolved = context.namespaces.resolveDatabase(input.db, 'write');
  if (context.virtualDdl === true && resolved.model === 'shared-collection')
    return virtualResult(input, { kind: 'dropDatabase', db: resolved.db }, 'tenancy.dropDatabase', input.db);
  if (resolved.model !== 'database-per-tenant' || resolved.db === input.db) {
    refuse('ddl.drop-database', 'dropDatabase is allowed only on a database-per-tenant database (catalogue 23)');
  }
  const notes = new Notes();
  notes.add('namespace.map', input.db);
  let body = input.body.with('$db', valueOf(resolved.db));
  const capped = capMaxTimeMS(body, context.maxTimeMS);
  if (capped !== body) notes.add('maxTimeMS.cap');
  body = capped;
  return result(body, resolved, notes, true);
};

// ---------------------------------------------------------------------------------------------
// renameCollection (catalogue 23, 64)

function namespaceString(value: RawValue | undefined, where: string): { db: string; coll: string } {
  if (value === undefined || value.type !== BsonType.string) {
    refuse('namespace.not-string', `${where} must be a "database.collection" string`, ErrorCodes.InvalidNamespace);
  }
  return splitNamespace(stringOf(value), where);
}

export const renameCollection: CommandHandler = (input, context) => {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  const commandName = input.body.first!.name;
  const from = namespaceString(input.body.first, 'renameCollection');
  const to = namespaceString(input.body.get('to'), 'renameCollection.to');
  if (from.db !== to.db)
    refuse('ddl.rename-cross-db', 'renameCollection across databases is not allowed (catalogue 23, 64)');
  const source = context.namespaces.resolve(from.db, from.coll, 'write');
  const target = context.namespaces.resolve(to.db, to.coll, 'write');
  if (isShared(source) || isShared(target)) sharedRefusal(input);
  if (source.model !== target.model || source.db !== target.db) {
    refuse('ddl.rename-model', 'renameCollection must stay within one isolation model and one database of the tenant');
  }
  const notes = new Notes();
  notes.add('namespace.map', `${from.db}.${from.coll}`);
  notes.add('namespace.map', `${to.db}.${to.coll}`);
  let body = input.body
    .with(commandName, valueOf(`${source.db}.${source.coll}`))
    .with('to', valueOf(`${target.db}.${target.coll}`));
  const capped = capMaxTimeMS(body, context.maxTimeMS);
  if (capped !== body) notes.add('maxTimeMS.cap');
  body = capped;
  return result(body, source, notes, true);
};

// ---------------------------------------------------------------------------------------------
// listDatabases (catalogue 24, 59, 64)

/**
 * listDatabases: the client's filter refused, replaced by one matching only this tenant's own
 * databases and the rule databases it may read; nameOnly forced (catalogue 24, 59).
 */
export const listDatabases: CommandHandler = (input, context) => {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  if (context.virtualDdl === true) {
    const filter = input.body.get('filter');
    if (filter !== undefined && filter.type !== BsonType.document)
      refuse('filter.not-document', 'listDatabases.filter must be a document', ErrorCodes.TypeMismatch);
    if (filter !== undefined) validateFilter(filter, 'listDatabases.filter');
    const nameOnly = input.body.get('nameOnly');
    return virtualResult(
      input,
      {
        kind: 'listDatabases',
        filter: filter === undefined ? undefined : (plain(filter) as Document),
        nameOnly: nameOnly !== undefined && plain(nameOnly) === true,
      },
      'tenancy.listDatabases',
      'admin',
    );
  }
  if (input.body.has('filter')) {
    refuse(
      'listDatabases.filter',
      'listDatabases: a filter is not supported through the proxy (the listing is already limited to your databases)',
    );
  }
  const listing = databaseListing(context.namespaces);
  if (listing === undefined)
    refuse('listDatabases.unsupported', 'listDatabases is not available for this namespace policy');
  const branches: RawValue[] = [];
  if (listing.pattern !== undefined) {
    branches.push(
      documentOf([
        [
          'name',
          documentOf([
            ['$regex', valueOf(listing.pattern)],
            ['$options', valueOf('s')],
          ]),
        ],
      ]),
    );
  }
  branches.push(documentOf([['name', documentOf([['$in', arrayOf(listing.databases.map((db) => valueOf(db)))]])]]));
  const notes = new Notes();
  notes.add('listDatabases.filter');
  let body = input.body
    .without('authorizedDatabases')
    .with('filter', documentOf([['$or', arrayOf(branches)]]))
    .with('nameOnly', valueOf(true));
  const capped = capMaxTimeMS(body, context.maxTimeMS);
  if (capped !== body) notes.add('maxTimeMS.cap');
  body = capped;
  return result(body, undefined, notes, true);
};

// ---------------------------------------------------------------------------------------------
// collStats, dbStats, validate with a private database per tenant (catalogue 25)

/** Statistics commands computed per tenant for shared collections (isolation.tenancy). */
export const VIRTUAL_STATS: ReadonlySet<string> = new Set(['collStats', 'dbStats', 'validate']);

/** Generic fields drivers add to every command. */
const GENERIC_FIELDS = [
  '$db',
  'lsid',
  '$readPreference',
  '$clusterTime',
  'apiVersion',
  'apiStrict',
  'apiDeprecationErrors',
];
const STATS_FIELDS: Readonly<Record<string, ReadonlySet<string>>> = {
  collStats: new Set(['scale', 'maxTimeMS', 'comment', ...GENERIC_FIELDS]),
  dbStats: new Set(['scale', 'freeStorage', 'maxTimeMS', 'comment', ...GENERIC_FIELDS]),
  validate: new Set(['full', 'background', 'maxTimeMS', 'comment', ...GENERIC_FIELDS]),
};

/**
 * collStats / dbStats / validate on a shared namespace: figures computed from the tenant's own
 * documents by the tenancy executor. Elsewhere (per-tenant namespaces) still refused as before.
 */
export function statsCommand(input: CommandInput, context: TenantContext): RewriteResult {
  assertNoSequences(input);
  assertUniqueNames(input.body, input.name);
  const allowed = STATS_FIELDS[input.name]!;
  for (const name of input.body.names.slice(1))
    if (!allowed.has(name))
      refuse(
        'field.unknown',
        `${input.name}: field "${name}" is not supported through the proxy`,
        ErrorCodes.InvalidOptions,
      );
  const scaleValue = input.body.get('scale');
  const scale = scaleValue === undefined ? 1 : Number(plain(scaleValue));
  if (!Number.isInteger(scale) || scale < 1)
    refuse('stats.scale', `${input.name}: scale must be a positive integer`, ErrorCodes.BadValue);
  const statsRefusal = (): never =>
    refuse('command.stats', `command ${input.name}: statistics include every tenant's data (catalogue 25, 59)`);
  if (input.name === 'dbStats') {
    const resolved = context.namespaces.resolveDatabase(input.db, 'read');
    if (resolved.model !== 'shared-collection') statsRefusal();
    return virtualResult(input, { kind: 'dbStats', db: resolved.db, scale }, 'tenancy.dbStats', input.db);
  }
  const { client, target } = (() => {
    const first = input.body.first!;
    const coll = collectionNameOf(first, input.name);
    return { client: `${input.db}.${coll}`, target: context.namespaces.resolve(input.db, coll, 'read') };
  })();
  if (!isVirtual(target, context)) statsRefusal();
  if (input.name === 'collStats')
    return virtualResult(
      input,
      { kind: 'collStats', db: target.db, coll: target.coll, scale },
      'tenancy.collStats',
      client,
    );
  const full = input.body.get('full');
  return virtualResult(
    input,
    { kind: 'validate', db: target.db, coll: target.coll, full: full !== undefined && plain(full) === true },
    'tenancy.validate',
    client,
  );
}

/** The DDL handlers by command name. */
export const DDL_HANDLERS: Readonly<
  Record<
    | 'create'
    | 'createIndexes'
    | 'dropIndexes'
    | 'drop'
    | 'dropDatabase'
    | 'listDatabases'
    | 'collMod'
    | 'renameCollection',
    CommandHandler
  >
> = {
  create,
  createIndexes,
  dropIndexes,
  drop,
  dropDatabase,
  listDatabases,
  collMod,
  renameCollection,
};
