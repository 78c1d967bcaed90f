// The benchmark workloads. Each one runs the same way against every target (direct, pipe, proxy)
// through a `Db` handle of the official driver, and checks the answers so that a broken target
// shows up as an error rather than as a fast number.
import { closedLoop } from './stats.mjs';

export const FIND_COLLECTION = 'findone';
export const CURSOR_COLLECTION = 'cursor';
/** A collection of one document: a find on it costs the upstream almost nothing, even as a scan. */
export const TINY_COLLECTION = 'tiny';
export const TINY_ID = 'tiny-0';
const BATCH = 1_000;

/** A small, typical document: about 190 bytes of BSON. */
export function makeDoc(i) {
  return {
    tenantId: 'bench', // the proxy's default tenant field, stamped like the proxy would
    seq: i,
    name: `user-${i}`,
    email: `user-${i}@example.com`,
    score: i % 1_000,
    active: i % 2 === 0,
    tags: ['alpha', 'beta', 'gamma'],
    createdAt: new Date(1_700_000_000_000 + i * 1_000),
  };
}

/**
 * The `_id` of the i-th seeded document. A string on purpose: FerretDB's SQLite backend pushes an
 * `_id` equality down to its primary key only for strings and ObjectIds (numbers scan the table),
 * and MongoDB does not care.
 */
export const seededId = (i) => `doc-${i}`;

function makeBatch(start, size) {
  const docs = new Array(size);
  for (let j = 0; j < size; j++) docs[j] = makeDoc(start + j);
  return docs;
}

/** Seeds the read-only collections shared by all targets (through the direct connection). */
export async function seed(db, settings, log) {
  const find = db.collection(FIND_COLLECTION);
  for (let start = 0; start < settings.findDocs; start += BATCH) {
    const size = Math.min(BATCH, settings.findDocs - start);
    await find.insertMany(
      makeBatch(start, size).map((doc, j) => ({ _id: seededId(start + j), ...doc })),
      { ordered: false },
    );
  }
  log(`seeded ${settings.findDocs} documents for find-one`);
  await db.collection(TINY_COLLECTION).insertOne({ _id: TINY_ID, ...makeDoc(0) });
  const cursor = db.collection(CURSOR_COLLECTION);
  for (let start = 0; start < settings.cursorDocs; start += BATCH) {
    const size = Math.min(BATCH, settings.cursorDocs - start);
    await cursor.insertMany(
      makeBatch(start, size).map((doc, j) => ({ _id: seededId(start + j), ...doc })),
      { ordered: false },
    );
  }
  log(`seeded ${settings.cursorDocs} documents for the cursor`);
}

/**
 * @typedef {{ ops: number, docs: number, latenciesNs: Float64Array, wallNs: number }} RunResult
 * @typedef {{
 *   name: string, label: string, unit: 'ops' | 'docs', opLabel: string, small: boolean, concurrency: number,
 *   ops: number,        // operations in the whole measurement (split across rounds when `splittable`)
 *   splittable: boolean,
 *   warmup(db: import('mongodb').Db, target: string): Promise<void>,
 *   run?(db: import('mongodb').Db, target: string, ops: number, offset: number): Promise<RunResult>,
 *   interleaved?: boolean,     // instead of run(): open() a stepper per target, advanced in turn
 *   expectedDocs?: number,
 *   open?(db: import('mongodb').Db): { next(): Promise<{ latencyNs: number, docs: number } | null>, close(): Promise<void> },
 * }} Workload
 */

