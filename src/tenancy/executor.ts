/**
 * The tenancy executor: runs the virtual operations the isolation engine decides for shared
 * collections (catalogue 23-26, 59-61 and issue 13), each with several upstream commands, and
 * answers with the reply a server would give the tenant for its own private database.
 *
 * - createIndexes / dropIndexes / listIndexes: the tenant's indexes under its own names, mapped
 *   to shared reference-counted or per-tenant physical indexes (./indexes.ts), recorded in the
 *   ownership catalogue (./catalogue.ts); operator-declared indexes are shown to every tenant and
 *   a matching createIndexes is a no-op; a per-tenant budget and a reserve of physical slots.
 * - drop / dropDatabase: the tenant's documents deleted in batches, then its indexes and
 *   catalogue entries; other tenants' documents and indexes are untouched.
 * - listCollections / listDatabases: what the tenant created or holds documents in.
 *
 * Errors are MongoDB-shaped (the server's codes for the analogous case) and name the rule.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import { calculateObjectSize, deserialize, type Document } from '../wire/bson.js';
import { RawDocument, arrayItems, documentOf, stringOf, type RawValue } from '../wire/raw-bson.js';
import { BsonType } from '../wire/bson-scan.js';
import type { TenancyConfig } from '../config/types.js';
import { databaseListing } from '../policy/namespaces.js';
import { PolicyRefusal } from '../errors.js';
import type {
  ExplainIndexes,
  NamespaceResolver,
  ResolvedNamespace,
  TenantContext,
  VirtualIndexSpec,
  VirtualOperation,
} from '../policy/types.js';
import {
  Catalogue,
  SlotStore,
  physicalSlotHolder,
  physicalSlotScope,
  tenantSlotHolder,
  tenantSlotScope,
  type IndexRecord,
  type SlotRecord,
} from './catalogue.js';
import { CommandFailed, type CommandRunner } from './runner.js';
import {
  canonicalSpec,
  declaredSpec,
  needsPerTenantIndex,
  parseSpec,
  physicalSpec,
  sameKey,
  sharedPhysicalName,
  tenantPhysicalName,
} from './indexes.js';

const ID_INDEX = { v: 2, key: { _id: 1 }, name: '_id_' };
const SYSTEM_DATABASES = new Set(['admin', 'local', 'config']);
/**
 * A slot nothing in the catalogue accounts for (a replica stopped between taking it and recording
 * the index) is given back after this long; taking and recording are milliseconds apart.
 */
const STALE_SLOT_MS = 60_000;
/** Codes with which an upstream says it has no such aggregation expression (NotImplemented, InvalidPipelineOperator, …). */
const EXPRESSION_UNSUPPORTED: ReadonlySet<number> = new Set([238, 168, 31325, ErrorCodes.CommandNotSupported]);

/** The tenant as the executor needs it. */
interface Tenant {
  t: string;
  value: unknown;
  field: string;
  namespaces: NamespaceResolver;
}

export interface TenancyExecutorOptions {
  runner: CommandRunner;
  /** The settings in effect now (hot reload). */
  settings: () => TenancyConfig;
  /**
   * Whether the upstream builds partial indexes: its probed capability (src/upstream/capabilities.ts,
   * the one owner of that probe), asked at each use since a new primary may differ; a fixed value
   * in tests. Absent: assumed, so a server without them refuses the index with its own error.
   */
  partialIndexes?: boolean | (() => boolean);
  /**
   * Whether the upstream evaluates `$bsonSize` (its probed capability, src/upstream/capabilities.ts,
   * asked at each use: a new primary may differ). Without it, sizes are summed by the proxy.
   */
  bsonSize?: () => boolean;
}

export class TenancyExecutor {
  private readonly runner: CommandRunner;
  private readonly settings: () => TenancyConfig;
  private readonly partialIndexes: () => boolean;
  private readonly bsonSize: () => boolean;
  /** The slots' unique holder index, created once per catalogue database. */
  private readonly slotIndexes = new Map<string, Promise<void>>();

  constructor(options: TenancyExecutorOptions) {
    this.runner = retryingDeadlocks(options.runner);
    this.settings = options.settings;
    this.bsonSize = options.bsonSize ?? (() => false);
    const partial = options.partialIndexes ?? true;
    this.partialIndexes = typeof partial === 'function' ? partial : () => partial;
  }

  private get catalogue(): Catalogue {
    return new Catalogue(this.runner, this.settings().catalogueDatabase);
  }

  private async slotStore(): Promise<SlotStore> {
    const store = new SlotStore(this.runner, this.settings().catalogueDatabase);
    let ready = this.slotIndexes.get(store.database);
    if (ready === undefined) {
      ready = store.ensureIndex();
      this.slotIndexes.set(store.database, ready);
      ready.catch(() => this.slotIndexes.delete(store.database));
    }
    await ready;
    return store;
  }

  /** Answers one virtual operation for the tenant of `context`. */
  async execute(operation: VirtualOperation, context: TenantContext): Promise<Document> {
    const tenant: Tenant = {
      t: context.tenant,
      value: (deserialize(documentOf([['v', context.tenantValue]]).value, { promoteLongs: false }) as Document)['v'],
      field: context.field,
      namespaces: context.namespaces,
    };
    switch (operation.kind) {
      case 'create':
        return this.create(tenant, operation.db, operation.coll);
      case 'createIndexes':
        return this.createIndexes(tenant, operation.db, operation.coll, operation.indexes);
      case 'listIndexes':
        return this.listIndexes(tenant, operation.db, operation.coll);
      case 'dropIndexes':
        return this.dropIndexes(tenant, operation.db, operation.coll, operation.index);
      case 'drop':
        return {
          ns: `${operation.db}.${operation.coll}`,
          nIndexesWas: await this.drop(tenant, operation.db, operation.coll),
          ok: 1,
        };
      case 'dropDatabase':
        return this.dropDatabase(tenant, operation.db);
      case 'listCollections':
        return this.listCollections(tenant, operation.db, operation.filter, operation.nameOnly);
      case 'listDatabases':
        return this.listDatabases(tenant, operation.filter);
      case 'collStats':
        return this.collStats(tenant, operation.db, operation.coll, operation.scale);
      case 'dbStats':
        return this.dbStats(tenant, operation.db, operation.scale);
      case 'validate':
        return this.validate(tenant, operation.db, operation.coll);
    }
  }

