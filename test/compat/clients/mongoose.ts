/**
 * The Mongoose 9 client program, run in-process. Generic steps go through Mongoose's model API
 * (a schema-less model per collection, `strict: false`); the `odm*` steps use the scenario's
 * declared models: autoIndex (Model.init), validation, timestamps, populate, upserts with
 * findOneAndUpdate, lean and hydrated reads of a strict schema, syncIndexes.
 */
import { createRequire } from 'node:module';
import mongoose, { Schema, type Connection, type Model } from 'mongoose';
import type { ClientReport, Scenario, Step, StepOutcome } from '../scenario.js';
import { checkStrict, errorOf } from './node-driver.js';

const require = createRequire(import.meta.url);
const { EJSON } = mongoose.mongo.BSON;

interface FieldSpec {
  type: 'String' | 'Number' | 'ObjectId' | 'Date' | 'Boolean';
  [option: string]: unknown;
}

interface ModelSpec {
  collection: string;
  fields: Record<string, FieldSpec>;
  options?: Record<string, unknown>;
}

type AnyModel = Model<any>;

const TYPES = { String, Number, Date, Boolean, ObjectId: Schema.Types.ObjectId } as const;

function declaredModels(connection: Connection, scenario: Scenario): Map<string, AnyModel> {
  const models = new Map<string, AnyModel>();
  for (const [name, raw] of Object.entries(scenario.models ?? {})) {
    const spec = raw as ModelSpec;
    const definition: Record<string, unknown> = {};
    for (const [field, { type, ...options }] of Object.entries(spec.fields)) {
      definition[field] = { type: TYPES[type], ...options };
    }
    const schema = new Schema(definition, { collection: spec.collection, ...spec.options });
    models.set(name, connection.model(name, schema) as unknown as AnyModel);
  }
  return models;
}

/** A model for a collection no scenario model declares: any field, any `_id` type. */
function genericModel(connection: Connection, collection: string): AnyModel {
  const name = `generic_${collection}`;
  if (connection.models[name]) return connection.models[name] as AnyModel;
  const schema = new Schema(
    { _id: Schema.Types.Mixed },
    { collection, strict: false, versionKey: false, autoIndex: false, autoCreate: false },
  );
  return connection.model(name, schema) as unknown as AnyModel;
}

export async function runMongoose(
  uri: string,
  dbName: string,
  scenario: Scenario,
  steps: Step[],
): Promise<ClientReport> {
  const connection = mongoose.createConnection(uri, { dbName, serverSelectionTimeoutMS: 10_000 });
  // An autoIndex failure is reported by the odmInit step (Model.init rejects); Mongoose also emits it here.
  connection.on('error', () => undefined);
  const outcomes: StepOutcome[] = [];
  try {
    await connection.asPromise();
    const models = declaredModels(connection, scenario);
    for (const raw of steps) {
      const step = EJSON.parse(JSON.stringify(raw), { relaxed: true }) as Step;
      try {
        const result = await runStep(connection, dbName, models, step);
        outcomes.push({ id: step.id, ok: true, result: EJSON.serialize({ r: result }, { relaxed: false }).r });
      } catch (error) {
        outcomes.push({ id: step.id, ok: false, error: errorOf(error) });
      }
    }
  } finally {
    await connection.close();
  }
  return {
    client: 'mongoose',
    version: `mongoose ${(require('mongoose/package.json') as { version: string }).version}`,
    steps: outcomes,
  };
}

