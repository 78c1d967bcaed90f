/**
 * A minimal runner of the drivers' unified test format, for the CRUD subset (the JSON files of
 * mongodb/specifications, source/crud/tests/unified, read from MTP_SPEC_DIR; never committed
 * here). Written for this repository after the format's specification; it drives Node driver 7.
 *
 * It runs a file's tests against one target (the upstream direct, or the proxy) while everything
 * the test format does "behind the driver's back" goes straight to the upstream: dropping and
 * creating collections with initialData, fail points, reading `outcome`. For the proxied run the
 * initialData documents are stored with the tenant field (so the tenant sees them) and the outcome
 * is read back with the tenant field removed; a stored document without it stays as it is, so it
 * shows as a difference.
 *
 * Implemented: createEntities (client, database, collection, session), initialData, the
 * collection/database/client operations the CRUD tests use, expectResult, expectError (isError,
 * isClientError, errorContains, errorCode, errorCodeName, errorLabelsContain/Omit, expectResult),
 * outcome, runOnRequirements (server version, topology, serverless, auth, csfle,
 * serverParameters; asked of the upstream). Not checked: expectEvents (command monitoring: the
 * events are what the driver sends, the same with or without the proxy in between). A test using
 * anything else is skipped with the reason.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import {
  BSON,
  MongoClient,
  MongoServerError,
  type ClientSession,
  type Collection,
  type Db,
  type Document,
  type MongoClientOptions,
} from 'mongodb';
import { MatchError, UnsupportedError, match, matchRootList } from './match.js';

export interface Target {
  name: 'direct' | 'proxy';
  uri: string;
  /** Set for the proxied run: stamp initialData with it, strip it from the outcome. */
  tenant?: { field: string; value: string };
}

export interface ServerInfo {
  version: number[];
  topology: 'single' | 'replicaset' | 'sharded';
  parameters: Document | undefined;
}

export type Verdict = 'pass' | 'fail' | 'skip';

export interface TestResult {
  file: string;
  test: string;
  verdict: Verdict;
  /** Failure or skip reason (one line). */
  reason?: string;
}

interface Requirement {
  minServerVersion?: string;
  maxServerVersion?: string;
  topologies?: string[];
  serverless?: 'require' | 'forbid' | 'allow';
  auth?: boolean;
  csfle?: boolean;
  serverParameters?: Document;
}

interface Operation {
  name: string;
  object: string;
  arguments?: Document;
  expectResult?: unknown;
  expectError?: Document;
  ignoreResultAndError?: boolean;
  saveResultAsEntity?: string;
}

interface CollectionData {
  databaseName: string;
  collectionName: string;
  documents: Document[];
  createOptions?: Document;
}

interface TestCase {
  description: string;
  runOnRequirements?: Requirement[];
  skipReason?: string;
  operations: Operation[];
  outcome?: CollectionData[];
}

interface SpecFile {
  description: string;
  schemaVersion: string;
  runOnRequirements?: Requirement[];
  createEntities?: Document[];
  initialData?: CollectionData[];
  tests: TestCase[];
}

class SkipTest extends Error {}

export async function serverInfo(direct: MongoClient): Promise<ServerInfo> {
  const admin = direct.db('admin');
  const build = await admin.command({ buildInfo: 1 });
  const hello = await admin.command({ hello: 1 });
  const version = String(build.version)
    .split('.')
    .map((part) => Number.parseInt(part, 10) || 0);
  const topology = hello.msg === 'isdbgrid' ? 'sharded' : hello.setName ? 'replicaset' : 'single';
  let parameters: Document | undefined;
  try {
    parameters = await admin.command({ getParameter: '*' });
  } catch {
    parameters = undefined;
  }
  return { version, topology, parameters };
}

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Why the requirements are not met, or undefined when one of them is. */
export function unmetRequirements(requirements: Requirement[] | undefined, server: ServerInfo): string | undefined {
  if (!requirements || requirements.length === 0) return undefined;
  const reasons = requirements.map((r) => {
    const parse = (v: string) => v.split('.').map((p) => Number.parseInt(p, 10) || 0);
    if (r.minServerVersion && compareVersions(server.version, parse(r.minServerVersion)) < 0)
      return `server < ${r.minServerVersion}`;
    if (r.maxServerVersion && compareVersions(server.version, parse(r.maxServerVersion)) > 0)
      return `server > ${r.maxServerVersion}`;
    if (r.topologies && !r.topologies.includes(server.topology)) return `topology ${r.topologies.join('|')}`;
    if (r.serverless === 'require') return 'serverless';
    if (r.auth === true) return 'auth';
    if (r.csfle === true) return 'csfle';
    if (r.serverParameters) {
      for (const [name, value] of Object.entries(r.serverParameters)) {
        if (server.parameters === undefined) return `server parameter ${name} (getParameter unavailable)`;
        try {
          match(value, server.parameters[name], { root: false });
        } catch {
          return `server parameter ${name}`;
        }
      }
    }
    return undefined;
  });
  return reasons.includes(undefined) ? undefined : reasons.join('; ');
}

