import { describe, expect, it } from 'vitest';
import { UpstreamError } from '../../../src/errors.js';
import {
  CapabilityTracker,
  FALLBACK_CAPABILITIES,
  PROBE_COLLECTION,
  PROBE_COMMENT,
  PROBE_DATABASE,
  type ProbeRunner,
  type UpstreamCapabilities,
  probeCapabilities,
  upsertProbeVerdict,
} from '../../../src/upstream/capabilities.js';
import type { Document } from '../../../src/wire/bson.js';

const ok = (extra: Document = {}): Document => ({ ok: 1, ...extra });
const refuse = (code: number, errmsg: string) => new UpstreamError(code, `upstream command failed: ${errmsg}`);

/** A runner answering like a server; records every command with its database. */
function server(answer: (db: string, body: Document) => Document | UpstreamError) {
  const sent: Array<{ db: string; body: Document }> = [];
  const run: ProbeRunner = async (db, body) => {
    sent.push({ db, body });
    const reply = answer(db, body);
    if (reply instanceof UpstreamError) throw reply;
    return reply;
  };
  return { run, sent };
}

/**
 * The upsert probe's read-back: what a server stored for `{$and: [{_id: <collection>}, {k: 1}]}`
 * with `$set: {v: 1}`, deriving the `$and`'s fields or not.
 */
const readBack = (body: Document, derives: boolean): Document | undefined => {
  if (!('find' in body) || body.collation !== undefined || body.startTransaction !== undefined) return undefined;
  const stored = derives ? { _id: body.find, k: 1, v: 1 } : { _id: 'an ObjectId', v: 1 };
  return ok({ cursor: { firstBatch: [stored] } });
};

/** The answers the servers gave when probed by hand (issue 12). */
const FERRETDB_V1 = (_db: string, body: Document): Document | UpstreamError => {
  const stored = readBack(body, false); // top-level equalities only
  if (stored !== undefined) return stored;
  if ('find' in body && body.collation !== undefined)
    return refuse(238, 'support for field "collation" is not implemented yet');
  if ('distinct' in body) return refuse(9, 'distinct: unknown field "maxTimeMS"');
  if ('aggregate' in body)
    return refuse(238, 'Invalid $project :: caused by :: The operator $bsonSize is not implemented yet');
  if ('abortTransaction' in body || 'endSessions' in body) return refuse(59, 'no such command');
  if ('createIndexes' in body) {
    const [index] = body.indexes as Document[];
    return refuse(
      238,
      `support for field "${index!.partialFilterExpression ? 'partialFilterExpression' : 'expireAfterSeconds'}" is not implemented yet`,
    );
  }
  return ok({ cursor: { firstBatch: [] } });
};
const DOCUMENTDB_GATEWAY = (db: string, body: Document): Document | UpstreamError => {
  const stored = readBack(body, true);
  if (stored !== undefined) return stored;
  if ('find' in body && body.collation !== undefined)
    return refuse(115, 'Find with collation is not currently supported.');
  if ('find' in body && body.startTransaction === true && db === 'admin') {
    return refuse(263, 'Cannot perform data operation against database admin inside a transaction');
  }
  if ('abortTransaction' in body) return refuse(251, 'Cannot continue transaction 0');
  return ok({ cursor: { firstBatch: [] } });
};
const MONGODB_STANDALONE = (_db: string, body: Document): Document | UpstreamError => {
  const stored = readBack(body, true);
  if (stored !== undefined) return stored;
  if (body.startTransaction === true) {
    return refuse(20, 'Transaction numbers are only allowed on a replica set member or mongos');
  }
  return ok({ cursor: { firstBatch: [] } });
};

