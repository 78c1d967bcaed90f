// What the shared test upstream can do, asked once per run by global-setup.ts so that tests are
// gated on what the server does (`lacks('views', …)` in upstream.ts), not on its name. The
// proxy's own probe (src/upstream/capabilities.ts, with the TTL probe) gives the first fields,
// through the proxy's own upstream code; the rest are test-only features, each tried the way the
// tests that need it use it, in a scratch database dropped at the end.
import { ProxyError } from '../../src/errors.js';
import { type UpstreamCapabilities, probeConnection } from '../../src/upstream/capabilities.js';
import { runCommand } from '../../src/upstream/handshake.js';
import { Upstream } from '../../src/upstream/upstream.js';
import type { Document } from '../../src/wire/bson.js';

export interface UpstreamFeatures extends Required<UpstreamCapabilities> {
  /** Views (`create` with viewOn). */
  views: boolean;
  /** `$lookup` with localField/foreignField. */
  lookup: boolean;
  /** `$lookup` with a sub-pipeline. */
  lookupPipeline: boolean;
  graphLookup: boolean;
  unionWith: boolean;
  facet: boolean;
  /** The `$documents` stage (aggregate: 1). */
  documents: boolean;
  /** The `$geoNear` stage on a 2d index with legacy coordinate pairs. */
  geoNear: boolean;
  /** `$near` with a GeoJSON point on a 2dsphere index. */
  nearQuery: boolean;
  /** `$text` on a compound text index. */
  text: boolean;
  /** The `$jsonSchema` query operator. */
  jsonSchema: boolean;
  /** `$expr` with field paths, `$eq`/`$ne`/`$or` in find and update filters. */
  expr: boolean;
  /** Updates whose `u` is a pipeline. */
  pipelineUpdates: boolean;
  /** The MongoDB 8.0 `bulkWrite` command. */
  bulkWrite: boolean;
  /** A backtracking regular expression runs into maxTimeMS (a linear-time engine never does). */
  backtrackingRegex: boolean;
  /** findAndModify with `hint` (DocumentDB: "findAndModify.hint is not implemented yet"). */
  findAndModifyHint: boolean;
}

/** Connects to `uri` with the proxy's own upstream code and asks it everything above. */
export async function probeFeatures(uri: string): Promise<UpstreamFeatures> {
  const upstream = new Upstream({ uri, connectTimeoutMS: 30_000, maxIdleConnections: 1, idleTimeoutMS: 0 });
  try {
    await upstream.start();
    const connection = await upstream.acquire();
    try {
      const run = (db: string, command: Document): Promise<Document> => runCommand(connection, db, command);
      const capabilities = await probeConnection(connection, { ttl: true, timeoutMS: 60_000 });
      return { ...(capabilities as Required<UpstreamCapabilities>), ...(await testFeatures(run)) };
    } finally {
      upstream.release(connection);
    }
  } finally {
    await upstream.close();
  }
}

type Run = (db: string, command: Document) => Promise<Document>;

async function testFeatures(run: Run): Promise<Omit<UpstreamFeatures, keyof UpstreamCapabilities>> {
  const db = `mtp_features_${process.pid.toString(36)}_${Date.now().toString(36)}`;
  /** true when the command succeeds; false when the server refuses it. */
  const works = async (command: Document, where = db): Promise<boolean> => {
    try {
      await run(where, command);
      return true;
    } catch (error) {
      if (ProxyError.is(error) && error.labels.includes('NetworkError')) throw error;
      return false;
    }
  };
  const aggregate = (pipeline: Document[]): Promise<boolean> => works({ aggregate: 'things', pipeline, cursor: {} });
  try {
    await run(db, { insert: 'things', documents: [{ _id: 1, a: 1, t: 'x' }] });
    await run(db, { insert: 'other', documents: [{ _id: 1, b: 1 }] });
    const features = {
      views: await works({ create: 'view', viewOn: 'things', pipeline: [] }),
      lookup: await aggregate([{ $lookup: { from: 'other', localField: 'a', foreignField: 'b', as: 'j' } }]),
      lookupPipeline: await aggregate([{ $lookup: { from: 'other', pipeline: [{ $match: {} }], as: 'j' } }]),
      graphLookup: await aggregate([
        { $graphLookup: { from: 'other', startWith: '$a', connectFromField: 'b', connectToField: 'b', as: 'g' } },
      ]),
      unionWith: await aggregate([{ $unionWith: 'other' }]),
      facet: await aggregate([{ $facet: { all: [{ $match: {} }] } }]),
      documents: await works({ aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }], cursor: {} }),
      geoNear: await geoNear(run, db),
      nearQuery: await nearQuery(run, db),
      text: await text(run, db),
      jsonSchema: await works({ find: 'things', filter: { $jsonSchema: { required: ['a'] } } }),
      expr: await expr(run, db),
      pipelineUpdates: await works({ update: 'things', updates: [{ q: { _id: 1 }, u: [{ $set: { p: 1 } }] }] }),
      bulkWrite: await works(
        {
          bulkWrite: 1,
          ops: [{ update: 0, filter: { _id: 1 }, updateMods: { $set: { bw: 1 } } }],
          nsInfo: [{ ns: `${db}.things` }],
        },
        'admin',
      ),
      backtrackingRegex: await backtrackingRegex(run, db),
      findAndModifyHint: await works({
        findAndModify: 'things',
        query: { _id: 1 },
        update: { $set: { h: 1 } },
        hint: { _id: 1 },
      }),
    };
    return features;
  } finally {
    await run(db, { dropDatabase: 1 }).catch(() => undefined);
  }
}

