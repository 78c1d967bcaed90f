/**
 * The Node driver client program (driver 7 as `mongodb`, driver 6 as `mongodb6`), run in-process:
 * it interprets a scenario's steps with the driver's public API, as an application would, and
 * reports each step's result as canonical Extended JSON (the driver's own BSON library).
 */
import { createRequire } from 'node:module';
import * as mongodb7 from 'mongodb';
import * as mongodb6 from 'mongodb6';
import type { ClientReport, Step, StepError, StepOutcome } from '../scenario.js';

/* The two majors have the same API shape for everything used here; their BSON classes differ
   (a value of one cannot be serialized by the other), so each step is parsed with its own. */
type Driver = typeof mongodb7;
type Db = mongodb7.Db;
type Document = mongodb7.Document;

const require = createRequire(import.meta.url);

export class StrictSchemaError extends Error {
  override name = 'StrictSchemaError';
}

export async function runNodeDriver(major: 6 | 7, uri: string, dbName: string, steps: Step[]): Promise<ClientReport> {
  const driver = (major === 7 ? mongodb7 : mongodb6) as unknown as Driver;
  const { EJSON } = driver.BSON;
  const client = new driver.MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
  const outcomes: StepOutcome[] = [];
  try {
    await client.connect();
    const db = client.db(dbName);
    for (const raw of steps) {
      // Relaxed Extended JSON in, this driver's BSON values out.
      const step = EJSON.parse(JSON.stringify(raw), { relaxed: true }) as Step;
      try {
        const result = await runStep(client, db, step);
        outcomes.push({ id: step.id, ok: true, result: EJSON.serialize({ r: result }, { relaxed: false }).r });
      } catch (error) {
        outcomes.push({ id: step.id, ok: false, error: errorOf(error) });
      }
    }
  } finally {
    await client.close();
  }
  const pkg = require(major === 7 ? 'mongodb/package.json' : 'mongodb6/package.json') as { version: string };
  return { client: `node${major}`, version: `mongodb ${pkg.version}`, steps: outcomes };
}

async function runStep(client: mongodb7.MongoClient, db: Db, step: Step): Promise<unknown> {
  const a = step as Step & Record<string, any>;
  const coll = () => db.collection(String(a.collection));
  switch (step.op) {
    case 'insertOne': {
      const options =
        a.bypassDocumentValidation === undefined ? {} : { bypassDocumentValidation: a.bypassDocumentValidation };
      return { insertedId: (await coll().insertOne(a.document, options)).insertedId };
    }
    case 'insertMany': {
      const r = await coll().insertMany(a.documents, { ordered: a.ordered ?? true });
      return { insertedCount: r.insertedCount, insertedIds: Object.values(r.insertedIds) };
    }
    case 'find':
    case 'findStrict': {
      const docs = await coll()
        .find(a.filter ?? {}, {
          ...(a.sort && { sort: a.sort }),
          ...(a.projection && { projection: a.projection }),
          ...(a.limit !== undefined && { limit: a.limit }),
          ...(a.skip !== undefined && { skip: a.skip }),
          ...(a.comment !== undefined && { comment: a.comment }),
        })
        .toArray();
      if (step.op === 'findStrict') checkStrict(docs, a.allowedFields as string[]);
      return docs;
    }
    case 'findOne':
      return coll().findOne(a.filter ?? {}, { ...(a.projection && { projection: a.projection }) });
    case 'countDocuments':
      return coll().countDocuments(a.filter ?? {});
    case 'estimatedDocumentCount':
      return coll().estimatedDocumentCount();
    case 'distinct':
      return coll().distinct(a.field, a.filter ?? {});
    case 'aggregate':
      return coll().aggregate(a.pipeline).toArray();
    case 'updateOne':
    case 'updateMany':
    case 'replaceOne': {
      const options = {
        ...(a.upsert !== undefined && { upsert: a.upsert }),
        ...(a.arrayFilters && { arrayFilters: a.arrayFilters }),
      };
      const r =
        step.op === 'replaceOne'
          ? await coll().replaceOne(a.filter, a.replacement, options)
          : step.op === 'updateOne'
            ? await coll().updateOne(a.filter, a.update, options)
            : await coll().updateMany(a.filter, a.update, options);
      return {
        matchedCount: r.matchedCount,
        modifiedCount: r.modifiedCount,
        upsertedCount: r.upsertedCount,
        upsertedId: r.upsertedId ?? null,
      };
    }
    case 'deleteOne':
      return { deletedCount: (await coll().deleteOne(a.filter)).deletedCount };
    case 'deleteMany':
      return { deletedCount: (await coll().deleteMany(a.filter)).deletedCount };
    case 'findOneAndUpdate':
    case 'findOneAndReplace':
    case 'findOneAndDelete': {
      const options = {
        includeResultMetadata: false as const,
        ...(a.upsert !== undefined && { upsert: a.upsert }),
        ...(a.returnDocument && { returnDocument: a.returnDocument }),
        ...(a.projection && { projection: a.projection }),
        ...(a.sort && { sort: a.sort }),
      };
      if (step.op === 'findOneAndUpdate') return coll().findOneAndUpdate(a.filter, a.update, options);
      if (step.op === 'findOneAndReplace') return coll().findOneAndReplace(a.filter, a.replacement, options);
      return coll().findOneAndDelete(a.filter, options);
    }
    case 'bulkWrite': {
      const r = await coll().bulkWrite(a.requests, { ordered: a.ordered ?? true });
      return bulkResult(r);
    }
    case 'createIndex':
      return coll().createIndex(a.keys, a.options ?? {});
    case 'listIndexes':
      return (await coll().listIndexes().toArray())
        .map((index) => ({ key: index.key, name: index.name, unique: index.unique === true }))
        .sort((x, y) => String(x.name).localeCompare(String(y.name)));
    case 'listCollections':
      return (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
    case 'runCommand':
      return (a.db ? client.db(a.db) : db).command(a.command);
    default:
      throw new Error(`scenario: unknown op ${step.op}`);
  }
}

function bulkResult(r: mongodb7.BulkWriteResult): Document {
  return {
    insertedCount: r.insertedCount,
    matchedCount: r.matchedCount,
    modifiedCount: r.modifiedCount,
    deletedCount: r.deletedCount,
    upsertedCount: r.upsertedCount,
    upsertedIds: Object.values(r.upsertedIds),
  };
}

/** What an application with a closed schema does with a document carrying an unknown field. */
export function checkStrict(docs: Document[], allowed: string[]): void {
  for (const doc of docs) {
    const extra = Object.keys(doc).filter((key) => !allowed.includes(key));
    if (extra.length > 0) throw new StrictSchemaError(`unexpected fields: ${extra.sort().join(', ')}`);
  }
}

export function errorOf(error: unknown): StepError {
  const e = error as {
    code?: unknown;
    codeName?: unknown;
    name?: string;
    message?: string;
    writeErrors?: { index: number; code: number }[];
  };
  const writeErrors = Array.isArray(e.writeErrors)
    ? e.writeErrors.map((w) => ({ index: w.index, code: w.code }))
    : undefined;
  const out: StepError = { message: String(e.message ?? error) };
  const code = typeof e.code === 'number' ? e.code : writeErrors?.[0]?.code;
  if (code !== undefined) out.code = code;
  else out.name = e.name ?? 'Error';
  if (typeof e.codeName === 'string') out.codeName = e.codeName;
  if (writeErrors && writeErrors.length > 0) out.writeErrors = writeErrors;
  return out;
}