async function runStep(
  connection: Connection,
  dbName: string,
  models: Map<string, AnyModel>,
  step: Step,
): Promise<unknown> {
  const a = step as Step & Record<string, any>;
  const M = (): AnyModel => {
    if (a.model !== undefined) {
      const model = models.get(String(a.model));
      if (!model) throw new Error(`scenario: no model ${String(a.model)}`);
      return model;
    }
    return genericModel(connection, String(a.collection));
  };
  const updateCounts = (r: any) => ({
    matchedCount: r.matchedCount,
    modifiedCount: r.modifiedCount,
    upsertedCount: r.upsertedCount,
    upsertedId: r.upsertedId ?? null,
  });
  switch (step.op) {
    case 'insertOne': {
      // lean: the schema-less model lets the driver generate a missing _id, as an application's would.
      const [doc] = await M().insertMany([a.document], { lean: true });
      return { insertedId: (doc as any)._id };
    }
    case 'insertMany': {
      const docs = await M().insertMany(a.documents, { ordered: a.ordered ?? true, lean: true });
      return { insertedCount: docs.length, insertedIds: docs.map((d: any) => d._id) };
    }
    case 'find':
    case 'findStrict': {
      let query = M().find(a.filter ?? {}, a.projection ?? undefined);
      if (a.sort) query = query.sort(a.sort);
      if (a.skip !== undefined) query = query.skip(a.skip);
      if (a.limit !== undefined) query = query.limit(a.limit);
      if (a.comment !== undefined) query = query.comment(a.comment);
      const docs = await query.lean();
      if (step.op === 'findStrict') checkStrict(docs as any[], a.allowedFields);
      return docs;
    }
    case 'findOne':
      return M()
        .findOne(a.filter ?? {}, a.projection ?? undefined)
        .lean();
    case 'countDocuments':
      return M().countDocuments(a.filter ?? {});
    case 'estimatedDocumentCount':
      return M().estimatedDocumentCount();
    case 'distinct':
      return M().distinct(a.field, a.filter ?? {});
    case 'aggregate':
      return M().aggregate(a.pipeline);
    case 'updateOne':
    case 'updateMany': {
      const options = {
        ...(a.upsert !== undefined && { upsert: a.upsert }),
        ...(a.arrayFilters && { arrayFilters: a.arrayFilters }),
        ...(Array.isArray(a.update) && { updatePipeline: true }),
      };
      const r =
        step.op === 'updateOne'
          ? await M().updateOne(a.filter, a.update, options)
          : await M().updateMany(a.filter, a.update, options);
      return updateCounts(r);
    }
    case 'replaceOne':
      return updateCounts(
        await M().replaceOne(a.filter, a.replacement, { ...(a.upsert !== undefined && { upsert: a.upsert }) }),
      );
    case 'deleteOne':
      return { deletedCount: (await M().deleteOne(a.filter)).deletedCount };
    case 'deleteMany':
      return { deletedCount: (await M().deleteMany(a.filter)).deletedCount };
    case 'findOneAndUpdate':
    case 'findOneAndReplace':
    case 'findOneAndDelete': {
      const options = {
        lean: true,
        ...(a.upsert !== undefined && { upsert: a.upsert }),
        ...(a.returnDocument && { returnDocument: a.returnDocument }),
        ...(a.projection && { projection: a.projection }),
        ...(a.sort && { sort: a.sort }),
      };
      if (step.op === 'findOneAndUpdate') return M().findOneAndUpdate(a.filter, a.update, options);
      if (step.op === 'findOneAndReplace') return M().findOneAndReplace(a.filter, a.replacement, options);
      return M().findOneAndDelete(a.filter, options);
    }
    case 'bulkWrite': {
      const r: any = await M().bulkWrite(a.requests, { ordered: a.ordered ?? true });
      return {
        insertedCount: r.insertedCount,
        matchedCount: r.matchedCount,
        modifiedCount: r.modifiedCount,
        deletedCount: r.deletedCount,
        upsertedCount: r.upsertedCount,
        upsertedIds: Object.values(r.upsertedIds ?? {}),
      };
    }
    case 'createIndex':
      return M().collection.createIndex(a.keys, a.options ?? {});
    case 'listIndexes':
      return (await M().listIndexes())
        .map((index: any) => ({ key: index.key, name: index.name, unique: index.unique === true }))
        .sort((x: any, y: any) => String(x.name).localeCompare(String(y.name)));
    case 'listCollections':
      return (await connection.db!.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
    case 'runCommand':
      return connection
        .getClient()
        .db(a.db ?? dbName)
        .command(a.command);

    case 'odmInit':
      // autoIndex: init() resolves once the schema's indexes are built, rejects when that fails.
      await Promise.all([...models.values()].map((model) => model.init()));
      return 'initialized';
    case 'odmCreate': {
      const docs = await M().create(a.documents);
      return docs.map((doc: any) => doc.toObject());
    }
    case 'odmFind': {
      let query: any = M().find(a.filter ?? {});
      if (a.sort) query = query.sort(a.sort);
      if (a.populate) query = query.populate(a.populate);
      if (a.lean) return query.lean();
      // Hydrated documents: what the application sees, and any field its schema does not know.
      const schema = M().schema;
      return (await query).map((doc: any) => {
        const object = doc.toObject();
        return { doc: object, unknownFields: Object.keys(object).filter((key) => schema.path(key) === undefined) };
      });
    }
    case 'odmFindOneAndUpdate':
      return M().findOneAndUpdate(a.filter, a.update, { ...a.options, lean: true });
    case 'odmUpdateOne':
      return updateCounts(await M().updateOne(a.filter, a.update, a.options ?? {}));
    case 'odmCount':
      return M().countDocuments(a.filter ?? {});
    case 'odmSyncIndexes':
      return M().syncIndexes();
    default:
      throw new Error(`scenario: unknown op ${step.op}`);
  }
}
