/**
 * What the upstream server can do, learned by asking it, never from its name or version: servers
 * built on the same engine differ by configuration (DocumentDB refuses every collation unless
 * `documentdb_core.enableCollation` is on), and a product marker says nothing about a fork.
 *
 * Every probe command is marked with PROBE_COMMENT. The read probes run on a collection that does
 * not exist and create nothing: a find with the simple collation, a distinct with maxTimeMS, an
 * aggregate with $bsonSize, a find that starts a transaction which is then aborted. The write
 * probes (an upsert through `$and`, a partial index; a TTL index only when asked for, by the
 * tests) each create a collection of their own in PROBE_DATABASE, a database of the proxy's own,
 * and drop it again (and the database once it is empty).
 *
 * A probe that fails for another reason (not authorized, a network error) is inconclusive: the
 * capability then takes the value of FALLBACK_CAPABILITIES, chosen so that a wrong guess makes
 * commands fail, or does work twice, rather than compare a tenant id loosely (catalogue 9) or
 * lose a field of an upserted document.
 */

import type { Logger } from 'pino';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import { Long, UUID, type Document } from '../wire/bson.js';
import { NETWORK_ERROR_LABEL, type UpstreamConnection } from './connection.js';
import { runCommand } from './handshake.js';

export interface UpstreamCapabilities {
  /**
   * Commands accept a `collation` (and a collection's default collation may apply): the rewrite
   * then pins the simple collation on tenant-filtered commands (catalogue 9). Without it the
   * server compares binary whatever the client asks, and a client's collation gets its refusal.
   */
  collation: boolean;
  /** `distinct` accepts `maxTimeMS` (FerretDB v1 refuses it with FailedToParse). */
  distinctMaxTimeMS: boolean;
  /** The `$bsonSize` aggregation expression. */
  bsonSize: boolean;
  /** Multi-document transactions (startTransaction, abortTransaction). */
  transactions: boolean;
  /**
   * An upsert whose query is `{$and: [{_id: X}, {k: 1}]}` stores `_id: X` and `k: 1` in the
   * document it inserts (MongoDB, DocumentDB). Where it does not (FerretDB v1 derives from
   * top-level equalities only), the rewrite adds the query's fields itself (src/rewrite/upsert.ts).
   */
  upsertFieldsFromAnd: boolean;
  /**
   * Indexes with `partialFilterExpression`: a tenant's unique, TTL or partial index in a shared
   * collection is built as a per-tenant partial index (src/tenancy/executor.ts), else refused.
   */
  partialIndexes: boolean;
  /** TTL indexes (`expireAfterSeconds`); probed only with `{ ttl: true }` (the tests). */
  ttlIndexes?: boolean;
}

/**
 * Assumed until probed and wherever a probe is inconclusive: MongoDB's answers, except where
 * assuming them could lose data. `transactions`: a standalone has none; only a probe that
 * succeeds says otherwise. `upsertFieldsFromAnd`: false, so the proxy adds an upsert's query
 * fields itself; where the server derives them too, the `$setOnInsert` entries repeat the very
 * values it derived (same paths, same bytes; fields the update writes are left out), which no
 * server refuses, whereas a wrong `true` on a server that does not derive them would store upserts
 * without their query fields and with a new `_id`. `partialIndexes`: true, so a server without
 * them refuses a tenant's per-tenant index with its own error.
 */
export const FALLBACK_CAPABILITIES: Readonly<UpstreamCapabilities> = Object.freeze({
  collation: true,
  distinctMaxTimeMS: true,
  bsonSize: true,
  transactions: false,
  upsertFieldsFromAnd: false,
  partialIndexes: true,
});
/** The former name, kept for code written against it (branches in flight). */
export const MONGODB_CAPABILITIES = FALLBACK_CAPABILITIES;

/** Marks every probe command, so it is recognisable in server logs and profilers. */
export const PROBE_COMMENT = 'mongo-tenant-proxy capability probe';
/** A name no application uses; the read probes name it, and nothing is ever created under it. */
export const PROBE_COLLECTION = 'mongo_tenant_proxy_capability_probe';
/**
 * The proxy's own database, where the write probes create (and drop) their collections. A proxy
 * user that may not write there gets inconclusive answers, hence FALLBACK_CAPABILITIES.
 */
export const PROBE_DATABASE = 'mongo_tenant_proxy_capability_probe';
/** The former name, from when only index probes wrote. */
export const PROBE_INDEX_DATABASE = PROBE_DATABASE;

