/**
 * A mixed read/write load through driver clients, with a ledger of what the driver saw, and a
 * check of that ledger against what really reached the database (read directly, bypassing the
 * proxy). For the fault tests (issue 5, "Proof"): whatever happens to the upstream,
 *  - every insert the driver saw acknowledged is in the database exactly once, and no insert
 *    appears that the driver never sent;
 *  - an insert answered with the NoWritesPerformed label is not in the database;
 *  - each counter equals its acknowledged $inc operations plus at most the ones whose outcome
 *    was an error without NoWritesPerformed (unknown outcome), never more;
 *  - every failed read failed with an error the driver itself classifies as retryable;
 *  - every failed write failed with a server or network error, nothing stranger.
 * Inserts use unique string _ids (FerretDB indexes those). Counters are `$inc`ed by one, each by
 * a single worker, which retires a counter after any failed increment: FerretDB 1.x applies
 * `$inc` as read-modify-write, so concurrent increments of one document lose updates even without
 * faults, and an increment whose connection died may still be running upstream while the next
 * one starts. A worker creates each of its counters with an insert before incrementing it (an
 * upsert would not do: behind the proxy its filter is an `$and`, from which FerretDB does not
 * take the `_id` of the new document).
 */
import { createRequire } from 'node:module';
import {
  MongoError,
  MongoNetworkError,
  MongoServerError,
  MongoWriteConcernError,
  type Db,
  type MongoClient,
} from 'mongodb';
import { sleep } from './wait.js';

// The driver's own classification (not re-implemented here, so the test cannot be more lenient
// than the driver): src/error.ts isRetryableReadError, not exported from the package index.
const driverErrors = createRequire(import.meta.url)('mongodb/lib/error.js') as {
  isRetryableReadError(error: MongoError): boolean;
};

export type OperationKind = 'insert' | 'inc' | 'find';

export interface OperationError {
  kind: OperationKind;
  /** Error class name as the driver raised it (MongoServerError, MongoNetworkError, …). */
  name: string;
  code: number | string | undefined;
  codeName: string | undefined;
  labels: string[];
  /** What the driver's isRetryableReadError says. */
  retryableRead: boolean;
  /** A server reply (MongoServerError, write concern), a network failure, or anything else. */
  surfacedAs: 'server' | 'network' | 'other';
  message: string;
}

export interface LoadLedger {
  insertsAcked: Set<string>;
  /** Insert _id → the error its insertOne failed with (outcome unknown unless NoWritesPerformed). */
  insertsFailed: Map<string, OperationError>;
  /** Counter _id → acknowledged increments. */
  incAcked: Map<string, number>;
  /** Counter _id → increments that failed without NoWritesPerformed (each applied 0 or 1 times). */
  incUnknown: Map<string, number>;
  readsOk: number;
  errors: OperationError[];
}

export interface MixedLoadOptions {
  /** Each client runs `workersPerClient` closed-loop workers. */
  clients: MongoClient[];
  database: string;
  collection?: string;
  workersPerClient?: number;
  /** A worker pauses this long after a failed operation, as an application backing off would. */
  pauseAfterErrorMS?: number;
}

export const NO_WRITES_PERFORMED = 'NoWritesPerformed';
const DEFAULT_COLLECTION = 'mixed';

export class MixedLoad {
  readonly ledger: LoadLedger = {
    insertsAcked: new Set(),
    insertsFailed: new Map(),
    incAcked: new Map(),
    incUnknown: new Map(),
    readsOk: 0,
    errors: [],
  };
  readonly collection: string;
  /** Every counter some increment was sent for. */
  readonly counterIds = new Set<string>();
  /** Operations started and not yet settled, for spotting hangs. */
  inFlight = 0;
  /** Operations that succeeded (all kinds). */
  succeeded = 0;
  private readonly options: Required<MixedLoadOptions>;
  private readonly tag = `${process.pid.toString(36)}${Date.now().toString(36)}`;
  private workers: Promise<void>[] = [];
  private stopping = false;