  /**
   * Before a command with a hint on a shared collection is decided: the tenant's
   * index names there (its own and the declared ones) with their key patterns, into
   * `context.hintKeys`, so the engine maps a name or key to the prefixed physical key (and
   * refuses one the tenant has no index for); inside an explain too. Commands without a hint
   * cost nothing.
   */
  prepareHints(
    db: string,
    body: Uint8Array | RawDocument,
    sequences: ReadonlyArray<{ identifier: string; documents: readonly Uint8Array[] }>,
    context: TenantContext,
  ): Promise<void> | undefined {
    if (context.virtualDdl !== true || context.hintKeys === undefined) return undefined;
    if (context.explainIndexes !== undefined) resetExplainIndexes(context.explainIndexes);
    let command = body instanceof RawDocument ? body : RawDocument.parse(body);
    // explain: the explained command's hints.
    const explained = command.first?.name === 'explain' ? command.first : undefined;
    if (explained !== undefined) {
      if (explained.type !== BsonType.document) return undefined;
      command = RawDocument.parse(explained.value);
    }
    // Most commands carry no statements and no hint: nothing to look up, no promise to wait for.
    if (
      !sequences.some((sequence) => sequence.identifier === 'updates' || sequence.identifier === 'deletes') &&
      !command.has('hint') &&
      command.get('updates')?.type !== BsonType.array &&
      command.get('deletes')?.type !== BsonType.array
    )
      return undefined;
    return this.prepareStatementHints(db, command, sequences, context, context.hintKeys);
  }

  private async prepareStatementHints(
    db: string,
    command: RawDocument,
    sequences: ReadonlyArray<{ identifier: string; documents: readonly Uint8Array[] }>,
    context: TenantContext,
    hintKeys: NonNullable<TenantContext['hintKeys']>,
  ): Promise<void> {
    const statements: RawDocument[] = [command];
    for (const field of ['updates', 'deletes']) {
      const value = command.get(field);
      if (value !== undefined && value.type === BsonType.array)
        for (const item of arrayItems(value))
          if (item.type === BsonType.document) statements.push(RawDocument.parse(item.value));
    }
    for (const sequence of sequences)
      if (sequence.identifier === 'updates' || sequence.identifier === 'deletes')
        for (const document of sequence.documents) statements.push(RawDocument.parse(document));
    if (!statements.some((statement) => statement.get('hint') !== undefined)) return;
    const first = command.first;
    if (first === undefined || first.type !== BsonType.string) return;
    let ns: ResolvedNamespace;
    try {
      ns = context.namespaces.resolve(db, stringOf(first), 'read');
    } catch (error) {
      if (error instanceof PolicyRefusal) return; // the engine refuses it with the right rule
      throw error;
    }
    if (!ns.tenantFiltered) return;
    const prefix = `${ns.db}.${ns.coll}\0`;
    // The catalogue is the truth: names dropped since an earlier command must not map any more.
    for (const key of [...hintKeys.keys()]) if (key.startsWith(prefix)) hintKeys.delete(key);
    for (const index of this.declared(ns.db, ns.coll)) hintKeys.set(prefix + index.name, index.key);
    for (const record of await this.catalogue.ownedIndexes(context.tenant, ns.db, ns.coll)) {
      const owner = record.owners.find((candidate) => candidate.t === context.tenant)!;
      hintKeys.set(prefix + owner.name, parseSpec(record.spec).key);
    }
  }

  /**
   * Before an explain is forwarded (after it was decided: a refused one costs nothing upstream):
   * for the explained collection and every collection its pipeline reads (`$lookup`,
   * `$graphLookup`, `$unionWith`, nested, in `$facet` too) that is a shared one, each tenancy index
   * recorded there → the tenant's own name for it, or null when it is another's, into
   * `context.explainIndexes`, so the reply shows the tenant's names and only them (rewrite/explain.ts).
   */
  async prepareExplain(db: string, body: Uint8Array, context: TenantContext): Promise<void> {
    const target = context.explainIndexes;
    if (target !== undefined) resetExplainIndexes(target);
    if (context.virtualDdl !== true || target === undefined) return;
    const explained = RawDocument.parse(body).first;
    if (explained?.name !== 'explain' || explained.type !== BsonType.document) return;
    const command = RawDocument.parse(explained.value);
    const first = command.first;
    const read: Array<{ db: string; coll: string; explained: boolean }> = [];
    if (first !== undefined && first.type === BsonType.string)
      read.push({ db, coll: stringOf(first), explained: true });
    const pipeline = first?.name === 'aggregate' ? command.get('pipeline') : undefined;
    if (pipeline !== undefined) foreignCollections(db, pipeline, read, 0);
    target.db = db;
    for (const entry of read) {
      let ns: ResolvedNamespace;
      try {
        ns = context.namespaces.resolve(entry.db, entry.coll, 'read');
      } catch (error) {
        if (error instanceof PolicyRefusal) continue;
        throw error;
      }
      const key = `${ns.db}.${ns.coll}`;
      if (entry.explained) {
        target.db = ns.db;
        if (ns.tenantFiltered) target.explained = key;
      }
      if (!ns.tenantFiltered || target.namespaces.has(key)) continue;
      const names = new Map<string, string | null>();
      for (const record of await this.catalogue.indexes(ns.db, ns.coll)) {
        // Another tenant's name never leaves the catalogue: its indexes are only marked as not the tenant's.
        const owner = record.owners.find((candidate) => candidate.t === context.tenant);
        names.set(record.physical, owner?.name ?? null);
      }
      target.namespaces.set(key, names);
    }
  }

