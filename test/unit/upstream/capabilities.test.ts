import { describe, expect, it } from 'vitest';
import { UpstreamError } from '../../../src/errors.js';
import {
  CapabilityTracker,
  MONGODB_CAPABILITIES,
  PROBE_COLLECTION,
  PROBE_COMMENT,
  PROBE_INDEX_DATABASE,
  type ProbeRunner,
  type UpstreamCapabilities,
  probeCapabilities,
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

/** The answers the servers gave when probed by hand (issue 12). */
const FERRETDB_V1 = (_db: string, body: Document): Document | UpstreamError => {
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
  if ('find' in body && body.collation !== undefined)
    return refuse(115, 'Find with collation is not currently supported.');
  if ('find' in body && body.startTransaction === true && db === 'admin') {
    return refuse(263, 'Cannot perform data operation against database admin inside a transaction');
  }
  if ('abortTransaction' in body) return refuse(251, 'Cannot continue transaction 0');
  return ok({ cursor: { firstBatch: [] } });
};
const MONGODB_STANDALONE = (_db: string, body: Document): Document | UpstreamError => {
  if (body.startTransaction === true) {
    return refuse(20, 'Transaction numbers are only allowed on a replica set member or mongos');
  }
  return ok({ cursor: { firstBatch: [] } });
};

describe('probeCapabilities', () => {
  it('FerretDB v1: no collation, no distinct maxTimeMS, no $bsonSize, no transactions, no partial or TTL indexes', async () => {
    const { run } = server(FERRETDB_V1);
    expect(await probeCapabilities(run, { indexes: true })).toEqual({
      collation: false,
      distinctMaxTimeMS: false,
      bsonSize: false,
      transactions: false,
      partialIndexes: false,
      ttlIndexes: false,
    });
  });

  it('the DocumentDB gateway: everything but collation (transactions refused in admin only, like MongoDB)', async () => {
    const { run } = server(DOCUMENTDB_GATEWAY);
    expect(await probeCapabilities(run, { indexes: true })).toEqual({
      collation: false,
      distinctMaxTimeMS: true,
      bsonSize: true,
      transactions: true,
      partialIndexes: true,
      ttlIndexes: true,
    });
  });

  it('a MongoDB standalone: everything but transactions', async () => {
    const { run } = server(MONGODB_STANDALONE);
    expect(await probeCapabilities(run)).toEqual({ ...MONGODB_CAPABILITIES, transactions: false });
  });

  it('every probe is marked, names the probe collection and ends the session it opened; nothing is written without `indexes`', async () => {
    const { run, sent } = server(DOCUMENTDB_GATEWAY);
    await probeCapabilities(run);
    for (const { body } of sent) expect(body.comment).toBe(PROBE_COMMENT);
    const names = sent.map(({ body }) => Object.keys(body)[0]);
    expect(names).toEqual(['find', 'distinct', 'aggregate', 'find', 'endSessions']);
    for (const { body } of sent.slice(0, 4)) expect(Object.values(body)[0]).toBe(PROBE_COLLECTION);
    const lsid = sent[3]!.body.lsid as Document;
    expect(sent[4]!.body.endSessions).toEqual([lsid]);
  });

  it('the index probes drop their collection, and their database once it is empty', async () => {
    const { run, sent } = server((db, body) => {
      if ('listCollections' in body) return ok({ cursor: { firstBatch: [] } });
      return DOCUMENTDB_GATEWAY(db, body);
    });
    await probeCapabilities(run, { indexes: true });
    const writes = sent.filter(({ db }) => db === PROBE_INDEX_DATABASE).map(({ body }) => Object.keys(body)[0]);
    expect(writes).toEqual(['createIndexes', 'createIndexes', 'drop', 'drop', 'listCollections', 'dropDatabase']);
  });

  it('an inconclusive answer (not authorized) keeps what MongoDB does, and says so', async () => {
    const warnings: unknown[] = [];
    const logger = { warn: (...args: unknown[]) => warnings.push(args) } as never;
    const { run } = server(() => refuse(13, 'not authorized on admin to execute command'));
    expect(await probeCapabilities(run, { logger })).toEqual(MONGODB_CAPABILITIES);
    expect(warnings).toHaveLength(1);
  });

  it('a network failure is not an answer: the probe rejects', async () => {
    const run: ProbeRunner = async () => {
      throw new UpstreamError(6, 'connection reset', { labels: ['NetworkError'] });
    };
    await expect(probeCapabilities(run)).rejects.toThrow(/connection reset/);
  });
});

describe('CapabilityTracker', () => {
  const NO_COLLATION: UpstreamCapabilities = { ...MONGODB_CAPABILITIES, collation: false };
  it('re-probes when another server takes the writes, not when the same one comes back', async () => {
    const tracker = new CapabilityTracker();
    tracker.set('a:1', { ...MONGODB_CAPABILITIES });
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
    tracker.set('a:1', { ...MONGODB_CAPABILITIES });
    let release: (() => void) | undefined;
    const slow = new Promise<void>((resolve) => (release = resolve));
    tracker.recheck(
      'b:1',
      async () => {
        await slow;
        return { ...MONGODB_CAPABILITIES, bsonSize: false } as never;
      },
      1_000,
    );
    tracker.recheck('c:1', async () => NO_COLLATION as never, 1_000);
    release!();
    await tracker.settled();
    expect(tracker.current).toEqual(NO_COLLATION);
  });
});
