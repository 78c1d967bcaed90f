/**
 * What the upstream server can do, learned by asking it, never from its name or version: servers
 * built on the same engine differ by configuration (DocumentDB refuses every collation unless
 * `documentdb_core.enableCollation` is on), and a product marker says nothing about a fork.
 *
 * Each probe is a harmless command on a collection that does not exist, marked with
 * PROBE_COMMENT: a find with the simple collation, a distinct with maxTimeMS, an aggregate with
 * $bsonSize, a find that starts a transaction which is then aborted. Nothing is created. The
 * index probes (partial, TTL) must create a collection, so they run only when asked for (tests),
 * in a database of their own that they drop again.
 *
 * A probe that fails for another reason (not authorized, a network error) is inconclusive: the
 * capability is then assumed to be MongoDB's, so that a wrong guess makes commands fail rather
 * than compare a tenant id loosely (catalogue 9).
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
  /** Indexes with `partialFilterExpression`; probed only with `{ indexes: true }`. */
  partialIndexes?: boolean;
  /** TTL indexes (`expireAfterSeconds`); probed only with `{ indexes: true }`. */
  ttlIndexes?: boolean;
}

/** MongoDB's answers, assumed until probed and wherever a probe is inconclusive. */
export const MONGODB_CAPABILITIES: Readonly<UpstreamCapabilities> = Object.freeze({
  collation: true,
  distinctMaxTimeMS: true,
  bsonSize: true,
  transactions: false, // a standalone has none; only a probe that succeeds says otherwise
});

/** Marks every probe command, so it is recognisable in server logs and profilers. */
export const PROBE_COMMENT = 'mongo-tenant-proxy capability probe';
/** A name no application uses; nothing is ever created under it (except by the index probes). */
export const PROBE_COLLECTION = 'mongo_tenant_proxy_capability_probe';
/** Where the index probes create (and drop) their collection. */
export const PROBE_INDEX_DATABASE = 'mongo_tenant_proxy_capability_probe';

/** Runs one command; resolves with an ok reply, rejects with an UpstreamError carrying the server's code. */
export type ProbeRunner = (db: string, command: Document) => Promise<Document>;

export interface ProbeOptions {
  /** Also probe partial and TTL indexes (creates and drops a collection). */
  indexes?: boolean;
  /** The database of the side-effect-free probes. Default `admin`, which every deployment has. */
  database?: string;
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

interface Verdict {
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
  };
  if (options.indexes === true) Object.assign(verdicts, await indexProbes(run));

  const capabilities: UpstreamCapabilities = { ...MONGODB_CAPABILITIES };
  const inconclusive: Record<string, string> = {};
  for (const [name, verdict] of Object.entries(verdicts) as Array<[keyof UpstreamCapabilities, Verdict]>) {
    if (verdict.outcome === 'inconclusive') {
      inconclusive[name] = verdict.detail ?? 'no answer';
      if (name === 'partialIndexes' || name === 'ttlIndexes') capabilities[name] = true;
      continue;
    }
    capabilities[name] = verdict.outcome === 'yes';
  }
  if (Object.keys(inconclusive).length > 0) {
    options.logger?.warn(
      { inconclusive, assumed: capabilities },
      'upstream capability probe inconclusive; assuming what MongoDB does',
    );
  }
  return capabilities;
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

/** Creates a collection of its own with each index kind, then drops it (and its database when empty). */
async function indexProbes(run: ProbeRunner): Promise<Record<string, Verdict>> {
  const db = PROBE_INDEX_DATABASE;
  const prefix = `probe_${new UUID().toHexString(false).slice(0, 12)}`;
  // One new collection per index: a second index on an existing collection may be built in the
  // background (DocumentDB) and take seconds.
  const create = (coll: string, index: Document): Promise<Verdict> =>
    refusalProbe(() => run(db, { createIndexes: coll, indexes: [index], comment: PROBE_COMMENT }), /./);
  try {
    return {
      partialIndexes: await create(`${prefix}_partial`, {
        key: { a: 1 },
        name: 'partial',
        partialFilterExpression: { a: { $exists: true } },
      }),
      ttlIndexes: await create(`${prefix}_ttl`, { key: { t: 1 }, name: 'ttl', expireAfterSeconds: 3600 }),
    };
  } finally {
    for (const suffix of ['partial', 'ttl']) {
      await run(db, { drop: `${prefix}_${suffix}`, comment: PROBE_COMMENT }).catch(() => undefined);
    }
    const left = await run(db, { listCollections: 1, nameOnly: true, comment: PROBE_COMMENT }).catch(() => undefined);
    const batch = (left?.cursor as Document | undefined)?.firstBatch;
    if (Array.isArray(batch) && batch.length === 0) await run(db, { dropDatabase: 1 }).catch(() => undefined);
  }
}

function isTransportFailure(error: ProxyError): boolean {
  return error.labels.includes(NETWORK_ERROR_LABEL) || error.code === ErrorCodes.ProtocolError;
}

/**
 * Probes on one connection, bounded in time: a connection that breaks or stays silent past
 * `timeoutMS` is closed and the probe rejects like a failed hello would (start may be retried).
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
              `upstream capability probe on ${connection.address} timed out after ${timeoutMS} ms`,
              { labels: [NETWORK_ERROR_LABEL] },
            ),
          );
        }, timeoutMS)
      : undefined;
  try {
    return await probeCapabilities((db, command) => runCommand(connection, db, command), options);
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

  constructor(logger?: Logger) {
    this.#logger = logger;
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
          probeConnection(connection, { timeoutMS: wanted.timeoutMS, logger: this.#logger }),
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