  constructor(options: MixedLoadOptions) {
    this.options = { collection: DEFAULT_COLLECTION, workersPerClient: 3, pauseAfterErrorMS: 20, ...options };
    this.collection = this.options.collection;
  }

  start(): void {
    if (this.workers.length > 0) throw new Error('MixedLoad already started');
    let index = 0;
    for (const client of this.options.clients) {
      for (let w = 0; w < this.options.workersPerClient; w++) this.workers.push(this.worker(client, index++));
    }
  }

  /**
   * Lets every worker finish its current operation. Rejects if some operation has no outcome
   * within `timeoutMS` (a hang is a finding, not something to wait out).
   */
  async stop(timeoutMS = 30_000): Promise<LoadLedger> {
    this.stopping = true;
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `mixed load: ${this.inFlight} operation(s) still without an outcome ${timeoutMS} ms after stop()`,
            ),
          ),
        timeoutMS,
      );
    });
    try {
      await Promise.race([Promise.all(this.workers), hung]);
    } finally {
      clearTimeout(timer);
    }
    return this.ledger;
  }

  /** Stops starting operations without waiting (a test that already failed). */
  abort(): void {
    this.stopping = true;
  }

  private async worker(client: MongoClient, index: number): Promise<void> {
    const collection = client
      .db(this.options.database)
      .collection<{ _id: string; kind: string; n?: number; worker?: number }>(this.collection);
    let counterGeneration = 0;
    let counterCreated = false;
    for (let sequence = 0; !this.stopping; sequence++) {
      const kind: OperationKind = (['insert', 'inc', 'find'] as const)[(sequence + index) % 3]!;
      const counter = `counter-${this.tag}-${index}-${counterGeneration}`;
      const id = `ins-${this.tag}-${index}-${sequence}`;
      this.inFlight++;
      try {
        if (kind === 'insert') {
          await collection.insertOne({ _id: id, kind: 'insert', worker: index });
          this.ledger.insertsAcked.add(id);
        } else if (kind === 'inc') {
          this.counterIds.add(counter);
          if (!counterCreated) {
            await collection.insertOne({ _id: counter, kind: 'counter', n: 0 });
            counterCreated = true;
          } else {
            const result = await collection.updateOne({ _id: counter }, { $inc: { n: 1 } });
            if (result.matchedCount !== 1) throw new Error(`counter ${counter} not matched`);
            add(this.ledger.incAcked, counter);
          }
        } else {
          await collection.find({ kind: 'insert' }, { limit: 5 }).toArray();
          this.ledger.readsOk++;
        }
        this.succeeded++;
      } catch (error) {
        const record = describeError(kind, error);
        this.ledger.errors.push(record);
        if (kind === 'insert') this.ledger.insertsFailed.set(id, record);
        else if (kind === 'inc') {
          if (!record.labels.includes(NO_WRITES_PERFORMED)) add(this.ledger.incUnknown, counter);
          counterGeneration++;
          counterCreated = false;
        }
        await sleep(this.options.pauseAfterErrorMS);
      } finally {
        this.inFlight--;
      }
    }
  }
}