  // -- helpers ----------------------------------------------------------------------------------

  private async physicalIndexes(db: string, coll: string): Promise<Document[]> {
    try {
      const reply = await this.runner.run(db, { listIndexes: coll });
      return (reply['cursor'] as { firstBatch: Document[] }).firstBatch;
    } catch (error) {
      if (error instanceof CommandFailed && error.code === ErrorCodes.NamespaceNotFound) return [];
      throw error;
    }
  }

  private async physicalCollections(db: string): Promise<string[]> {
    const reply = await this.runner.run(db, { listCollections: 1, nameOnly: true });
    const cursor = reply['cursor'] as { firstBatch: Document[] };
    return cursor.firstBatch.map((entry) => String(entry['name']));
  }

  /** Whether the tenant has at least one document in the collection. */
  private async holdsDocuments(tenant: Tenant, db: string, coll: string): Promise<boolean> {
    const reply = await this.runner.run(db, {
      find: coll,
      filter: { [tenant.field]: { $eq: tenant.value } },
      projection: { _id: 1 },
      limit: 1,
      singleBatch: true,
    });
    return (reply['cursor'] as { firstBatch: Document[] }).firstBatch.length > 0;
  }

  /** A shared collection exists for the tenant when it created it, indexed it or holds documents in it. */
  private async existsFor(tenant: Tenant, db: string, coll: string): Promise<boolean> {
    if ((await this.catalogue.collections(tenant.t, db)).has(coll)) return true;
    if ((await this.catalogue.ownedIndexes(tenant.t, db, coll)).length > 0) return true;
    return this.holdsDocuments(tenant, db, coll);
  }

  private declared(db: string, coll: string): ReturnType<typeof declaredSpec>[] {
    return this.settings()
      .sharedIndexes.filter((index) => index.namespace === `${db}.${coll}`)
      .map(declaredSpec);
  }

  /** The shared (tenant-filtered, writable) namespace behind a physical collection name, or undefined. */
  private sharedNamespace(tenant: Tenant, db: string, coll: string): ResolvedNamespace | undefined {
    if (coll.startsWith('system.')) return undefined;
    try {
      const ns = tenant.namespaces.resolve(db, coll, 'read');
      return ns.tenantFiltered && ns.db === db && ns.coll === coll ? ns : undefined;
    } catch (error) {
      if (error instanceof PolicyRefusal) return undefined;
      throw error;
    }
  }

  // -- create -----------------------------------------------------------------------------------

  private async create(tenant: Tenant, db: string, coll: string): Promise<Document> {
    if (await this.existsFor(tenant, db, coll))
      throw new ProxyError(ErrorCodes.NamespaceExists, `Collection ${db}.${coll} already exists.`);
    await this.ensurePhysicalCollection(db, coll);
    await this.catalogue.addCollection(tenant.t, db, coll);
    return { ok: 1 };
  }

  private async ensurePhysicalCollection(db: string, coll: string): Promise<void> {
    try {
      await this.runner.run(db, { create: coll });
    } catch (error) {
      if (!(error instanceof CommandFailed && error.code === ErrorCodes.NamespaceExists)) throw error;
    }
  }

  // -- indexes ----------------------------------------------------------------------------------

  private async createIndexes(tenant: Tenant, db: string, coll: string, specs: VirtualIndexSpec[]): Promise<Document> {
    const settings = this.settings();
    const existed = await this.existsFor(tenant, db, coll);
    const declared = this.declared(db, coll);
    let owned = await this.catalogue.ownedIndexes(tenant.t, db, coll);
    const ownerName = (record: IndexRecord): string => record.owners.find((owner) => owner.t === tenant.t)!.name;
    const before = 1 + declared.length + owned.length;
    let created = 0;
    if (!existed) {
      await this.ensurePhysicalCollection(db, coll);
      await this.catalogue.addCollection(tenant.t, db, coll);
    }
    for (const spec of specs) {
      const canonical = canonicalSpec(spec.key, spec.options);
      if (spec.name === '_id_') {
        if (canonical === canonicalSpec({ _id: 1 }, {})) continue;
        throw conflict(ErrorCodes.IndexKeySpecsConflict, spec.name);
      }
      if (canonical === canonicalSpec({ _id: 1 }, {})) continue;
      // Declared indexes: the same key and options (under any name) is already there for the tenant.
      if (declared.some((index) => index.canonical === canonical)) continue;
      const declaredByName = declared.find((index) => index.name === spec.name);
      if (declaredByName !== undefined)
        throw conflict(specConflictCode(declaredByName.canonical, canonical), spec.name);
      const sameName = owned.find((record) => ownerName(record) === spec.name);
      if (sameName !== undefined) {
        if (sameName.spec === canonical) continue;
        throw conflict(specConflictCode(sameName.spec, canonical), spec.name);
      }
      const sameSpec = owned.find((record) => record.spec === canonical);
      if (sameSpec !== undefined) {
        throw new ProxyError(
          ErrorCodes.IndexOptionsConflict,
          `Index already exists with a different name: ${ownerName(sameSpec)}`,
        );
      }
      // Fast path; the slot below is what holds across replicas.
      if (owned.length >= settings.indexesPerTenant) throw budgetSpent(db, coll, settings.indexesPerTenant);
      const perTenant = needsPerTenantIndex(spec.options);
      if (perTenant && !this.partialIndexes()) {
        throw new PolicyRefusal(
          'tenancy.index-per-tenant-unsupported',
          `createIndexes: "${spec.name}" is unique, TTL or partial, which in a shared collection needs a per-tenant ` +
            'partial index, and this upstream cannot build partial indexes; the operator can declare it as a shared ' +
            'index (isolation.tenancy.sharedIndexes: unique within every tenant) or put this namespace in the ' +
            'collection-prefix or database-per-tenant model',
          ErrorCodes.CannotCreateIndex,
        );
      }
      const physical = perTenant ? tenantPhysicalName(tenant.t, db, coll, spec.name) : sharedPhysicalName(canonical);
      const tenantHolder = tenantSlotHolder(tenant.t, db, coll, spec.name);
      if (!(await this.claimTenantSlot(tenant, db, coll, spec.name)))
        throw budgetSpent(db, coll, settings.indexesPerTenant);
      try {
        if (!(await this.claimPhysicalSlot(db, coll, physical))) {
          throw new PolicyRefusal(
            'tenancy.index-reserve',
            `createIndexes: ${db}.${coll} has no index slot left for tenant indexes (the rest is reserved by the ` +
              'operator: isolation.tenancy.indexReserve); an index with the same key and options as an existing one ' +
              'can still be shared',
            ErrorCodes.CannotCreateIndex,
          );
        }
      } catch (error) {
        await (await this.slotStore()).release(tenantHolder);
        throw error;
      }
      const record = {
        db,
        coll,
        physical,
        mode: perTenant ? ('tenant' as const) : ('shared' as const),
        spec: canonical,
      };
      await this.catalogue.addOwner(record, { t: tenant.t, name: spec.name });
      try {
        await this.runner.run(db, {
          createIndexes: coll,
          indexes: [physicalSpec(spec, physical, tenant.field, tenant.value, perTenant)],
        });
      } catch (error) {
        // Nothing of a failed index stays: its ownership and slots go again (the physical index was not built).
        const last = await this.catalogue.removeOwner(db, coll, physical, { t: tenant.t, name: spec.name });
        const slots = await this.slotStore();
        await slots.release(tenantHolder);
        if (last) await slots.release(physicalSlotHolder(db, coll, physical));
        throw error instanceof CommandFailed ? renamed(error, physical, spec.name) : error;
      }
      created += 1;
      owned = await this.catalogue.ownedIndexes(tenant.t, db, coll);
    }
    const reply: Document = {
      createdCollectionAutomatically: !existed,
      numIndexesBefore: existed ? before : 1,
      numIndexesAfter: (existed ? before : 1) + created,
    };
    if (created === 0) reply['note'] = 'all indexes already exist';
    reply['ok'] = 1;
    return reply;
  }