/** Runs one command; resolves with an ok reply, rejects with an UpstreamError carrying the server's code. */
export type ProbeRunner = (db: string, command: Document) => Promise<Document>;

export interface ProbeOptions {
  /** Also probe TTL indexes (creates and drops one more collection); nothing in the proxy needs it. */
  ttl?: boolean;
  /** The database of the read probes. Default `admin`, which every deployment has. */
  database?: string;
  /**
   * The database of the write probes. Default PROBE_DATABASE, dropped again when they leave it
   * empty; any other (the proxy's catalogue database) is left in place, only the probes'
   * collections are dropped.
   */
  writeDatabase?: string;
  logger?: Logger | undefined;
}

/** Codes with which servers say "I do not do that" (as opposed to "not you" or "not now"). */
const UNSUPPORTED_CODES: ReadonlySet<number> = new Set([
  ErrorCodes.CommandNotSupported, // 115: DocumentDB's collation refusal
  238, // NotImplemented: FerretDB v1
  ErrorCodes.CommandNotFound, // 59
  168, // InvalidPipelineOperator: MongoDB, an unknown expression
  31325, // an unknown expression in $project (MongoDB 4.4+)
]);

type Outcome = 'yes' | 'no' | 'inconclusive';

export interface Verdict {
  outcome: Outcome;
  detail?: string;
}

/** Asks the server, one command after the other (a probe never runs two commands at once). */
export async function probeCapabilities(run: ProbeRunner, options: ProbeOptions = {}): Promise<UpstreamCapabilities> {
  const db = options.database ?? 'admin';
  const verdicts: Record<string, Verdict> = {
    collation: await refusalProbe(
      () =>
        run(db, {
          find: PROBE_COLLECTION,
          filter: {},
          limit: 1,
          singleBatch: true,
          collation: { locale: 'simple' },
          comment: PROBE_COMMENT,
        }),
      /collation/i,
    ),
    distinctMaxTimeMS: await refusalProbe(
      () => run(db, { distinct: PROBE_COLLECTION, key: '_id', query: {}, maxTimeMS: 60_000, comment: PROBE_COMMENT }),
      /maxTimeMS/,
    ),
    bsonSize: await refusalProbe(
      () =>
        run(db, {
          aggregate: PROBE_COLLECTION,
          pipeline: [{ $project: { _id: 0, size: { $bsonSize: '$$ROOT' } } }],
          cursor: {},
          comment: PROBE_COMMENT,
        }),
      /bsonSize/,
    ),
    transactions: await transactionProbe(run, db),
    ...(await writeProbes(run, options.writeDatabase ?? PROBE_DATABASE, options.ttl === true)),
  };

  const capabilities: UpstreamCapabilities = { ...FALLBACK_CAPABILITIES };
  const inconclusive: Record<string, string> = {};
  for (const [name, verdict] of Object.entries(verdicts) as Array<[keyof UpstreamCapabilities, Verdict]>) {
    if (verdict.outcome === 'inconclusive') {
      inconclusive[name] = verdict.detail ?? 'no answer';
      if (name === 'ttlIndexes') capabilities[name] = true; // like partialIndexes: the server refuses
      continue;
    }
    capabilities[name] = verdict.outcome === 'yes';
  }
  if (Object.keys(inconclusive).length > 0) {
    options.logger?.warn(
      { inconclusive, assumed: capabilities },
      'upstream capability probe inconclusive; assuming what fails safe (FALLBACK_CAPABILITIES)',
    );
  }
  return capabilities;
}

/**
 * Whether the document the upsert probe left (`stored`: the probe collection's documents, read
 * back) holds both `_id` and `k` of its `$and` query: yes only when it does. A server that
 * derived one but not the other counts as no, since the proxy then adds both (a repeated value
 * is harmless, a missing one is not).
 */
export function upsertProbeVerdict(stored: readonly Document[], collection: string): Verdict {
  if (stored.length !== 1) return { outcome: 'inconclusive', detail: `${stored.length} documents after the upsert` };
  const [document] = stored as [Document];
  if (document.v !== 1) return { outcome: 'inconclusive', detail: 'the upserted document lacks the update' };
  const derived = document._id === collection && document.k === 1;
  return derived ? { outcome: 'yes' } : { outcome: 'no', detail: `stored fields: ${Object.keys(document).join(', ')}` };
}

/**
 * An upsert like the rewrite sends one (the client's equalities inside an `$and`) into a new
 * collection, then reads back what it stored. The `_id` asked for is the collection's name,
 * unique to this probe.
 */