export function loadSpecFile(path: string): SpecFile {
  return BSON.EJSON.parse(readFileSync(path, 'utf8'), { relaxed: true }) as SpecFile;
}

/** Runs every test of one file against `target`; `direct` is the runner's own upstream client. */
export async function runSpecFile(
  path: string,
  target: Target,
  direct: MongoClient,
  server: ServerInfo,
): Promise<TestResult[]> {
  const spec = loadSpecFile(path);
  const file = basename(path, '.json');
  const fileUnmet = unmetRequirements(spec.runOnRequirements, server);
  const results: TestResult[] = [];
  for (const test of spec.tests) {
    const base = { file, test: test.description };
    if (fileUnmet) {
      results.push({ ...base, verdict: 'skip', reason: `requires ${fileUnmet}` });
      continue;
    }
    if (test.skipReason) {
      results.push({ ...base, verdict: 'skip', reason: `skipReason: ${test.skipReason}` });
      continue;
    }
    const unmet = unmetRequirements(test.runOnRequirements, server);
    if (unmet) {
      results.push({ ...base, verdict: 'skip', reason: `requires ${unmet}` });
      continue;
    }
    try {
      await runTest(spec, test, target, direct);
      results.push({ ...base, verdict: 'pass' });
    } catch (error) {
      const message = oneLine(error);
      if (error instanceof SkipTest || error instanceof UnsupportedError) {
        results.push({ ...base, verdict: 'skip', reason: `runner: ${message}` });
      } else {
        results.push({ ...base, verdict: 'fail', reason: message });
      }
    }
  }
  return results;
}

function oneLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s+/g, ' ').slice(0, 400);
}

interface Entities {
  clients: Map<string, MongoClient>;
  databases: Map<string, Db>;
  collections: Map<string, Collection>;
  sessions: Map<string, ClientSession>;
  results: Map<string, unknown>;
}

async function prepareData(spec: SpecFile, test: TestCase, target: Target, direct: MongoClient): Promise<void> {
  // A fresh start: every database the file names is dropped (directly), then initialData is written.
  const databases = new Set<string>();
  for (const entity of spec.createEntities ?? []) {
    if (entity.database?.databaseName) databases.add(entity.database.databaseName as string);
  }
  for (const data of [...(spec.initialData ?? []), ...(test.outcome ?? [])]) databases.add(data.databaseName);
  for (const name of databases) await direct.db(name).dropDatabase();
  for (const data of spec.initialData ?? []) {
    const db = direct.db(data.databaseName);
    try {
      await db.createCollection(data.collectionName, data.createOptions ?? {});
    } catch (error) {
      // A previous test's unacknowledged (w:0) write can land after the drop: drop again, once.
      if ((error as { code?: number }).code !== 48) throw error;
      await db.dropCollection(data.collectionName);
      await db.createCollection(data.collectionName, data.createOptions ?? {});
    }
    if (data.documents.length > 0) {
      const documents = target.tenant
        ? data.documents.map((doc) => ({ ...doc, [target.tenant!.field]: target.tenant!.value }))
        : data.documents;
      await db.collection(data.collectionName).insertMany(documents, { writeConcern: { w: 1 } });
    }
  }
}