function add(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

export function describeError(kind: OperationKind, error: unknown): OperationError {
  if (!(error instanceof Error)) {
    return {
      kind,
      name: typeof error,
      code: undefined,
      codeName: undefined,
      labels: [],
      retryableRead: false,
      surfacedAs: 'other',
      message: String(error),
    };
  }
  const mongo = error instanceof MongoError ? error : undefined;
  return {
    kind,
    name: error.constructor.name,
    code: mongo?.code,
    codeName: error instanceof MongoServerError ? error.codeName : undefined,
    labels: mongo?.errorLabels ?? [],
    retryableRead: mongo !== undefined && driverErrors.isRetryableReadError(mongo),
    surfacedAs:
      error instanceof MongoServerError || error instanceof MongoWriteConcernError
        ? 'server'
        : error instanceof MongoNetworkError
          ? 'network'
          : 'other',
    message: error.message,
  };
}

export interface LedgerCheck {
  /** Every broken invariant, in words; empty when the database agrees with the ledger. */
  violations: string[];
  /** Error counts by `kind name code/codeName [labels] retryableRead`, for the record. */
  errorKinds: Record<string, number>;
  acknowledged: { inserts: number; increments: number; reads: number };
}

/** Reads the load's collection straight from the database and checks the ledger against it. */
export async function checkLedger(db: Db, load: MixedLoad): Promise<LedgerCheck> {
  const { ledger } = load;
  const violations: string[] = [];
  const collection = db.collection<{ _id: string; kind: string; n?: number }>(load.collection);
  const inserted = await collection.find({ kind: 'insert' }, { projection: { _id: 1 } }).toArray();
  const seen = new Map<string, number>();
  for (const { _id } of inserted) seen.set(_id, (seen.get(_id) ?? 0) + 1);

  const listed = (ids: string[]): string =>
    `${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ` … (${ids.length})` : ''}`;
  const missing = [...ledger.insertsAcked].filter((id) => !seen.has(id));
  if (missing.length > 0) violations.push(`acknowledged inserts missing from the database: ${listed(missing)}`);
  const duplicated = [...seen].filter(([, count]) => count > 1).map(([id]) => id);
  if (duplicated.length > 0) violations.push(`inserts present more than once: ${listed(duplicated)}`);
  const phantom = [...seen.keys()].filter((id) => !ledger.insertsAcked.has(id) && !ledger.insertsFailed.has(id));
  if (phantom.length > 0) violations.push(`documents no insert of this load produced: ${listed(phantom)}`);
  const notPerformed = [...ledger.insertsFailed]
    .filter(([id, error]) => error.labels.includes(NO_WRITES_PERFORMED) && seen.has(id))
    .map(([id]) => id);
  if (notPerformed.length > 0)
    violations.push(`inserts answered NoWritesPerformed but applied: ${listed(notPerformed)}`);

  const counters = await collection.find({ kind: 'counter' }).toArray();
  const values = new Map(counters.map((doc) => [doc._id, doc.n ?? 0]));
  for (const id of load.counterIds) {
    const value = values.get(id);
    const acked = ledger.incAcked.get(id) ?? 0;
    const unknown = ledger.incUnknown.get(id) ?? 0;
    if (value === undefined && acked > 0)
      violations.push(`counter ${id} is missing (${acked} acknowledged increments)`);
    else if (value === undefined) continue;
    else if (value < acked)
      violations.push(`counter ${id} = ${value} lost acknowledged increments (${acked} acknowledged)`);
    else if (value > acked + unknown) {
      violations.push(
        `counter ${id} = ${value} was incremented more often than sent (${acked} acknowledged + ${unknown} unknown)`,
      );
    }
  }

  const errorKinds: Record<string, number> = {};
  for (const error of ledger.errors) {
    const key = `${error.kind} ${error.name} ${error.codeName ?? error.code ?? '-'} [${error.labels.join(',')}]${error.retryableRead ? ' retryable' : ''}`;
    errorKinds[key] = (errorKinds[key] ?? 0) + 1;
    if (error.kind === 'find' && !error.retryableRead) {
      violations.push(
        `a read failed with an error the driver does not retry: ${error.name} ${error.code ?? ''} ${error.message}`,
      );
    }
    if (error.kind !== 'find' && error.surfacedAs === 'other') {
      violations.push(`a write failed with an unexpected error: ${error.name} ${error.message}`);
    }
  }
  const increments = [...ledger.incAcked.values()].reduce((sum, n) => sum + n, 0);
  return {
    violations: [...new Set(violations)],
    errorKinds,
    acknowledged: { inserts: ledger.insertsAcked.size, increments, reads: ledger.readsOk },
  };
}

/** One line per scenario on stderr with MTP_FAULTS_REPORT=1: what the driver saw. */
export function reportLedger(scenario: string, check: LedgerCheck): void {
  if (process.env.MTP_FAULTS_REPORT !== '1') return;
  process.stderr.write(
    `[faults] ${scenario}: ${JSON.stringify({ acknowledged: check.acknowledged, errors: check.errorKinds })}\n`,
  );
}
