/**
 * The ownership catalogue: which tenant owns which collection and which index of the shared
 * collections, kept in a proxy-owned upstream database (`isolation.tenancy.catalogueDatabase`)
 * so it survives restarts and is the same for every proxy replica. Nothing is cached: the
 * database is the source of truth.
 *
 * Collections of the catalogue database:
 * - `collections`: `{_id: [t, db, coll] as JSON, t, db, coll}`: the tenant created (or indexed)
 *   that collection. A collection holding any of the tenant's documents exists for it too
 *   (data written before the proxy), which the executor checks in the data itself.
 * - `indexes`: one record per PHYSICAL index a tenant asked for:
 *   `{_id: [db, coll, physical] as JSON, db, coll, physical, mode, spec, owners: [{t, name}]}`.
 *   `mode: 'shared'`: a tenant-prefixed non-unique index serving every owner, reference-counted
 *   through `owners` (atomic `$addToSet` / `$pull`, so two replicas converge); `mode: 'tenant'`:
 *   a per-tenant partial index with its one owner. `spec` is the client's key and options in
 *   canonical Extended JSON (what listIndexes shows, what re-creation is compared with).
 *
 * - `slots`: the index budget and the collection's index room, made atomic across replicas. A
 *   scope (`[t, db, coll, tenant]`: one tenant's budget on a collection; `[p, db, coll]`: the
 *   physical indexes the proxy built there) has numbered slots `{_id: [...scope, n] as JSON,
 *   scope, n, holder, at}`; taking one is an insert, so the unique `_id` lets only one replica
 *   have slot n, and a unique index on `holder` (the tenant's index name, or the physical index)
 *   lets one holder have only one slot. No scope ever has more slots than its capacity, whatever
 *   two replicas do at the same time. A capacity the operator lowers later (hot reload, a replica
 *   started with a lower limit) leaves the slots already held, whatever their numbers, taken
 *   until released: what exists stays, and a new slot is only taken while fewer than the new
 *   capacity are held (`slotBound`), which the unique numbers keep atomic across replicas too.
 *
 * Writes are idempotent upserts with majority write concern (where the upstream has none it is
 * ignored), so a retried or concurrent DDL converges.
 */
import type { Document } from '../wire/bson.js';
import { CommandFailed, type CommandRunner } from './runner.js';

export interface IndexOwner {
  t: string;
  name: string;
}

export interface IndexRecord {
  _id: string;
  db: string;
  coll: string;
  physical: string;
  mode: 'shared' | 'tenant';
  spec: string;
  owners: IndexOwner[];
}

export interface SlotRecord {
  _id: string;
  scope: string;
  n: number;
  holder: string;
  at: Date;
}

const WRITE_CONCERN = { w: 'majority' } as const;
const DUPLICATE_KEY = 11000;

export class Catalogue {
  constructor(
    private readonly runner: CommandRunner,
    readonly database: string,
  ) {}

  /** Every document of `coll` matching `filter` (the catalogue is small per tenant and namespace). */
  private async findAll(coll: string, filter: Document): Promise<Document[]> {
    const reply = await this.runner.run(this.database, { find: coll, filter, batchSize: 1_000 });
    const cursor = reply['cursor'] as { id: unknown; firstBatch: Document[] };
    const documents = [...cursor.firstBatch];
    let id = cursor.id;
    while (id !== undefined && id !== null && Number(id) !== 0) {
      const more = await this.runner.run(this.database, { getMore: id, collection: coll, batchSize: 1_000 });
      const next = more['cursor'] as { id: unknown; nextBatch: Document[] };
      documents.push(...next.nextBatch);
      id = next.id;
    }
    return documents;
  }

  // -- collections ------------------------------------------------------------------------------

  /**
   * An upsert; two replicas upserting the same new `_id` at once may both try to insert it, and the
   * loser sees a duplicate key: run once more, now as an update of the winner's document.
   */
  private async upsert(command: Document): Promise<void> {
    try {
      await this.runner.run(this.database, command);
    } catch (error) {
      if (!(error instanceof CommandFailed && error.code === DUPLICATE_KEY)) throw error;
      await this.runner.run(this.database, command);
    }
  }