async function createEntities(spec: SpecFile, target: Target): Promise<Entities> {
  const entities: Entities = {
    clients: new Map(),
    databases: new Map(),
    collections: new Map(),
    sessions: new Map(),
    results: new Map(),
  };
  for (const entity of spec.createEntities ?? []) {
    const [kind, definition] = Object.entries(entity)[0] as [string, Document];
    const id = definition.id as string;
    switch (kind) {
      case 'client': {
        const options: MongoClientOptions = { serverSelectionTimeoutMS: 10_000, ...(definition.uriOptions ?? {}) };
        const client = new MongoClient(target.uri, options);
        await client.connect();
        entities.clients.set(id, client);
        break;
      }
      case 'database': {
        const client = entities.clients.get(definition.client as string)!;
        entities.databases.set(id, client.db(definition.databaseName as string, definition.databaseOptions ?? {}));
        break;
      }
      case 'collection': {
        const db = entities.databases.get(definition.database as string)!;
        entities.collections.set(
          id,
          db.collection(definition.collectionName as string, definition.collectionOptions ?? {}),
        );
        break;
      }
      case 'session': {
        const client = entities.clients.get(definition.client as string)!;
        entities.sessions.set(id, client.startSession(definition.sessionOptions ?? {}));
        break;
      }
      default:
        throw new SkipTest(`entity type ${kind}`);
    }
  }
  return entities;
}

async function closeEntities(entities: Entities): Promise<void> {
  for (const session of entities.sessions.values()) await session.endSession().catch(() => undefined);
  await Promise.allSettled([...entities.clients.values()].map((client) => client.close()));
}

async function runTest(spec: SpecFile, test: TestCase, target: Target, direct: MongoClient): Promise<void> {
  await prepareData(spec, test, target, direct);
  let entities: Entities | undefined;
  try {
    entities = await createEntities(spec, target);
    for (const [index, operation] of test.operations.entries()) {
      await runOperation(operation, entities, direct, `operation ${index} (${operation.name})`);
    }
  } finally {
    if (entities) await closeEntities(entities);
    await disableFailPoints(direct);
  }
  for (const data of test.outcome ?? []) await checkOutcome(data, target, direct);
}

let failPointsSet: string[] = [];

async function disableFailPoints(direct: MongoClient): Promise<void> {
  for (const name of failPointsSet) {
    await direct
      .db('admin')
      .command({ configureFailPoint: name, mode: 'off' })
      .catch(() => undefined);
  }
  failPointsSet = [];
}

async function checkOutcome(data: CollectionData, target: Target, direct: MongoClient): Promise<void> {
  const stored = await direct.db(data.databaseName).collection(data.collectionName).find({}).sort({ _id: 1 }).toArray();
  const actual = target.tenant
    ? stored.map((doc) => {
        if (doc[target.tenant!.field] !== target.tenant!.value) return doc;
        const { [target.tenant!.field]: _tenant, ...rest } = doc;
        return rest;
      })
    : stored;
  try {
    // Outcome documents must match exactly (not as root documents): a missing or extra field is a difference.
    match(data.documents, actual, { root: false });
  } catch (error) {
    throw new MatchError(`outcome ${data.databaseName}.${data.collectionName}: ${oneLine(error)}`);
  }
}

async function runOperation(operation: Operation, entities: Entities, direct: MongoClient, label: string) {
  let result: unknown;
  let error: unknown;
  try {
    result = await execute(operation, entities, direct);
  } catch (caught) {
    if (caught instanceof SkipTest || caught instanceof UnsupportedError) throw caught;
    error = caught;
  }
  if (operation.saveResultAsEntity) entities.results.set(operation.saveResultAsEntity, result);
  if (operation.ignoreResultAndError) return;
  if (operation.expectError) {
    if (error === undefined) throw new MatchError(`${label}: expected an error, got a result`);
    checkError(operation.expectError, error, label);
    return;
  }
  if (error !== undefined) throw new MatchError(`${label}: unexpected error: ${oneLine(error)}`);
  if (operation.expectResult !== undefined) {
    try {
      if (ROOT_LIST_OPERATIONS.has(operation.name)) matchRootList(operation.expectResult, result);
      else match(operation.expectResult, result, { root: true });
    } catch (mismatch) {
      throw new MatchError(`${label}: result ${oneLine(mismatch)}`);
    }
  }
}