async function upsertProbe(run: ProbeRunner, db: string, collection: string): Promise<Verdict> {
  try {
    await run(db, {
      update: collection,
      updates: [{ q: { $and: [{ _id: collection }, { k: 1 }] }, u: { $set: { v: 1 } }, upsert: true }],
      comment: PROBE_COMMENT,
    });
    const reply = await run(db, { find: collection, filter: {}, limit: 2, singleBatch: true, comment: PROBE_COMMENT });
    const batch = (reply.cursor as Document | undefined)?.firstBatch;
    return upsertProbeVerdict(Array.isArray(batch) ? (batch as Document[]) : [], collection);
  } catch (error) {
    if (!ProxyError.is(error) || isTransportFailure(error)) throw error;
    return { outcome: 'inconclusive', detail: `${error.code}: ${error.message}` };
  }
}

/** ok: yes; refused with an "unsupported" code or a message naming the feature: no; else inconclusive. */
async function refusalProbe(attempt: () => Promise<Document>, feature: RegExp): Promise<Verdict> {
  try {
    await attempt();
    return { outcome: 'yes' };
  } catch (error) {
    if (!ProxyError.is(error) || isTransportFailure(error)) throw error;
    const refused =
      UNSUPPORTED_CODES.has(error.code) ||
      ((error.code === ErrorCodes.FailedToParse || error.code === ErrorCodes.BadValue || error.code === 40415) &&
        feature.test(error.message));
    return { outcome: refused ? 'no' : 'inconclusive', detail: `${error.code}: ${error.message}` };
  }
}

/**
 * A find that starts a transaction, then abortTransaction, then endSessions. MongoDB refuses
 * transactions in `admin` (OperationNotSupportedInTransaction, 263): that still says it has them.
 * A standalone answers IllegalOperation (20); a server without them ignores the fields and does
 * not know abortTransaction (59).
 */
async function transactionProbe(run: ProbeRunner, db: string): Promise<Verdict> {
  const lsid = { id: new UUID() };
  const txnNumber = Long.fromNumber(1);
  try {
    await run(db, {
      find: PROBE_COLLECTION,
      filter: {},
      limit: 1,
      singleBatch: true,
      lsid,
      txnNumber,
      startTransaction: true,
      autocommit: false,
      comment: PROBE_COMMENT,
    });
    await run('admin', { abortTransaction: 1, lsid, txnNumber, autocommit: false, comment: PROBE_COMMENT });
    return { outcome: 'yes' };
  } catch (error) {
    if (!ProxyError.is(error) || isTransportFailure(error)) throw error;
    if (error.code === 263) return { outcome: 'yes', detail: 'transactions refused in admin only' };
    return { outcome: 'no', detail: `${error.code}: ${error.message}` };
  } finally {
    await run('admin', { endSessions: [lsid], comment: PROBE_COMMENT }).catch(() => undefined);
  }
}

/**
 * The upsert and index probes, each in a new collection of its own (a second index on an existing
 * collection may be built in the background, DocumentDB, and take seconds), all dropped again,
 * and the probe database too once it is empty (other proxies may be probing in it at the moment).
 */
async function writeProbes(run: ProbeRunner, db: string, ttl: boolean): Promise<Record<string, Verdict>> {
  const prefix = `probe_${new UUID().toHexString(false).slice(0, 12)}`;
  const created: string[] = [];
  const create = (suffix: string, index: Document): Promise<Verdict> => {
    created.push(`${prefix}_${suffix}`);
    return refusalProbe(
      () => run(db, { createIndexes: `${prefix}_${suffix}`, indexes: [index], comment: PROBE_COMMENT }),
      /./,
    );
  };
  try {
    created.push(`${prefix}_upsert`);
    const verdicts: Record<string, Verdict> = {
      upsertFieldsFromAnd: await upsertProbe(run, db, `${prefix}_upsert`),
      partialIndexes: await create('partial', {
        key: { a: 1 },
        name: 'partial',
        partialFilterExpression: { a: { $exists: true } },
      }),
    };
    if (ttl) verdicts.ttlIndexes = await create('ttl', { key: { t: 1 }, name: 'ttl', expireAfterSeconds: 3600 });
    return verdicts;
  } finally {
    for (const collection of created) {
      await run(db, { drop: collection, comment: PROBE_COMMENT }).catch(() => undefined);
    }
    // Only the probes' own database is dropped: another holds the catalogue.
    const left =
      db !== PROBE_DATABASE
        ? undefined
        : await run(db, { listCollections: 1, nameOnly: true, comment: PROBE_COMMENT }).catch(() => undefined);
    const batch = (left?.cursor as Document | undefined)?.firstBatch;
    if (Array.isArray(batch) && batch.length === 0)
      await run(db, { dropDatabase: 1, comment: PROBE_COMMENT }).catch(() => undefined);
  }
}