  async addCollection(t: string, db: string, coll: string): Promise<void> {
    const _id = JSON.stringify([t, db, coll]);
    await this.upsert({
      update: 'collections',
      updates: [{ q: { _id }, u: { $set: { t, db, coll } }, upsert: true }],
      writeConcern: WRITE_CONCERN,
    });
  }

  async removeCollection(t: string, db: string, coll: string): Promise<void> {
    await this.runner.run(this.database, {
      delete: 'collections',
      deletes: [{ q: { _id: JSON.stringify([t, db, coll]) }, limit: 1 }],
      writeConcern: WRITE_CONCERN,
    });
  }

  /** Names of the collections the tenant created in `db`. */
  async collections(t: string, db: string): Promise<Set<string>> {
    const documents = await this.findAll('collections', { t, db });
    return new Set(documents.map((document) => String(document['coll'])));
  }

  /** Databases in which the tenant created a collection. */
  async databases(t: string): Promise<Set<string>> {
    const documents = await this.findAll('collections', { t });
    return new Set(documents.map((document) => String(document['db'])));
  }

  // -- indexes ----------------------------------------------------------------------------------

  /** The index records of a namespace that the tenant owns. */
  async ownedIndexes(t: string, db: string, coll: string): Promise<IndexRecord[]> {
    return (await this.findAll('indexes', { db, coll, 'owners.t': t })) as IndexRecord[];
  }

  /** Every index record of a namespace, whoever owns it. */
  async indexes(db: string, coll: string): Promise<IndexRecord[]> {
    return (await this.findAll('indexes', { db, coll })) as IndexRecord[];
  }

  async indexRecord(db: string, coll: string, physical: string): Promise<IndexRecord | undefined> {
    const found = await this.findAll('indexes', { _id: indexId(db, coll, physical) });
    return found[0] as IndexRecord | undefined;
  }

  /** Adds `owner` to the physical index's record, creating the record when it is the first. */
  async addOwner(
    record: Pick<IndexRecord, 'db' | 'coll' | 'physical' | 'mode' | 'spec'>,
    owner: IndexOwner,
  ): Promise<void> {
    await this.upsert({
      update: 'indexes',
      updates: [
        {
          q: { _id: indexId(record.db, record.coll, record.physical) },
          u: {
            $set: { db: record.db, coll: record.coll, physical: record.physical, mode: record.mode, spec: record.spec },
            $addToSet: { owners: { t: owner.t, name: owner.name } },
          },
          upsert: true,
        },
      ],
      writeConcern: WRITE_CONCERN,
    });
  }

  /**
   * Removes `owner`; when no owner is left the record is deleted and true is returned (the caller
   * then drops the physical index). The delete only matches an ownerless record, so an owner
   * added concurrently by another replica keeps it.
   */
  async removeOwner(db: string, coll: string, physical: string, owner: IndexOwner): Promise<boolean> {
    const _id = indexId(db, coll, physical);
    await this.runner.run(this.database, {
      update: 'indexes',
      updates: [{ q: { _id }, u: { $pull: { owners: { t: owner.t, name: owner.name } } } }],
      writeConcern: WRITE_CONCERN,
    });
    const reply = await this.runner.run(this.database, {
      delete: 'indexes',
      deletes: [{ q: { _id, 'owners.0': { $exists: false } }, limit: 1 }],
      writeConcern: WRITE_CONCERN,
    });
    return Number(reply['n'] ?? 0) > 0;
  }
}

// -- slots --------------------------------------------------------------------------------------

export class SlotStore {
  constructor(
    private readonly runner: CommandRunner,
    readonly database: string,
  ) {}

  /** The unique index on `holder`; idempotent, so every replica may create it. */
  async ensureIndex(): Promise<void> {
    await this.runner.run(this.database, {
      createIndexes: 'slots',
      indexes: [{ key: { holder: 1 }, name: 'holder_1', unique: true }],
    });
  }