  private async listIndexes(tenant: Tenant, db: string, coll: string): Promise<Document> {
    if (!(await this.existsFor(tenant, db, coll)))
      throw new ProxyError(ErrorCodes.NamespaceNotFound, `ns does not exist: ${db}.${coll}`);
    const entries: Document[] = [ID_INDEX];
    for (const index of this.declared(db, coll))
      entries.push({ v: 2, key: index.key, name: index.name, ...index.options });
    const owned = await this.catalogue.ownedIndexes(tenant.t, db, coll);
    for (const record of owned) {
      const owner = record.owners.find((candidate) => candidate.t === tenant.t)!;
      const { key, options } = parseSpec(record.spec);
      entries.push({ v: 2, key, name: owner.name, ...options });
    }
    return { cursor: { id: 0n, ns: `${db}.${coll}`, firstBatch: entries }, ok: 1 };
  }

  private async dropIndexes(
    tenant: Tenant,
    db: string,
    coll: string,
    index: string | string[] | Document,
  ): Promise<Document> {
    if (!(await this.existsFor(tenant, db, coll)))
      throw new ProxyError(ErrorCodes.NamespaceNotFound, `ns not found ${db}.${coll}`);
    const owned = await this.catalogue.ownedIndexes(tenant.t, db, coll);
    const declared = this.declared(db, coll);
    const nameOf = (record: IndexRecord): string => record.owners.find((owner) => owner.t === tenant.t)!.name;
    const was = 1 + declared.length + owned.length;
    let targets: IndexRecord[];
    if (index === '*') targets = owned;
    else {
      const names = typeof index === 'string' ? [index] : Array.isArray(index) ? index : undefined;
      if (names !== undefined) {
        targets = names.map((name) => {
          if (name === '_id_') throw new ProxyError(ErrorCodes.InvalidOptions, 'cannot drop _id index');
          const record = owned.find((candidate) => nameOf(candidate) === name);
          if (record !== undefined) return record;
          if (declared.some((candidate) => candidate.name === name))
            throw new PolicyRefusal(
              'tenancy.index-declared',
              `dropIndexes: "${name}" is a shared index declared by the operator (isolation.tenancy.sharedIndexes)`,
            );
          throw new ProxyError(ErrorCodes.IndexNotFound, `index not found with name [${name}]`);
        });
      } else {
        const wanted = canonicalSpec(index as Document, {});
        const matches = owned.filter((record) => sameKey(record.spec, wanted));
        if (matches.length > 1)
          throw new ProxyError(
            ErrorCodes.InvalidOptions,
            `${matches.length} indexes found for key: ${JSON.stringify(index)}, identify by name instead`,
          );
        if (matches.length === 0) {
          if (JSON.stringify(index) === JSON.stringify({ _id: 1 }))
            throw new ProxyError(ErrorCodes.InvalidOptions, 'cannot drop _id index');
          throw new ProxyError(ErrorCodes.IndexNotFound, `can't find index with key: ${JSON.stringify(index)}`);
        }
        targets = matches;
      }
    }
    for (const record of targets) await this.release(tenant, record);
    return { nIndexesWas: was, ok: 1 };
  }