function isTransportFailure(error: ProxyError): boolean {
  return error.labels.includes(NETWORK_ERROR_LABEL) || error.code === ErrorCodes.ProtocolError;
}

/**
 * Probes on one connection, bounded in time: a connection that breaks, or leaves one probe
 * command unanswered for `timeoutMS`, is closed and the probe rejects like a failed hello would
 * (start may be retried). The bound is per command, not for the whole probe: it is a dozen round
 * trips, some creating and dropping collections and indexes, and a server that answers each one
 * slowly (a loaded one at start: 5 s was not enough for all of them on FerretDB at load 10) is
 * alive, not silent.
 */
export async function probeConnection(
  connection: UpstreamConnection,
  options: ProbeOptions & { timeoutMS: number },
): Promise<UpstreamCapabilities> {
  const { timeoutMS } = options;
  const timer =
    timeoutMS > 0
      ? setTimeout(() => {
          connection.close(
            new UpstreamError(
              ErrorCodes.NetworkTimeout,
              `upstream capability probe on ${connection.address} timed out: no answer within ${timeoutMS} ms`,
              { labels: [NETWORK_ERROR_LABEL] },
            ),
          );
        }, timeoutMS)
      : undefined;
  const run: ProbeRunner = async (db, command) => {
    try {
      return await runCommand(connection, db, command);
    } finally {
      // An answer (or a refusal) came: the next command has the whole bound again.
      timer?.refresh();
    }
  };
  try {
    return await probeCapabilities(run, options);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/** Lends a connection to one server and takes it back (the pool's checkOut / checkIn). */
export type BorrowConnection = <T>(use: (connection: UpstreamConnection) => Promise<T>) => Promise<T>;

/**
 * The capabilities of the server writes go to now. Set from the probe at start; probed again
 * when another server becomes that server (a failover, a reconnect to a new primary), since a
 * deployment may mix versions or configurations during an upgrade.
 */
export class CapabilityTracker {
  #current: UpstreamCapabilities = { ...MONGODB_CAPABILITIES };
  #probedServer: string | undefined;
  /** The newest server asked for while a probe runs; probed next. */
  #wanted: { server: string; borrow: BorrowConnection; timeoutMS: number } | undefined;
  #running: Promise<void> | undefined;
  readonly #logger: Logger | undefined;
  readonly #writeDatabase: string | undefined;

  constructor(logger?: Logger, writeDatabase?: string) {
    this.#logger = logger;
    this.#writeDatabase = writeDatabase;
  }

  /** The options of every probe this tracker's upstream runs (start and failover alike). */
  probeOptions(timeoutMS: number): ProbeOptions & { timeoutMS: number } {
    return {
      timeoutMS,
      logger: this.#logger,
      ...(this.#writeDatabase !== undefined && { writeDatabase: this.#writeDatabase }),
    };
  }

  get current(): UpstreamCapabilities {
    return this.#current;
  }

  set(server: string, capabilities: UpstreamCapabilities): void {
    this.#probedServer = server;
    this.#current = capabilities;
  }

  /**
   * `server` now takes the writes: probe it in the background unless it is the one probed last.
   * A failed probe keeps the previous answer (logged).
   */
  recheck(server: string, borrow: BorrowConnection, timeoutMS: number): void {
    this.#wanted = { server, borrow, timeoutMS };
    this.#running ??= this.#drain().finally(() => {
      this.#running = undefined;
    });
  }

  async #drain(): Promise<void> {
    for (let wanted = this.#wanted; wanted !== undefined; wanted = this.#wanted) {
      this.#wanted = undefined;
      if (wanted.server === this.#probedServer) continue;
      try {
        const capabilities = await wanted.borrow((connection) =>
          probeConnection(connection, this.probeOptions(wanted.timeoutMS)),
        );
        const previous = this.#current;
        this.set(wanted.server, capabilities);
        if (JSON.stringify(previous) !== JSON.stringify(capabilities)) {
          this.#logger?.warn(
            { server: wanted.server, capabilities, previous },
            'upstream capabilities changed with the new server',
          );
        }
      } catch (error) {
        this.#logger?.warn(
          { server: wanted.server, err: error instanceof Error ? error.message : String(error) },
          'upstream capability re-check failed; keeping the previous answer',
        );
      }
    }
  }

  /** Settles once the running re-checks have (tests). */
  async settled(): Promise<void> {
    await this.#running;
  }
}