describe('probeCapabilities', () => {
  it('FerretDB v1: no collation, no distinct maxTimeMS, no $bsonSize, no transactions, no upsert fields from $and, no partial or TTL indexes', async () => {
    const { run } = server(FERRETDB_V1);
    expect(await probeCapabilities(run, { ttl: true })).toEqual({
      collation: false,
      distinctMaxTimeMS: false,
      bsonSize: false,
      transactions: false,
      upsertFieldsFromAnd: false,
      partialIndexes: false,
      ttlIndexes: false,
    });
  });

  it('the DocumentDB gateway: everything but collation (transactions refused in admin only, like MongoDB)', async () => {
    const { run } = server(DOCUMENTDB_GATEWAY);
    expect(await probeCapabilities(run, { ttl: true })).toEqual({
      collation: false,
      distinctMaxTimeMS: true,
      bsonSize: true,
      transactions: true,
      upsertFieldsFromAnd: true,
      partialIndexes: true,
      ttlIndexes: true,
    });
  });

  it('a MongoDB standalone: everything but transactions', async () => {
    const { run } = server(MONGODB_STANDALONE);
    expect(await probeCapabilities(run)).toEqual({
      ...FALLBACK_CAPABILITIES,
      transactions: false,
      upsertFieldsFromAnd: true,
      partialIndexes: true,
    });
  });

  it('every probe is marked; the read probes name the probe collection and end the session they opened; only the write probes write, in the probe database', async () => {
    const { run, sent } = server(DOCUMENTDB_GATEWAY);
    await probeCapabilities(run);
    for (const { body } of sent) expect(body.comment).toBe(PROBE_COMMENT);
    const reads = sent.filter(({ db }) => db === 'admin');
    expect(reads.map(({ body }) => Object.keys(body)[0])).toEqual([
      'find',
      'distinct',
      'aggregate',
      'find',
      'endSessions',
    ]);
    for (const { body } of reads.slice(0, 4)) expect(Object.values(body)[0]).toBe(PROBE_COLLECTION);
    expect(reads[4]!.body.endSessions).toEqual([reads[3]!.body.lsid as Document]);
    const writes = sent.filter(({ db }) => db !== 'admin');
    expect(writes.every(({ db }) => db === PROBE_DATABASE)).toBe(true);
    expect(writes.map(({ body }) => Object.keys(body)[0])).toEqual([
      'update',
      'find',
      'createIndexes',
      'drop',
      'drop',
      'listCollections',
      'dropDatabase',
    ]);
  });

  it('the upsert probe: an $and of its own _id (the new collection) and k, read back, dropped with its collection', async () => {
    const { run, sent } = server(DOCUMENTDB_GATEWAY);
    await probeCapabilities(run);
    const upsert = sent.find(({ body }) => 'update' in body)!.body;
    const collection = upsert.update as string;
    expect(collection).toMatch(/^probe_[0-9a-f]{12}_upsert$/);
    expect(upsert.updates).toEqual([
      { q: { $and: [{ _id: collection }, { k: 1 }] }, u: { $set: { v: 1 } }, upsert: true },
    ]);
    expect(sent.some(({ body }) => body.find === collection)).toBe(true);
    expect(sent.some(({ body }) => body.drop === collection)).toBe(true);
  });

  it('the write probes drop their collections, and their database once it is empty (not while another proxy probes in it)', async () => {
    const { run, sent } = server(DOCUMENTDB_GATEWAY);
    await probeCapabilities(run, { ttl: true });
    const writes = sent.filter(({ db }) => db === PROBE_DATABASE).map(({ body }) => Object.keys(body)[0]);
    expect(writes).toEqual([
      'update',
      'find',
      'createIndexes',
      'createIndexes',
      'drop',
      'drop',
      'drop',
      'listCollections',
      'dropDatabase',
    ]);
    const busy = server((db, body) => {
      if ('listCollections' in body) return ok({ cursor: { firstBatch: [{ name: 'probe_0123456789ab_upsert' }] } });
      return DOCUMENTDB_GATEWAY(db, body);
    });
    await probeCapabilities(busy.run);
    expect(busy.sent.some(({ body }) => 'dropDatabase' in body)).toBe(false);
  });

  it("in the catalogue database (what main passes): only the probes' own collections are dropped, never the database", async () => {
    const { run, sent } = server(DOCUMENTDB_GATEWAY);
    const capabilities = await probeCapabilities(run, { writeDatabase: 'mongo_tenant_proxy' });
    expect(capabilities.upsertFieldsFromAnd).toBe(true);
    expect(capabilities.partialIndexes).toBe(true);
    expect(sent.some(({ db }) => db === PROBE_DATABASE)).toBe(false);
    const writes = sent.filter(({ db }) => db === 'mongo_tenant_proxy').map(({ body }) => Object.keys(body)[0]);
    expect(writes).toEqual(['update', 'find', 'createIndexes', 'drop', 'drop']);
    for (const { db, body } of sent.filter(({ body }) => 'drop' in body)) {
      expect(db).toBe('mongo_tenant_proxy');
      expect(String(body.drop)).toMatch(/^probe_[0-9a-f]{12}_(upsert|partial)$/);
    }
  });

  it('CapabilityTracker: start and failover probes use the same write database', () => {
    expect(new CapabilityTracker(undefined, 'cat').probeOptions(250)).toEqual({
      timeoutMS: 250,
      logger: undefined,
      writeDatabase: 'cat',
    });
    expect(new CapabilityTracker().probeOptions(250)).not.toHaveProperty('writeDatabase');
  });

  it('an inconclusive answer (not authorized) keeps the fallback, and says so', async () => {
    const warnings: unknown[] = [];
    const logger = { warn: (...args: unknown[]) => warnings.push(args) } as never;
    const { run } = server(() => refuse(13, 'not authorized on admin to execute command'));
    expect(await probeCapabilities(run, { logger })).toEqual(FALLBACK_CAPABILITIES);
    expect(warnings).toHaveLength(1);
  });

  it('a user that may read but not write (the write probes refused): the proxy derives upsert fields itself, partial indexes are left to the server', async () => {
    const warnings: Document[] = [];
    const logger = { warn: (fields: Document) => warnings.push(fields) } as never;
    const { run } = server((db, body) =>
      db === PROBE_DATABASE && !('listCollections' in body)
        ? refuse(13, `not authorized on ${PROBE_DATABASE} to execute command`)
        : MONGODB_STANDALONE(db, body),
    );
    const capabilities = await probeCapabilities(run, { logger });
    expect(capabilities).toMatchObject({ upsertFieldsFromAnd: false, partialIndexes: true, collation: true });
    expect(Object.keys(warnings[0]!.inconclusive as Document)).toEqual(['upsertFieldsFromAnd', 'partialIndexes']);
  });

  it('a network failure is not an answer: the probe rejects', async () => {
    const run: ProbeRunner = async () => {
      throw new UpstreamError(6, 'connection reset', { labels: ['NetworkError'] });
    };
    await expect(probeCapabilities(run)).rejects.toThrow(/connection reset/);
  });
});