  /** The tenant gives up one index; the physical index goes with its last owner (unless declared). */
  private async release(tenant: Tenant, record: IndexRecord): Promise<void> {
    const name = record.owners.find((owner) => owner.t === tenant.t)!.name;
    const last = await this.catalogue.removeOwner(record.db, record.coll, record.physical, { t: tenant.t, name });
    const slots = await this.slotStore();
    await slots.release(tenantSlotHolder(tenant.t, record.db, record.coll, name));
    if (!last) return;
    try {
      await this.runner.run(record.db, { dropIndexes: record.coll, index: record.physical });
    } catch (error) {
      if (!(
        error instanceof CommandFailed &&
        (error.code === ErrorCodes.IndexNotFound || error.code === ErrorCodes.NamespaceNotFound)
      ))
        throw error;
    }
    // The room goes back only once the physical index is gone.
    await slots.release(physicalSlotHolder(record.db, record.coll, record.physical));
    // Another replica may have taken the index again meanwhile: it must exist for its new owner.
    const again = await this.catalogue.indexRecord(record.db, record.coll, record.physical);
    if (again !== undefined && again.owners.length > 0) {
      const owner = again.owners[0]!;
      const { key, options } = parseSpec(again.spec);
      const spec: VirtualIndexSpec = { name: owner.name, key, options };
      // Per-tenant records carry their one owner; shared ones need no tenant value.
      const value = again.mode === 'tenant' && owner.t === tenant.t ? tenant.value : undefined;
      if (again.mode === 'shared' || value !== undefined) {
        // Best effort: it must exist for its owner even when the room is taken meanwhile.
        await this.claimPhysicalSlot(record.db, record.coll, record.physical);
        await this.runner.run(record.db, {
          createIndexes: record.coll,
          indexes: [physicalSpec(spec, record.physical, tenant.field, value, again.mode === 'tenant')],
        });
      }
    }
  }

  // -- slots: the budget and the reserve, atomic across replicas (./catalogue.ts) ------------

  /**
   * A slot of the tenant's budget on the collection for its index `name`. Indexes recorded before
   * slots existed (no slot of their own) count against the capacity, so the budget holds for them too.
   */
  private async claimTenantSlot(tenant: Tenant, db: string, coll: string, name: string): Promise<boolean> {
    const slots = await this.slotStore();
    const scope = tenantSlotScope(tenant.t, db, coll);
    const holder = tenantSlotHolder(tenant.t, db, coll, name);
    const attempt = async (): Promise<{ ok: boolean; taken: SlotRecord[]; holders: Set<string> }> => {
      // The records first, then the slots: a record is written after its slot, so none is missed.
      const owned = await this.catalogue.ownedIndexes(tenant.t, db, coll);
      const taken = await slots.slots(scope);
      const held = new Set(taken.map((slot) => slot.holder));
      const holders = new Set(
        owned.map((record) =>
          tenantSlotHolder(tenant.t, db, coll, record.owners.find((owner) => owner.t === tenant.t)!.name),
        ),
      );
      const unslotted = [...holders].filter((candidate) => !held.has(candidate) && candidate !== holder).length;
      const capacity = this.settings().indexesPerTenant - unslotted;
      return { ok: await slots.claim(scope, holder, capacity, taken), taken, holders };
    };
    const first = await attempt();
    if (first.ok) return true;
    const stale = first.taken.filter((slot) => isOld(slot) && !first.holders.has(slot.holder));
    if (stale.length === 0) return false;
    for (const slot of stale) await slots.remove(slot);
    return (await attempt()).ok;
  }

  /**
   * A slot of the collection's room for a physical index the proxy builds (none is needed when
   * it is already there). Indexes the proxy did not build with a slot (`_id_`, declared ones,
   * the operator's, older ones) take room first: capacity = max - reserve - those.
   */
  private async claimPhysicalSlot(db: string, coll: string, physical: string): Promise<boolean> {
    const slots = await this.slotStore();
    const scope = physicalSlotScope(db, coll);
    const holder = physicalSlotHolder(db, coll, physical);
    const attempt = async (): Promise<{ ok: boolean; taken: SlotRecord[]; present: Set<string> }> => {
      // The indexes first, then the slots: a slot is taken before its index is built.
      const present = new Set((await this.physicalIndexes(db, coll)).map((index) => String(index['name'])));
      const taken = await slots.slots(scope);
      if (present.has(physical) && !taken.some((slot) => slot.holder === holder)) return { ok: true, taken, present };
      const held = new Set(taken.map((slot) => slot.holder));
      const unslotted = [...present].filter((name) => !held.has(physicalSlotHolder(db, coll, name))).length;
      const { maxIndexesPerCollection, indexReserve } = this.settings();
      const capacity = maxIndexesPerCollection - indexReserve - unslotted;
      return { ok: await slots.claim(scope, holder, capacity, taken), taken, present };
    };
    const first = await attempt();
    if (first.ok) return true;
    let freed = false;
    for (const slot of first.taken) {
      if (!isOld(slot)) continue;
      const name = (JSON.parse(slot.holder) as string[])[3]!;
      if (first.present.has(name) || (await this.catalogue.indexRecord(db, coll, name)) !== undefined) continue;
      await slots.remove(slot);
      freed = true;
    }
    return freed && (await attempt()).ok;
  }

  // -- drop -------------------------------------------------------------------------------------

  /** Deletes the tenant's documents in batches, then its indexes and catalogue entries; returns nIndexesWas. */
  private async drop(tenant: Tenant, db: string, coll: string): Promise<number> {
    const { deleteBatchSize } = this.settings();
    const filter = { [tenant.field]: { $eq: tenant.value } };
    for (;;) {
      const found = await this.runner.run(db, {
        find: coll,
        filter,
        projection: { _id: 1 },
        limit: deleteBatchSize,
        batchSize: deleteBatchSize,
        singleBatch: true,
      });
      const ids = (found['cursor'] as { firstBatch: Document[] }).firstBatch.map((document) => document['_id']);
      if (ids.length === 0) break;
      // The tenant predicate stays: an _id is not proof of ownership (another tenant may reuse it).
      await this.runner.run(db, {
        delete: coll,
        deletes: [{ q: { $and: [filter, { _id: { $in: ids } }] }, limit: 0 }],
      });
      if (ids.length < deleteBatchSize) break;
    }
    const owned = await this.catalogue.ownedIndexes(tenant.t, db, coll);
    for (const record of owned) await this.release(tenant, record);
    await this.catalogue.removeCollection(tenant.t, db, coll);
    return 1 + this.declared(db, coll).length + owned.length;
  }