/** Operations whose result is an iterable of root-level documents. */
const ROOT_LIST_OPERATIONS = new Set(['find', 'aggregate', 'listIndexes', 'listCollections']);

function checkError(expected: Document, error: unknown, label: string): void {
  const e = error as MongoServerError & { errorLabels?: string[] };
  const isServer = error instanceof MongoServerError || typeof (e as { code?: unknown }).code === 'number';
  const problems: string[] = [];
  if (expected.isClientError === true && isServer) problems.push('expected a client error, got a server error');
  if (expected.isClientError === false && !isServer) problems.push('expected a server error');
  if (expected.errorContains && !String(e.message).toLowerCase().includes(String(expected.errorContains).toLowerCase()))
    problems.push(`message does not contain "${expected.errorContains as string}"`);
  if (expected.errorCode !== undefined && e.code !== expected.errorCode)
    problems.push(`code ${String(e.code)}, expected ${String(expected.errorCode)}`);
  if (expected.errorCodeName !== undefined && e.codeName !== expected.errorCodeName)
    problems.push(`codeName ${String(e.codeName)}, expected ${String(expected.errorCodeName)}`);
  for (const name of (expected.errorLabelsContain as string[] | undefined) ?? []) {
    if (!(e.errorLabels ?? []).includes(name) && !(typeof e.hasErrorLabel === 'function' && e.hasErrorLabel(name)))
      problems.push(`missing error label ${name}`);
  }
  for (const name of (expected.errorLabelsOmit as string[] | undefined) ?? []) {
    if (typeof e.hasErrorLabel === 'function' && e.hasErrorLabel(name)) problems.push(`unexpected error label ${name}`);
  }
  if (expected.expectResult !== undefined) {
    const partial = (e as { result?: unknown }).result;
    try {
      match(expected.expectResult, partial === undefined ? undefined : bulkResultOf(partial), { root: true });
    } catch (mismatch) {
      problems.push(`partial result: ${oneLine(mismatch)}`);
    }
  }
  if (problems.length > 0) throw new MatchError(`${label}: ${problems.join('; ')} (error: ${oneLine(error)})`);
}

function bulkResultOf(result: unknown): Document {
  const r = result as Document;
  if (typeof r.insertedCount !== 'number') return r;
  return {
    insertedCount: r.insertedCount,
    matchedCount: r.matchedCount,
    modifiedCount: r.modifiedCount,
    deletedCount: r.deletedCount,
    upsertedCount: r.upsertedCount,
    insertedIds: r.insertedIds,
    upsertedIds: r.upsertedIds,
  };
}

function updateResultOf(r: Document): Document {
  // The driver reports upsertedId: null when nothing was upserted; the format expects it unset.
  const { upsertedId, ...rest } = r;
  return upsertedId === null || upsertedId === undefined ? rest : { ...rest, upsertedId };
}

function optionsOf(args: Document, entities: Entities, omit: string[]): Document {
  const options: Document = {};
  for (const [key, value] of Object.entries(args)) {
    if (omit.includes(key)) continue;
    if (key === 'session') {
      const session = entities.sessions.get(value as string);
      if (!session) throw new SkipTest(`unknown session ${String(value)}`);
      options.session = session;
    } else if (key === 'returnDocument') {
      options.returnDocument = String(value).toLowerCase();
    } else {
      options[key] = value;
    }
  }
  return options;
}

async function execute(operation: Operation, entities: Entities, direct: MongoClient): Promise<unknown> {
  const args = operation.arguments ?? {};
  const { object, name } = operation;
  if (object === 'testRunner') return testRunnerOperation(name, args, direct);
  const collection = entities.collections.get(object);
  if (collection) return collectionOperation(collection, name, args, entities);
  const db = entities.databases.get(object);
  if (db) return databaseOperation(db, name, args, entities);
  const client = entities.clients.get(object);
  if (client) return clientOperation(client, name, args, entities);
  throw new SkipTest(`operation on ${object}`);
}

