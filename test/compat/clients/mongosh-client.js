// The mongosh client program: `mongosh --quiet --norc <uri> --file mongosh-client.js`, with
// MTP_COMPAT_DB and MTP_COMPAT_SCENARIO in the environment. It runs the scenario's steps with the
// shell's own collection API (what a person or a shell script would type) and prints one report
// line, `@@compat-report@@` followed by JSON whose results are canonical Extended JSON.
/* global db, EJSON, version, require, process, print */
const fs = require('fs');

const CLIENT = 'mongosh';
const scenario = JSON.parse(fs.readFileSync(process.env.MTP_COMPAT_SCENARIO, 'utf8'));
const target = db.getSiblingDB(process.env.MTP_COMPAT_DB);

function errorOf(e) {
  const writeErrors = Array.isArray(e.writeErrors)
    ? e.writeErrors.map((w) => ({ index: w.index, code: w.code }))
    : undefined;
  const out = { message: String(e.message || e) };
  const code = typeof e.code === 'number' ? e.code : writeErrors && writeErrors[0] ? writeErrors[0].code : undefined;
  if (code !== undefined) out.code = code;
  else out.name = e.name || 'Error';
  if (typeof e.codeName === 'string') out.codeName = e.codeName;
  if (writeErrors && writeErrors.length > 0) out.writeErrors = writeErrors;
  return out;
}

function checkStrict(docs, allowed) {
  for (const doc of docs) {
    const extra = Object.keys(doc).filter((key) => !allowed.includes(key));
    if (extra.length > 0) {
      const error = new Error(`unexpected fields: ${extra.sort().join(', ')}`);
      error.name = 'StrictSchemaError';
      throw error;
    }
  }
}

function updateCounts(r) {
  return {
    matchedCount: r.matchedCount,
    modifiedCount: r.modifiedCount,
    upsertedCount: r.upsertedCount,
    // mongosh names the upserted _id insertedId.
    upsertedId: r.upsertedId !== undefined ? r.upsertedId : r.insertedId !== undefined ? r.insertedId : null,
  };
}

function runStep(a) {
  const coll = () => target.getCollection(a.collection);
  const some = (o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  switch (a.op) {
    case 'insertOne':
      return {
        insertedId: coll().insertOne(a.document, some({ bypassDocumentValidation: a.bypassDocumentValidation }))
          .insertedId,
      };
    case 'insertMany': {
      const r = coll().insertMany(a.documents, { ordered: a.ordered === undefined ? true : a.ordered });
      return { insertedCount: Object.keys(r.insertedIds).length, insertedIds: Object.values(r.insertedIds) };
    }
    case 'find':
    case 'findStrict': {
      let cursor = coll().find(a.filter || {}, a.projection);
      if (a.sort) cursor = cursor.sort(a.sort);
      if (a.skip !== undefined) cursor = cursor.skip(a.skip);
      if (a.limit !== undefined) cursor = cursor.limit(a.limit);
      if (a.comment !== undefined) cursor = cursor.comment(a.comment);
      const docs = cursor.toArray();
      if (a.op === 'findStrict') checkStrict(docs, a.allowedFields);
      return docs;
    }
    case 'findOne':
      return coll().findOne(a.filter || {}, a.projection);
    case 'countDocuments':
      return coll().countDocuments(a.filter || {});
    case 'estimatedDocumentCount':
      return coll().estimatedDocumentCount();
    case 'distinct':
      return coll().distinct(a.field, a.filter || {});
    case 'aggregate':
      return coll().aggregate(a.pipeline).toArray();
    case 'updateOne':
      return updateCounts(
        coll().updateOne(a.filter, a.update, some({ upsert: a.upsert, arrayFilters: a.arrayFilters })),
      );
    case 'updateMany':
      return updateCounts(
        coll().updateMany(a.filter, a.update, some({ upsert: a.upsert, arrayFilters: a.arrayFilters })),
      );
    case 'replaceOne':
      return updateCounts(coll().replaceOne(a.filter, a.replacement, some({ upsert: a.upsert })));
    case 'deleteOne':
      return { deletedCount: coll().deleteOne(a.filter).deletedCount };
    case 'deleteMany':
      return { deletedCount: coll().deleteMany(a.filter).deletedCount };
    case 'findOneAndUpdate':
    case 'findOneAndReplace':
    case 'findOneAndDelete': {
      const options = some({
        upsert: a.upsert,
        returnDocument: a.returnDocument,
        projection: a.projection,
        sort: a.sort,
      });
      if (a.op === 'findOneAndUpdate') return coll().findOneAndUpdate(a.filter, a.update, options);
      if (a.op === 'findOneAndReplace') return coll().findOneAndReplace(a.filter, a.replacement, options);
      return coll().findOneAndDelete(a.filter, options);
    }
    case 'bulkWrite': {
      const r = coll().bulkWrite(a.requests, { ordered: a.ordered === undefined ? true : a.ordered });
      return {
        insertedCount: r.insertedCount,
        matchedCount: r.matchedCount,
        modifiedCount: r.modifiedCount,
        deletedCount: r.deletedCount,
        upsertedCount: r.upsertedCount,
        upsertedIds: Object.values(r.upsertedIds || {}),
      };
    }
    case 'createIndex':
      return coll().createIndex(a.keys, a.options || {});
    case 'listIndexes':
      return coll()
        .getIndexes()
        .map((index) => ({ key: index.key, name: index.name, unique: index.unique === true }))
        .sort((x, y) => String(x.name).localeCompare(String(y.name)));
    case 'listCollections':
      return target.getCollectionNames().sort();
    case 'runCommand':
      return (a.db ? target.getSiblingDB(a.db) : target).runCommand(a.command);
    default:
      throw new Error(`scenario: unknown op ${a.op}`);
  }
}

const steps = [];
for (const raw of scenario.steps) {
  if (raw.clients && !raw.clients.includes(CLIENT)) continue;
  const step = EJSON.parse(JSON.stringify(raw), { relaxed: true });
  try {
    const result = runStep(step);
    // runCommand in mongosh answers errors with ok: 0 instead of throwing.
    if (step.op === 'runCommand' && result && result.ok === 0) {
      steps.push({
        id: step.id,
        ok: false,
        error: errorOf({ code: result.code, codeName: result.codeName, message: result.errmsg }),
      });
    } else {
      steps.push({ id: step.id, ok: true, result: EJSON.serialize({ r: result }, { relaxed: false }).r });
    }
  } catch (e) {
    steps.push({ id: step.id, ok: false, error: errorOf(e) });
  }
}
print(`@@compat-report@@${JSON.stringify({ client: CLIENT, version: `mongosh ${version()}`, steps })}`);