  private async dropDatabase(tenant: Tenant, db: string): Promise<Document> {
    const names = new Set([
      ...(await this.physicalCollections(db)),
      ...(await this.catalogue.collections(tenant.t, db)),
    ]);
    for (const coll of names)
      if (this.sharedNamespace(tenant, db, coll) !== undefined) await this.drop(tenant, db, coll);
    return { dropped: db, ok: 1 };
  }

  // -- stats ------------------------------------------------------------------------------------

  /**
   * The tenant's document count and BSON data size in one collection, from its documents only:
   * computed by the upstream with `$bsonSize` where it has it, else summed by the proxy (FerretDB
   * v1). Either way at most `statsMaxDocuments` documents are looked at.
   */
  private async figures(tenant: Tenant, db: string, coll: string): Promise<{ count: number; size: number }> {
    if (this.bsonSize()) {
      try {
        return await this.figuresUpstream(tenant, db, coll);
      } catch (error) {
        // The capability went away (another primary): the portable way.
        if (!(error instanceof CommandFailed && EXPRESSION_UNSUPPORTED.has(error.code))) throw error;
      }
    }
    return this.figuresSummed(tenant, db, coll);
  }

  private statsCost(db: string, coll: string): PolicyRefusal {
    const { statsMaxDocuments } = this.settings();
    return new PolicyRefusal(
      'tenancy.stats-cost',
      `statistics of ${db}.${coll} would read more than ${statsMaxDocuments} of your documents ` +
        '(isolation.tenancy.statsMaxDocuments); use count or estimatedDocumentCount',
      ErrorCodes.ExceededMemoryLimit,
    );
  }

  /** One aggregate: the tenant's documents (one more than the bound, to tell), counted and sized upstream. */
  private async figuresUpstream(tenant: Tenant, db: string, coll: string): Promise<{ count: number; size: number }> {
    const { statsMaxDocuments } = this.settings();
    const reply = await this.runner.run(db, {
      aggregate: coll,
      pipeline: [
        { $match: { [tenant.field]: { $eq: tenant.value } } },
        { $limit: statsMaxDocuments + 1 },
        { $group: { _id: null, count: { $sum: 1 }, size: { $sum: { $bsonSize: '$$ROOT' } } } },
      ],
      cursor: {},
    });
    const figures = (reply['cursor'] as { firstBatch: Document[] }).firstBatch[0];
    const count = Number(figures?.['count'] ?? 0);
    if (count > statsMaxDocuments) throw this.statsCost(db, coll);
    return { count, size: Number(figures?.['size'] ?? 0) };
  }

  private async figuresSummed(tenant: Tenant, db: string, coll: string): Promise<{ count: number; size: number }> {
    const { statsMaxDocuments } = this.settings();
    let count = 0;
    let size = 0;
    const add = (batch: Document[]): void => {
      count += batch.length;
      if (count > statsMaxDocuments) throw this.statsCost(db, coll);
      for (const document of batch) size += calculateObjectSize(document);
    };
    let reply = await this.runner.run(
      db,
      { find: coll, filter: { [tenant.field]: { $eq: tenant.value } }, batchSize: 1_000 },
      { exact: true },
    );
    let cursor = reply['cursor'] as { id: unknown; firstBatch?: Document[]; nextBatch?: Document[] };
    add(cursor.firstBatch ?? []);
    while (!cursorDone(cursor.id)) {
      reply = await this.runner.run(db, { getMore: cursor.id, collection: coll, batchSize: 1_000 }, { exact: true });
      cursor = reply['cursor'] as typeof cursor;
      add(cursor.nextBatch ?? []);
    }
    return { count, size };
  }

  /** The tenant's index names on a collection, as its listIndexes shows them. */
  private async indexNames(tenant: Tenant, db: string, coll: string): Promise<string[]> {
    const names = ['_id_', ...this.declared(db, coll).map((index) => index.name)];
    for (const record of await this.catalogue.ownedIndexes(tenant.t, db, coll))
      names.push(record.owners.find((owner) => owner.t === tenant.t)!.name);
    return names;
  }

  private async collStats(tenant: Tenant, db: string, coll: string, scale: number): Promise<Document> {
    const { count, size } = await this.figures(tenant, db, coll);
    const names = await this.indexNames(tenant, db, coll);
    const scaled = Math.floor(size / scale);
    return {
      ns: `${db}.${coll}`,
      size: scaled,
      count,
      avgObjSize: count === 0 ? 0 : Math.floor(size / count),
      storageSize: scaled,
      totalIndexSize: 0,
      totalSize: scaled,
      indexSizes: Object.fromEntries(names.map((name) => [name, 0])),
      nindexes: names.length,
      scaleFactor: scale,
      capped: false,
      ok: 1,
    };
  }

  private async dbStats(tenant: Tenant, db: string, scale: number): Promise<Document> {
    let collections = 0;
    let objects = 0;
    let dataSize = 0;
    let indexes = 0;
    const created = await this.catalogue.collections(tenant.t, db);
    for (const coll of await this.physicalCollections(db)) {
      if (this.sharedNamespace(tenant, db, coll) === undefined) continue;
      const names = await this.indexNames(tenant, db, coll);
      const { count, size } = await this.figures(tenant, db, coll);
      if (count === 0 && names.length === 1 && !created.has(coll)) continue;
      collections += 1;
      objects += count;
      dataSize += size;
      indexes += names.length;
    }
    const scaled = Math.floor(dataSize / scale);
    return {
      db,
      collections,
      views: 0,
      objects,
      avgObjSize: objects === 0 ? 0 : Math.floor(dataSize / objects),
      dataSize: scaled,
      storageSize: scaled,
      indexes,
      indexSize: 0,
      totalSize: scaled,
      scaleFactor: scale,
      ok: 1,
    };
  }