  async slots(scope: string): Promise<SlotRecord[]> {
    const reply = await this.runner.run(this.database, { find: 'slots', filter: { scope }, batchSize: 10_000 });
    const cursor = reply['cursor'] as { id: unknown; firstBatch: SlotRecord[] };
    // Scopes hold at most a collection's index limit of slots: one batch.
    return cursor.firstBatch;
  }

  /**
   * Takes a free slot numbered below `capacity` for `holder` (true), or finds that `holder`
   * already has one (true, taken concurrently by another replica for the same index); false when
   * every slot is taken. `taken` is what the caller read before: those numbers are skipped.
   */
  async claim(scope: string, holder: string, capacity: number, taken: readonly SlotRecord[]): Promise<boolean> {
    if (taken.some((slot) => slot.holder === holder)) return true;
    const used = new Set(taken.map((slot) => slot.n));
    const bound = slotBound(capacity, taken);
    for (let n = 0; n < bound; n += 1) {
      if (used.has(n)) continue;
      try {
        await this.runner.run(this.database, {
          insert: 'slots',
          documents: [{ _id: JSON.stringify([scope, n]), scope, n, holder, at: new Date() }],
          writeConcern: WRITE_CONCERN,
        });
        return true;
      } catch (error) {
        if (!(error instanceof CommandFailed && error.code === DUPLICATE_KEY)) throw error;
        // Slot n went to another replica, or this holder got a slot there first.
        if (await this.holds(holder)) return true;
      }
    }
    return false;
  }

  private async holds(holder: string): Promise<boolean> {
    const reply = await this.runner.run(this.database, {
      find: 'slots',
      filter: { holder },
      limit: 1,
      singleBatch: true,
    });
    return (reply['cursor'] as { firstBatch: Document[] }).firstBatch.length > 0;
  }

  async release(holder: string): Promise<void> {
    await this.runner.run(this.database, {
      delete: 'slots',
      deletes: [{ q: { holder }, limit: 0 }],
      writeConcern: WRITE_CONCERN,
    });
  }

  /** Deletes one slot, only if it is still the one read (same holder and time). */
  async remove(slot: SlotRecord): Promise<void> {
    await this.runner.run(this.database, {
      delete: 'slots',
      deletes: [{ q: { _id: slot._id, holder: slot.holder, at: slot.at }, limit: 1 }],
      writeConcern: WRITE_CONCERN,
    });
  }
}

/**
 * New slots are numbered below this bound. Counting by numbers alone (any free n below the
 * capacity) would let a scope that still holds slots numbered above a lowered capacity take the
 * free numbers below it and hold more slots than the capacity. The bound is the largest b with
 * b + (slots held numbered b or more) <= capacity: with at most b slots below b, the slots held
 * never exceed the capacity. Across replicas with the same capacity it stays atomic: every new
 * slot is below each bound computed concurrently, so above the largest one only slots already
 * read remain, and the count holds for the read with the largest bound.
 */
export function slotBound(capacity: number, taken: readonly Pick<SlotRecord, 'n'>[]): number {
  let bound = Math.max(0, capacity);
  // b + (held numbered >= b) never decreases as b grows: lower b until it fits.
  while (bound > 0 && bound + taken.filter((slot) => slot.n >= bound).length > capacity) bound -= 1;
  return bound;
}

export function tenantSlotScope(t: string, db: string, coll: string): string {
  return JSON.stringify(['t', db, coll, t]);
}

export function tenantSlotHolder(t: string, db: string, coll: string, name: string): string {
  return JSON.stringify(['t', db, coll, t, name]);
}

export function physicalSlotScope(db: string, coll: string): string {
  return JSON.stringify(['p', db, coll]);
}

export function physicalSlotHolder(db: string, coll: string, physical: string): string {
  return JSON.stringify(['p', db, coll, physical]);
}

function indexId(db: string, coll: string, physical: string): string {
  return JSON.stringify([db, coll, physical]);
}