/** @returns {Workload[]} */
export function workloads(settings) {
  /**
   * Workloads the proxy does not rewrite, or barely: `ping` is neither tenant-scoped nor
   * forwarded with a filter, and a find on a one-document collection leaves FerretDB nothing to
   * scan. Their cost through a middle process is its fixed per-request overhead.
   */
  const ping = (concurrency, count) => {
    const pings = async (db, n) => {
      // On the bench database: `ping` works on any, and the proxy may not admit `admin`.
      const result = await closedLoop(n, concurrency, async () => {
        const reply = await db.command({ ping: 1 });
        if (reply.ok !== 1) throw new Error(`ping answered ${JSON.stringify(reply)}`);
      });
      return { ops: n, docs: 0, ...result };
    };
    return {
      name: `ping-c${concurrency}`,
      label: `ping, c=${concurrency}`,
      unit: 'ops',
      opLabel: 'ping',
      small: true,
      concurrency,
      ops: count,
      splittable: true,
      warmup: (db) => pings(db, Math.min(count, settings.warmupOps)).then(() => {}),
      run: (db, target, n) => pings(db, n),
    };
  };

  const findTiny = (concurrency, count) => {
    const lookup = async (db, n) => {
      const collection = db.collection(TINY_COLLECTION);
      const result = await closedLoop(n, concurrency, async () => {
        const doc = await collection.findOne({ _id: TINY_ID });
        if (doc?._id !== TINY_ID) throw new Error(`findOne({_id: '${TINY_ID}'}) returned ${JSON.stringify(doc)}`);
      });
      return { ops: n, docs: n, ...result };
    };
    return {
      name: `findTiny-c${concurrency}`,
      label: `find on a 1-doc collection, c=${concurrency}`,
      unit: 'ops',
      opLabel: 'findOne',
      small: true,
      concurrency,
      ops: count,
      splittable: true,
      warmup: (db) => lookup(db, Math.min(count, settings.warmupOps)).then(() => {}),
      run: (db, target, n) => lookup(db, n),
    };
  };

  const findOne = (concurrency, count) => {
    const lookup = async (db, n, offset) => {
      const collection = db.collection(FIND_COLLECTION);
      const result = await closedLoop(n, concurrency, async (i) => {
        // A fixed pseudo-random walk over the ids: the same sequence for every target.
        const id = seededId(((i + offset) * 7_919) % settings.findDocs);
        const doc = await collection.findOne({ _id: id });
        if (doc?._id !== id) throw new Error(`findOne({_id: '${id}'}) returned ${JSON.stringify(doc)}`);
      });
      return { ops: n, docs: n, ...result };
    };
    return {
      name: `findOne-c${concurrency}`,
      label: `find-one by _id, c=${concurrency}`,
      unit: 'ops',
      opLabel: 'findOne',
      small: true,
      concurrency,
      ops: count,
      splittable: true,
      warmup: (db) => lookup(db, Math.min(count, settings.warmupOps), 1).then(() => {}),
      run: (db, target, n, offset) => lookup(db, n, offset),
    };
  };

  const insertOne = (concurrency, count) => {
    const insert = async (db, target, n, base) => {
      const collection = db.collection(`insertOne_c${concurrency}_${target}`);
      const result = await closedLoop(
        n,
        concurrency,
        async (i, doc) => {
          const reply = await collection.insertOne(doc);
          if (!reply.acknowledged) throw new Error('insertOne was not acknowledged');
        },
        (i) => makeDoc(base + i),
      );
      return { ops: n, docs: n, ...result };
    };
    return {
      name: `insertOne-c${concurrency}`,
      label: `insertOne, c=${concurrency}`,
      unit: 'ops',
      opLabel: 'insertOne',
      small: true,
      concurrency,
      ops: count,
      splittable: true,
      warmup: (db, target) => insert(db, target, Math.min(count, settings.warmupOps), 10_000_000).then(() => {}),
      run: (db, target, n, offset) => insert(db, target, n, offset),
    };
  };

  const cursor = {
    name: 'cursor',
    label: `cursor, ${settings.cursorDocs} docs`,
    unit: 'docs',
    opLabel: `batch of ${BATCH}`,
    small: false,
    concurrency: 1,
    ops: Math.ceil(settings.cursorDocs / BATCH),
    splittable: false,
    // One full cursor per target, all open at once and advanced a batch at a time in turn, so
    // that noise from elsewhere on the machine is shared by the targets (see run.mjs).
    interleaved: true,
    expectedDocs: settings.cursorDocs,
    async warmup(db) {
      const stepper = openCursor(db, Math.min(settings.cursorDocs, 10 * BATCH));
      try {
        while (await stepper.next());
      } finally {
        await stepper.close();
      }
    },
    open: (db) => openCursor(db, 0),
  };

  /**
   * A cursor over the shared collection, advanced one batch per `next()`: the round trip (the
   * find, then each getMore) plus decoding the batch's documents, timed together.
   */
  function openCursor(db, limit) {
    // No `limit: 0`: driver 7 then sends getMore batch sizes that double (1000, 2000, 4000...).
    const options = limit > 0 ? { batchSize: BATCH, limit } : { batchSize: BATCH };
    const cursor = db.collection(CURSOR_COLLECTION).find({}, options);
    return {
      async next() {
        const started = process.hrtime.bigint();
        if (!(await cursor.hasNext())) return null; // one round trip when the buffer is empty
        const docs = cursor.readBufferedDocuments().length;
        return { latencyNs: Number(process.hrtime.bigint() - started), docs };
      },
      close: () => cursor.close(),
    };
  }

  const insertManyBatches = Math.max(1, Math.ceil(settings.insertManyDocs / BATCH));
  const insertMany = {
    name: 'insertMany',
    label: `insertMany, ${insertManyBatches * BATCH} docs`,
    unit: 'docs',
    opLabel: `batch of ${BATCH}`,
    small: false,
    concurrency: 1,
    ops: insertManyBatches,
    splittable: true,
    warmup: (db, target) => insertBatches(db, target, 2, 1_000_000).then(() => {}),
    run: (db, target, n, offset) => insertBatches(db, target, n, offset),
  };

  async function insertBatches(db, target, batches, base) {
    const collection = db.collection(`insertMany_${target}`);
    const result = await closedLoop(
      batches,
      1,
      async (i, docs) => {
        const reply = await collection.insertMany(docs);
        if (reply.insertedCount !== docs.length)
          throw new Error(`insertMany inserted ${reply.insertedCount} of ${docs.length}`);
      },
      (i) => makeBatch((base + i) * BATCH, BATCH),
    );
    return { ops: batches, docs: batches * BATCH, ...result };
  }

  return [
    ping(1, settings.opsC1),
    ping(32, settings.opsC32),
    findTiny(1, settings.opsC1),
    findOne(1, settings.opsC1),
    findOne(32, settings.opsC32),
    insertOne(1, settings.opsC1),
    insertOne(32, settings.opsC32),
    cursor,
    insertMany,
  ];
}