const firstBatch = (reply: Document): Document[] => ((reply.cursor as Document).firstBatch as Document[]) ?? [];

async function tryOr<T>(attempt: () => Promise<T>, otherwise: T): Promise<T> {
  try {
    return await attempt();
  } catch (error) {
    if (ProxyError.is(error) && error.labels.includes('NetworkError')) throw error;
    return otherwise;
  }
}

function geoNear(run: Run, db: string): Promise<boolean> {
  return tryOr(async () => {
    // Index first: DocumentDB builds indexes of a new collection at once, others in a pg_cron job.
    await run(db, { createIndexes: 'places', indexes: [{ key: { loc: '2d' }, name: 'loc_2d' }] });
    await run(db, { insert: 'places', documents: [{ _id: 1, loc: [0, 0] }] });
    const reply = await run(db, {
      aggregate: 'places',
      pipeline: [{ $geoNear: { near: [0, 0], distanceField: 'd', query: { _id: 1 } } }],
      cursor: {},
    });
    return firstBatch(reply).length === 1;
  }, false);
}

function nearQuery(run: Run, db: string): Promise<boolean> {
  return tryOr(async () => {
    await run(db, { createIndexes: 'spheres', indexes: [{ key: { loc: '2dsphere' }, name: 'loc_sphere' }] });
    await run(db, { insert: 'spheres', documents: [{ _id: 1, loc: { type: 'Point', coordinates: [0, 0] } }] });
    const reply = await run(db, {
      find: 'spheres',
      filter: { loc: { $near: { $geometry: { type: 'Point', coordinates: [0, 0] }, $maxDistance: 1000 } } },
    });
    return firstBatch(reply).length === 1;
  }, false);
}

function text(run: Run, db: string): Promise<boolean> {
  return tryOr(async () => {
    await run(db, { createIndexes: 'texts', indexes: [{ key: { t: 1, words: 'text' }, name: 'words_text' }] });
    await run(db, { insert: 'texts', documents: [{ _id: 1, t: 'x', words: 'some secret words' }] });
    const reply = await run(db, {
      aggregate: 'texts',
      pipeline: [{ $match: { t: 'x', $text: { $search: 'secret' } } }],
      cursor: {},
    });
    return firstBatch(reply).length === 1;
  }, false);
}

function expr(run: Run, db: string): Promise<boolean> {
  return tryOr(async () => {
    const found = await run(db, { find: 'things', filter: { $expr: { $eq: ['$a', 1] } } });
    const either = await run(db, {
      aggregate: 'things',
      pipeline: [{ $match: { $expr: { $or: [{ $ne: ['$t', 'x'] }, true] } } }],
      cursor: {},
    });
    const updated = await run(db, {
      update: 'things',
      updates: [{ q: { $expr: { $ne: ['$t', 'x'] } }, u: { $set: { e: 1 } }, multi: true }],
    });
    return firstBatch(found).length === 1 && firstBatch(either).length === 1 && updated.n === 0;
  }, false);
}

function backtrackingRegex(run: Run, db: string): Promise<boolean> {
  return tryOr(async () => {
    // ~2^22 backtracking steps per document: seconds for 40 of them, unless the engine is linear.
    const documents = Array.from({ length: 40 }, (_, i) => ({ _id: i, name: `${'a'.repeat(22)}!` }));
    await run(db, { insert: 'regex', documents });
    try {
      await run(db, { find: 'regex', filter: { name: { $regex: '^(a+)+$' } }, maxTimeMS: 300 });
      return false;
    } catch (error) {
      return ProxyError.is(error) && error.code === 50; // MaxTimeMSExpired
    }
  }, false);
}