  private async validate(tenant: Tenant, db: string, coll: string): Promise<Document> {
    if (!(await this.existsFor(tenant, db, coll)))
      throw new ProxyError(ErrorCodes.NamespaceNotFound, `Collection '${db}.${coll}' does not exist to validate.`);
    const { count } = await this.figures(tenant, db, coll);
    const names = await this.indexNames(tenant, db, coll);
    return {
      ns: `${db}.${coll}`,
      nInvalidDocuments: 0,
      nNonCompliantDocuments: 0,
      nrecords: count,
      nIndexes: names.length,
      keysPerIndex: Object.fromEntries(names.map((name) => [name, count])),
      indexDetails: {},
      valid: true,
      repaired: false,
      warnings: [],
      errors: [],
      extraIndexEntries: [],
      missingIndexEntries: [],
      corruptRecords: [],
      ok: 1,
    };
  }

  // -- listings ---------------------------------------------------------------------------------

  private async listCollections(
    tenant: Tenant,
    db: string,
    filter: Document | undefined,
    nameOnly: boolean,
  ): Promise<Document> {
    const created = await this.catalogue.collections(tenant.t, db);
    const entries: Document[] = [];
    for (const physical of await this.physicalCollections(db)) {
      const client = tenant.namespaces.toClient(db, physical);
      if (client?.coll === undefined || physical.startsWith('system.')) continue;
      const shared = this.sharedNamespace(tenant, db, physical);
      if (shared !== undefined && !created.has(physical)) {
        const indexed = (await this.catalogue.ownedIndexes(tenant.t, db, physical)).length > 0;
        if (!indexed && !(await this.holdsDocuments(tenant, db, physical))) continue;
      }
      const entry: Document = nameOnly
        ? { name: client.coll, type: 'collection' }
        : {
            name: client.coll,
            type: 'collection',
            options: {},
            info: { readOnly: shared === undefined },
            idIndex: ID_INDEX,
          };
      if (matches(filter, entry, 'listCollections')) entries.push(entry);
    }
    entries.sort((a, b) => String(a['name']).localeCompare(String(b['name'])));
    return { cursor: { id: 0n, ns: `${db}.$cmd.listCollections`, firstBatch: entries }, ok: 1 };
  }

  /**
   * Data written before the proxy: of `dbs` (shared databases the catalogue does not tie to the
   * tenant), the client names of those where it holds documents. Each probe is an upstream command
   * (a scan where the tenant field is not indexed), and on a shared cluster the list is every
   * database of every tenant, so one listing runs at most LEGACY_PROBES_PER_LISTING of them,
   * LEGACY_PROBE_CONCURRENCY at a time: a tenant's listDatabases cannot make the proxy scan the
   * whole cluster. Databases past the budget are not listed (docs/isolation.md, item 24).
   */
  private async databasesHoldingDocuments(tenant: Tenant, dbs: readonly string[]): Promise<string[]> {
    let budget = LEGACY_PROBES_PER_LISTING;
    const found: string[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < dbs.length && budget > 0) {
        const db = dbs[next++]!;
        budget -= 1;
        for (const coll of (await this.physicalCollections(db)).slice(0, 100)) {
          if (this.sharedNamespace(tenant, db, coll) === undefined) continue;
          if (budget <= 0) return;
          budget -= 1;
          if (await this.holdsDocuments(tenant, db, coll)) {
            const client = tenant.namespaces.toClient(db);
            if (client !== undefined) found.push(client.db);
            break;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: LEGACY_PROBE_CONCURRENCY }, worker));
    return found;
  }

  private async listDatabases(tenant: Tenant, filter: Document | undefined): Promise<Document> {
    const reply = await this.runner.run('admin', { listDatabases: 1, nameOnly: true });
    const physical = (reply['databases'] as Document[]).map((entry) => String(entry['name']));
    const catalogueDb = this.settings().catalogueDatabase.toLowerCase();
    const created = await this.catalogue.databases(tenant.t);
    const literal = new Set(databaseListing(tenant.namespaces)?.databases ?? []);
    const names: string[] = [];
    const unclaimed: string[] = [];
    for (const db of physical) {
      if (SYSTEM_DATABASES.has(db.toLowerCase()) || db.toLowerCase() === catalogueDb) continue;
      const client = tenant.namespaces.toClient(db);
      if (client === undefined) continue;
      let model: string;
      try {
        model = tenant.namespaces.resolveDatabase(client.db, 'read').model;
      } catch (error) {
        if (error instanceof PolicyRefusal) continue;
        throw error;
      }
      if (model !== 'shared-collection' || literal.has(client.db) || created.has(db)) {
        names.push(client.db);
        continue;
      }
      unclaimed.push(db);
    }
    names.push(...(await this.databasesHoldingDocuments(tenant, unclaimed)));
    // Names only, whatever nameOnly says: sizes would show the shared server's activity (catalogue 59).
    const databases = names
      .sort()
      .map((name): Document => ({ name }))
      .filter((entry) => matches(filter, entry, 'listDatabases'));
    return { databases, ok: 1 };
  }
}

/** Upstream commands one listDatabases may spend looking for documents written before the proxy. */
const LEGACY_PROBES_PER_LISTING = 256;
const LEGACY_PROBE_CONCURRENCY = 4;

/** A cursor id of 0 (number, bigint or Long): the cursor is exhausted. */
function cursorDone(id: unknown): boolean {
  if (id === undefined || id === null) return true;
  if (typeof id === 'number' || typeof id === 'bigint') return Number(id) === 0;
  return String(id) === '0';
}

/**
 * A runner that runs a command again when the upstream aborted it as a deadlock victim
 * (DocumentDB on PostgreSQL: concurrent DDL and catalogue writes on one collection from several
 * replicas). The victim's statement was rolled back, and every command here is idempotent or a
 * slot insert that the retry decides afresh, so running it again is safe.
 */
function retryingDeadlocks(runner: CommandRunner): CommandRunner {
  return {
    async run(db, command, options) {
      for (let attempt = 1; ; attempt += 1) {
        try {
          return await runner.run(db, command, options);
        } catch (error) {
          if (!(error instanceof CommandFailed && /deadlock detected/i.test(error.message)) || attempt >= 5)
            throw error;
          await new Promise((resolve) => setTimeout(resolve, attempt * 10 + Math.floor(Math.random() * 20)));
        }
      }
    },
  };
}