describe('upsertProbeVerdict: what the upsert probe read back means', () => {
  const coll = 'probe_0123456789ab_upsert';
  it('yes only when the stored document has both the _id and k of the $and', () => {
    expect(upsertProbeVerdict([{ _id: coll, k: 1, v: 1 }], coll).outcome).toBe('yes');
    expect(upsertProbeVerdict([{ k: 1, v: 1, _id: coll }], coll).outcome).toBe('yes');
  });

  it('no when either is missing or differs (FerretDB v1: a new ObjectId and no k)', () => {
    expect(upsertProbeVerdict([{ _id: 'an ObjectId', v: 1 }], coll).outcome).toBe('no');
    expect(upsertProbeVerdict([{ _id: coll, v: 1 }], coll).outcome).toBe('no');
    expect(upsertProbeVerdict([{ _id: 'an ObjectId', k: 1, v: 1 }], coll).outcome).toBe('no');
    expect(upsertProbeVerdict([{ _id: coll, k: 2, v: 1 }], coll).outcome).toBe('no');
  });

  it('inconclusive when the upsert left no document, several, or one without its update', () => {
    expect(upsertProbeVerdict([], coll).outcome).toBe('inconclusive');
    expect(upsertProbeVerdict([{ _id: coll, k: 1, v: 1 }, { _id: 2 }], coll).outcome).toBe('inconclusive');
    expect(upsertProbeVerdict([{ _id: coll, k: 1 }], coll).outcome).toBe('inconclusive');
  });
});

describe('CapabilityTracker', () => {
  const NO_COLLATION: UpstreamCapabilities = { ...FALLBACK_CAPABILITIES, collation: false };
  it('re-probes when another server takes the writes, not when the same one comes back', async () => {
    const tracker = new CapabilityTracker();
    tracker.set('a:1', { ...FALLBACK_CAPABILITIES });
    // The borrow callback stands in for the pool and the probe: it answers for the new server.
    const probed: string[] = [];
    const recheck = (server: string, caps: UpstreamCapabilities) => {
      probed.push(server);
      tracker.recheck(server, async () => caps as never, 1_000);
    };
    recheck('a:1', NO_COLLATION);
    await tracker.settled();
    expect(tracker.current.collation).toBe(true); // same server: not probed again
    recheck('b:1', NO_COLLATION);
    await tracker.settled();
    expect(tracker.current).toEqual(NO_COLLATION);
    expect(probed).toEqual(['a:1', 'b:1']);
  });

  it('keeps the previous answer when the re-check fails', async () => {
    const tracker = new CapabilityTracker();
    tracker.set('a:1', NO_COLLATION);
    tracker.recheck(
      'b:1',
      async () => {
        throw new Error('no connection');
      },
      1_000,
    );
    await tracker.settled();
    expect(tracker.current).toEqual(NO_COLLATION);
  });

  it('follows the newest server when a second failover happens during a re-check', async () => {
    const tracker = new CapabilityTracker();
    tracker.set('a:1', { ...FALLBACK_CAPABILITIES });
    let release: (() => void) | undefined;
    const slow = new Promise<void>((resolve) => (release = resolve));
    tracker.recheck(
      'b:1',
      async () => {
        await slow;
        return { ...FALLBACK_CAPABILITIES, bsonSize: false } as never;
      },
      1_000,
    );
    tracker.recheck('c:1', async () => NO_COLLATION as never, 1_000);
    release!();
    await tracker.settled();
    expect(tracker.current).toEqual(NO_COLLATION);
  });
});