async function testRunnerOperation(name: string, args: Document, direct: MongoClient): Promise<unknown> {
  if (name === 'failPoint') {
    // Set on the server itself (directly), whichever client the test names.
    const failPoint = args.failPoint as Document;
    await direct.db('admin').command(failPoint);
    failPointsSet.push(failPoint.configureFailPoint as string);
    return undefined;
  }
  throw new SkipTest(`testRunner operation ${name}`);
}

async function collectionOperation(c: Collection, name: string, args: Document, entities: Entities) {
  const o = (...omit: string[]) => optionsOf(args, entities, omit);
  switch (name) {
    case 'find':
      return c.find(args.filter ?? {}, o('filter')).toArray();
    case 'findOne':
      return c.findOne(args.filter ?? {}, o('filter'));
    case 'aggregate':
      return c.aggregate(args.pipeline as Document[], o('pipeline')).toArray();
    case 'countDocuments':
      return c.countDocuments(args.filter ?? {}, o('filter'));
    case 'count':
      return c.count(args.filter ?? {}, o('filter'));
    case 'estimatedDocumentCount':
      return c.estimatedDocumentCount(o());
    case 'distinct':
      return c.distinct(args.fieldName as string, args.filter ?? {}, o('fieldName', 'filter'));
    case 'insertOne':
      return c.insertOne(args.document as Document, o('document'));
    case 'insertMany':
      return c.insertMany(args.documents as Document[], o('documents'));
    case 'updateOne':
      return updateResultOf(await c.updateOne(args.filter as Document, args.update as Document, o('filter', 'update')));
    case 'updateMany':
      return updateResultOf(
        await c.updateMany(args.filter as Document, args.update as Document, o('filter', 'update')),
      );
    case 'replaceOne':
      return updateResultOf(
        await c.replaceOne(args.filter as Document, args.replacement as Document, o('filter', 'replacement')),
      );
    case 'deleteOne':
      return c.deleteOne(args.filter as Document, o('filter'));
    case 'deleteMany':
      return c.deleteMany(args.filter as Document, o('filter'));
    case 'findOneAndUpdate':
      return c.findOneAndUpdate(args.filter as Document, args.update as Document, o('filter', 'update'));
    case 'findOneAndReplace':
      return c.findOneAndReplace(args.filter as Document, args.replacement as Document, o('filter', 'replacement'));
    case 'findOneAndDelete':
      return c.findOneAndDelete(args.filter as Document, o('filter'));
    case 'bulkWrite': {
      const r = await c.bulkWrite(args.requests as never, o('requests'));
      return bulkResultOf(r);
    }
    case 'createIndex':
      return c.createIndex(args.keys as Document, o('keys'));
    case 'listIndexes':
      return c.listIndexes(o()).toArray();
    case 'drop':
      return c.drop(o());
    default:
      throw new SkipTest(`collection operation ${name}`);
  }
}

async function databaseOperation(db: Db, name: string, args: Document, entities: Entities) {
  const o = (...omit: string[]) => optionsOf(args, entities, omit);
  switch (name) {
    case 'aggregate':
      return db.aggregate(args.pipeline as Document[], o('pipeline')).toArray();
    case 'runCommand':
      return db.command(args.command as Document, o('command', 'commandName'));
    case 'createCollection':
      await db.createCollection(args.collection as string, o('collection'));
      return undefined;
    case 'dropCollection':
      return db.dropCollection(args.collection as string, o('collection'));
    case 'listCollections':
      return db.listCollections(args.filter ?? {}, o('filter')).toArray();
    case 'modifyCollection':
      return db.command({ collMod: args.collection as string, ...o('collection') });
    default:
      throw new SkipTest(`database operation ${name}`);
  }
}

async function clientOperation(client: MongoClient, name: string, args: Document, entities: Entities) {
  switch (name) {
    case 'listDatabases':
      return client
        .db('admin')
        .admin()
        .listDatabases(optionsOf(args, entities, []));
    default:
      // clientBulkWrite needs MongoDB 8.0 (its tests say so); not implemented here.
      throw new SkipTest(`client operation ${name}`);
  }
}

export const SPEC_RELATIVE_DIR = 'source/crud/tests/unified';