function resetExplainIndexes(target: ExplainIndexes): void {
  target.db = '';
  delete target.explained;
  target.namespaces.clear();
}

/** Pipelines nest at most this deep (the policy refuses deeper ones before): a bound, not a rule. */
const MAX_PIPELINE_DEPTH = 32;

/** The collections a pipeline's `$lookup`, `$graphLookup` and `$unionWith` stages read, nested ones included. */
function foreignCollections(
  db: string,
  pipeline: RawValue,
  into: Array<{ db: string; coll: string; explained: boolean }>,
  depth: number,
): void {
  if (pipeline.type !== BsonType.array || depth > MAX_PIPELINE_DEPTH) return;
  for (const stage of arrayItems(pipeline)) {
    if (stage.type !== BsonType.document) continue;
    const first = RawDocument.parse(stage.value).first;
    if (first === undefined) continue;
    if (first.name === '$unionWith' && first.type === BsonType.string) {
      into.push({ db, coll: stringOf(first), explained: false });
      continue;
    }
    if (first.type !== BsonType.document) continue;
    const spec = RawDocument.parse(first.value);
    if (first.name === '$facet') {
      for (const facet of spec.elements) foreignCollections(db, facet, into, depth + 1);
      continue;
    }
    if (first.name !== '$lookup' && first.name !== '$graphLookup' && first.name !== '$unionWith') continue;
    const from = spec.get(first.name === '$unionWith' ? 'coll' : 'from');
    if (from?.type === BsonType.string) into.push({ db, coll: stringOf(from), explained: false });
    else if (from?.type === BsonType.document) {
      const named = RawDocument.parse(from.value);
      const fromDb = named.get('db');
      const fromColl = named.get('coll');
      if (fromDb?.type === BsonType.string && fromColl?.type === BsonType.string)
        into.push({ db: stringOf(fromDb), coll: stringOf(fromColl), explained: false });
    }
    const inner = spec.get('pipeline');
    if (inner !== undefined) foreignCollections(db, inner, into, depth + 1);
  }
}

function isOld(slot: SlotRecord): boolean {
  return Date.now() - new Date(slot.at).getTime() > STALE_SLOT_MS;
}

function budgetSpent(db: string, coll: string, budget: number): PolicyRefusal {
  return new PolicyRefusal(
    'tenancy.index-budget',
    `createIndexes: your index budget for ${db}.${coll} is spent (${budget} indexes per ` +
      'collection, isolation.tenancy.indexesPerTenant); drop one of yours first',
    ErrorCodes.CannotCreateIndex,
  );
}

function conflict(code: number, name: string): ProxyError {
  return code === ErrorCodes.IndexKeySpecsConflict
    ? new ProxyError(code, `An existing index has the same name as the requested index but different keys: ${name}`)
    : new ProxyError(code, `An existing index has the same name as the requested index but different options: ${name}`);
}

function specConflictCode(existing: string, requested: string): number {
  return sameKey(existing, requested) ? ErrorCodes.IndexOptionsConflict : ErrorCodes.IndexKeySpecsConflict;
}

/** An upstream index error with the physical name replaced by the tenant's. */
function renamed(error: CommandFailed, physical: string, name: string): CommandFailed {
  return new CommandFailed(error.code, error.message.split(physical).join(name));
}

/**
 * The subset of query language listings accept: equality, $eq, $ne, $in, $nin, $regex (with
 * $options), $exists on top-level fields, and $and / $or / $nor of those. Anything else is
 * refused rather than answered wrongly.
 */
function matches(filter: Document | undefined, entry: Document, where: string): boolean {
  if (filter === undefined) return true;
  for (const [field, condition] of Object.entries(filter)) {
    if (field === '$and' || field === '$or' || field === '$nor') {
      const branches = (condition as Document[]).map((branch) => matches(branch, entry, where));
      const ok =
        field === '$and' ? branches.every(Boolean) : field === '$or' ? branches.some(Boolean) : !branches.some(Boolean);
      if (!ok) return false;
      continue;
    }
    if (field.startsWith('$') || field.includes('.')) unsupported(where, field);
    const value = entry[field];
    if (!fieldMatches(value, condition, where, field)) return false;
  }
  return true;
}

function fieldMatches(value: unknown, condition: unknown, where: string, field: string): boolean {
  if (condition instanceof RegExp) return typeof value === 'string' && condition.test(value);
  if (typeof condition !== 'object' || condition === null || !Object.keys(condition).some((key) => key.startsWith('$')))
    return JSON.stringify(value) === JSON.stringify(condition);
  const operators = condition as Document;
  for (const [operator, operand] of Object.entries(operators)) {
    switch (operator) {
      case '$eq':
        if (JSON.stringify(value) !== JSON.stringify(operand)) return false;
        break;
      case '$ne':
        if (JSON.stringify(value) === JSON.stringify(operand)) return false;
        break;
      case '$in':
        if (!(operand as unknown[]).some((item) => fieldMatches(value, item, where, field))) return false;
        break;
      case '$nin':
        if ((operand as unknown[]).some((item) => fieldMatches(value, item, where, field))) return false;
        break;
      case '$exists':
        if ((value !== undefined) !== Boolean(operand)) return false;
        break;
      case '$regex': {
        const options = typeof operators['$options'] === 'string' ? operators['$options'] : '';
        const pattern =
          operand instanceof RegExp ? operand : new RegExp(String(operand), options.replace(/[^imsu]/g, ''));
        if (typeof value !== 'string' || !pattern.test(value)) return false;
        break;
      }
      case '$options':
        break;
      default:
        unsupported(where, `${field}.${operator}`);
    }
  }
  return true;
}

function unsupported(where: string, what: string): never {
  throw new PolicyRefusal(
    `${where}.filter`,
    `${where}: the filter may use equality, $eq, $ne, $in, $nin, $regex and $exists on the listed fields, and $and/$or/$nor (not ${what})`,
    ErrorCodes.BadValue,
  );
}
