import { readFileSync } from 'node:fs';
import { Long, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, PolicyRefusal } from '../../../src/errors.js';
import {
  ALLOWED_FIELDS,
  CLASSIFIED_COMMANDS,
  EXPLAINABLE,
  GENERIC_FIELDS,
  REFUSED_FIELDS,
  assertAllowedFields,
  classify,
  refusalFor,
  type CommandClass,
  type HandlerName,
} from '../../../src/policy/commands.js';
import { RawDocument, valueOf } from '../../../src/wire/raw-bson.js';

interface ServerCommands {
  sources: unknown[];
  aliases: Record<string, string>;
  removed: string[];
  commands: string[];
}

const data = JSON.parse(
  readFileSync(new URL('../../data/server-commands.json', import.meta.url), 'utf8'),
) as ServerCommands;

function refusalRule(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PolicyRefusal);
    return (error as PolicyRefusal).rule;
  }
  throw new Error('expected a PolicyRefusal');
}

function body(object: Record<string, unknown>): RawDocument {
  return RawDocument.parse(serialize(object));
}

describe('server command list (test/data/server-commands.json)', () => {
  it('is a current, sourced and sizeable list', () => {
    expect(data.sources.length).toBeGreaterThan(0);
    expect(data.commands.length).toBeGreaterThanOrEqual(250);
    expect(new Set(data.commands).size).toBe(data.commands.length);
    for (const name of [
      'find',
      'bulkWrite',
      'setQuerySettings',
      'moveCollection',
      'mapreduce',
      'findandmodify',
      'shardcollection',
      'ismaster',
      'buildinfo',
      '$eval',
      'geoNear',
      'parallelCollectionScan',
    ]) {
      expect(data.commands).toContain(name);
    }
  });

  it('has an explicit classification for every command the server knows', () => {
    const classified = new Set(CLASSIFIED_COMMANDS);
    const missing = data.commands.filter((name) => !classified.has(name));
    expect(missing).toEqual([]);
    for (const name of data.commands) {
      const cls = classify(name);
      expect(cls.kind === 'refuse' && cls.rule === 'command.unknown', name).toBe(false);
    }
  });

  it('classifies no name the list does not have (the two stay in sync)', () => {
    const known = new Set(data.commands);
    expect(CLASSIFIED_COMMANDS.filter((name) => !known.has(name))).toEqual([]);
  });

  it('classifies every alias exactly as its canonical name', () => {
    for (const [alias, canonical] of Object.entries(data.aliases)) {
      expect(classify(alias), `${alias} → ${canonical}`).toEqual(classify(canonical));
    }
  });

  it('refuses every removed command (catalogue 4), but answers getFreeMonitoringStatus (disabled) as shells ask it', () => {
    for (const name of data.removed) {
      const cls = classify(name);
      if (name === 'getFreeMonitoringStatus') expect(cls).toEqual({ kind: 'rewrite', handler: name });
      else expect(cls.kind, name).toBe('refuse');
    }
  });

  it('counts by kind', () => {
    const counts: Record<string, number> = {};
    for (const name of CLASSIFIED_COMMANDS) {
      const cls = classify(name);
      const key = cls.kind === 'refuse' ? `refuse:${cls.rule}` : cls.kind;
      counts[key] = (counts[key] ?? 0) + 1;
    }
    expect(counts.local).toBe(8);
    expect(counts.rewrite).toBe(44);
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(CLASSIFIED_COMMANDS.length);
  });
});

describe('classify', () => {
  it("answers the handshake and the proxy's own authentication locally", () => {
    for (const name of [
      'hello',
      'isMaster',
      'ismaster',
      'saslStart',
      'saslContinue',
      'authenticate',
      'logout',
      'connectionStatus',
    ]) {
      expect(classify(name), name).toEqual({ kind: 'local' });
    }
  });

  it.each<[string, HandlerName]>([
    ['find', 'find'],
    ['count', 'count'],
    ['distinct', 'distinct'],
    ['aggregate', 'aggregate'],
    ['explain', 'explain'],
    ['listIndexes', 'listIndexes'],
    ['listCollections', 'listCollections'],
    ['insert', 'insert'],
    ['update', 'update'],
    ['delete', 'delete'],
    ['findAndModify', 'findAndModify'],
    ['findandmodify', 'findAndModify'],
    ['bulkWrite', 'bulkWrite'],
    ['getMore', 'getMore'],
    ['killCursors', 'killCursors'],
    ['create', 'create'],
    ['createIndexes', 'createIndexes'],
    ['dropIndexes', 'dropIndexes'],
    ['drop', 'drop'],
    ['dropDatabase', 'dropDatabase'],
    ['listDatabases', 'listDatabases'],
    ['collMod', 'collMod'],
    ['renameCollection', 'renameCollection'],
    ['endSessions', 'endSessions'],
    ['commitTransaction', 'commitTransaction'],
    ['abortTransaction', 'abortTransaction'],
    ['refreshSessions', 'refreshSessions'],
    ['startSession', 'startSession'],
    ['ping', 'ping'],
    ['buildInfo', 'buildInfo'],
    ['buildinfo', 'buildInfo'],
    ['killSessions', 'killSessions'],
    ['atlasVersion', 'atlasVersion'],
    ['getDefaultRWConcern', 'getDefaultRWConcern'],
    ['serverStatus', 'serverStatus'],
    ['hostInfo', 'hostInfo'],
    ['getCmdLineOpts', 'getCmdLineOpts'],
    ['getParameter', 'getParameter'],
    ['getLog', 'getLog'],
    ['currentOp', 'currentOp'],
    ['top', 'top'],
    ['listCommands', 'listCommands'],
    ['whatsmyuri', 'whatsmyuri'],
    ['getFreeMonitoringStatus', 'getFreeMonitoringStatus'],
  ])('rewrites %s with the %s handler', (name, handler) => {
    expect(classify(name)).toEqual({ kind: 'rewrite', handler });
  });

  it.each<[string, string]>([
    ['mapReduce', 'command.server-js'],
    ['mapreduce', 'command.server-js'],
    ['group', 'command.removed'],
    ['eval', 'command.removed'],
    ['$eval', 'command.removed'],
    ['copydb', 'command.removed'],
    ['clone', 'command.removed'],
    ['cloneCollection', 'command.removed'],
    ['geoNear', 'command.removed'],
    ['parallelCollectionScan', 'command.removed'],
    ['getnonce', 'command.removed'],
    ['createUser', 'command.user-management'],
    ['updateUser', 'command.user-management'],
    ['grantRolesToUser', 'command.user-management'],
    ['usersInfo', 'command.user-management'],
    ['shardCollection', 'command.sharding'],
    ['shardcollection', 'command.sharding'],
    ['analyzeShardKey', 'command.sharding'],
    ['applyOps', 'command.replication'],
    ['replSetGetStatus', 'command.replication'],
    ['killAllSessions', 'command.sessions'],
    ['killAllSessionsByPattern', 'command.sessions'],
    ['killOp', 'command.admin'],
    ['profile', 'command.admin'],
    ['setParameter', 'command.admin'],
    ['shutdown', 'command.admin'],
    ['fsync', 'command.admin'],
    ['setDefaultRWConcern', 'command.admin'],
    ['setClusterParameter', 'command.admin'],
    ['logApplicationMessage', 'command.admin'],
    ['compact', 'command.admin'],
    ['setQuerySettings', 'command.query-tuning'],
    ['planCacheSetFilter', 'command.query-tuning'],
    ['planCacheClear', 'command.query-tuning'],
    ['dbStats', 'command.stats'],
    ['dbstats', 'command.stats'],
    ['collStats', 'command.stats'],
    ['collstats', 'command.stats'],
    ['dataSize', 'command.stats'],
    ['validate', 'command.stats'],
    ['convertToCapped', 'command.ddl'],
    ['reIndex', 'command.ddl'],
    ['filemd5', 'command.unsupported'],
    ['_configsvrAddShard', 'command.internal'],
    ['configureFailPoint', 'command.internal'],
  ])('refuses %s (%s)', (name, rule) => {
    const cls = classify(name);
    expect(cls.kind).toBe('refuse');
    expect((cls as Extract<CommandClass, { kind: 'refuse' }>).rule).toBe(rule);
    expect((cls as Extract<CommandClass, { kind: 'refuse' }>).reason.length).toBeGreaterThan(0);
  });

  it('refuses unknown names and other spellings (case-sensitive, catalogue 53)', () => {
    for (const name of [
      'Find',
      'FIND',
      'MapReduce',
      'mapReducE',
      'FindAndModify',
      'Insert',
      'HELLO',
      '',
      'constructor',
      '__proto__',
      'toString',
      'hasOwnProperty',
      'find ',
      'nosuchcommand',
    ]) {
      expect(classify(name), name).toEqual({ kind: 'refuse', rule: 'command.unknown', reason: expect.any(String) });
    }
  });

  it('makes refusals: CommandNotFound for unknown names, Unauthorized otherwise', () => {
    const unknown = classify('Find');
    if (unknown.kind !== 'refuse') throw new Error('expected a refusal');
    const error = refusalFor('Find', unknown);
    expect(error.rule).toBe('command.unknown');
    expect(error.code).toBe(ErrorCodes.CommandNotFound);
    expect(error.message).toContain('"Find"');
    const admin = classify('killOp');
    if (admin.kind !== 'refuse') throw new Error('expected a refusal');
    expect(refusalFor('killOp', admin).code).toBe(ErrorCodes.Unauthorized);
    // A command current servers no longer have: what such a server answers.
    const removed = classify('eval');
    if (removed.kind !== 'refuse') throw new Error('expected a refusal');
    expect(refusalFor('eval', removed).code).toBe(ErrorCodes.CommandNotFound);
    expect(refusalFor('x'.repeat(500), unknown).message.length).toBeLessThan(300);
  });

  it('lists the commands explain may wrap (catalogue 21)', () => {
    expect([...EXPLAINABLE].sort()).toEqual([
      'aggregate',
      'count',
      'delete',
      'distinct',
      'find',
      'findAndModify',
      'update',
    ]);
    expect(EXPLAINABLE.has('explain')).toBe(false);
  });
});

describe('top-level fields', () => {
  it('allows no internal or defence-defeating field on any command', () => {
    for (const [handler, fields] of Object.entries(ALLOWED_FIELDS)) {
      for (const name of REFUSED_FIELDS.keys()) expect(fields.has(name), `${handler}.${name}`).toBe(false);
    }
    for (const name of REFUSED_FIELDS.keys()) expect(GENERIC_FIELDS.has(name)).toBe(false);
    expect(ALLOWED_FIELDS.find.has('noCursorTimeout')).toBe(false);
    expect(ALLOWED_FIELDS.find.has('oplogReplay')).toBe(false);
    expect(ALLOWED_FIELDS.create.has('viewOn')).toBe(false);
    expect(ALLOWED_FIELDS.create.has('pipeline')).toBe(false);
  });

  it('accepts the fields a driver sends', () => {
    assertAllowedFields(
      'find',
      body({
        find: 'c',
        filter: { a: 1 },
        projection: { a: 1 },
        sort: { a: 1 },
        hint: 'a_1',
        skip: 1,
        limit: 2,
        batchSize: 3,
        singleBatch: false,
        let: { x: 1 },
        collation: { locale: 'en' },
        min: { a: 1 },
        max: { a: 9 },
        returnKey: false,
        showRecordId: false,
        tailable: false,
        awaitData: false,
        allowPartialResults: false,
        allowDiskUse: true,
        maxTimeMS: 100,
        comment: 'x',
        readConcern: { level: 'local' },
        $db: 'd',
        lsid: { id: 1 },
        $clusterTime: {},
        $readPreference: { mode: 'primary' },
        txnNumber: Long.fromNumber(1),
        autocommit: false,
        startTransaction: true,
        apiVersion: '1',
        apiStrict: true,
        apiDeprecationErrors: true,
      }),
    );
    assertAllowedFields(
      'insert',
      body({ insert: 'c', documents: [], ordered: true, writeConcern: { w: 1 }, $db: 'd' }),
    );
    assertAllowedFields(
      'findAndModify',
      body({ findandmodify: 'c', query: {}, update: {}, new: true, upsert: true, $db: 'd' }),
    );
    assertAllowedFields(
      'bulkWrite',
      body({ bulkWrite: 1, ops: [], nsInfo: [], errorsOnly: true, ordered: false, $db: 'admin' }),
    );
    assertAllowedFields(
      'commitTransaction',
      body({ commitTransaction: 1, txnNumber: Long.fromNumber(1), autocommit: false, recoveryToken: {}, $db: 'admin' }),
    );
  });

  it.each<[HandlerName, Record<string, unknown>, string]>([
    ['find', { find: 'c', noCursorTimeout: true }, 'find.no-cursor-timeout'],
    ['find', { find: 'c', oplogReplay: true }, 'find.oplog-replay'],
    ['find', { find: 'c', $tenant: 1 }, 'field.internal'],
    ['find', { find: 'c', $audit: {} }, 'field.internal'],
    ['find', { find: 'c', $client: {} }, 'field.internal'],
    ['insert', { insert: 'c', $configServerState: {} }, 'field.internal'],
    ['insert', { insert: 'c', mayBypassWriteBlocking: true }, 'field.internal'],
    ['bulkWrite', { bulkWrite: 1, rawData: true }, 'field.internal'],
    ['insert', { insert: 'c', bypassDocumentValidation: true }, 'field.bypass-validation'],
    ['findAndModify', { findAndModify: 'c', bypassDocumentValidation: 1 }, 'field.bypass-validation'],
    ['find', { find: 'c', bypassDocumentValidation: false }, 'field.bypass-validation'],
    ['getMore', { getMore: 1, noCursorTimeout: false }, 'find.no-cursor-timeout'],
    ['aggregate', { aggregate: 'c', bypassDocumentValidation: true }, 'field.bypass-validation'],
    ['create', { create: 'v', viewOn: 'c', pipeline: [] }, 'command.view'],
    ['collMod', { collMod: 'v', viewOn: 'c' }, 'command.view'],
    ['create', { create: 'v', pipeline: [] }, 'field.unknown'],
    ['find', { find: 'c', readOnce: true }, 'field.unknown'],
    ['find', { find: 'c', Filter: {} }, 'field.unknown'],
    ['ping', { ping: 1, filter: {} }, 'field.unknown'],
    ['killCursors', { killCursors: 'c', cursors: [], filter: {} }, 'field.unknown'],
  ])('%s refuses %j (%s)', (handler, fields, rule) => {
    expect(refusalRule(() => assertAllowedFields(handler, body(fields)))).toBe(rule);
  });

  it.each<[HandlerName, Record<string, unknown>]>([
    ['insert', { insert: 'c', bypassDocumentValidation: false }],
    ['update', { update: 'c', bypassDocumentValidation: 0 }],
    ['findAndModify', { findAndModify: 'c', bypassDocumentValidation: false }],
    ['aggregate', { aggregate: 'c', bypassDocumentValidation: false }],
    ['bulkWrite', { bulkWrite: 1, bypassDocumentValidation: false }],
    ['find', { find: 'c', noCursorTimeout: false, oplogReplay: false }],
    ['ping', { ping: 1, maxTimeMS: 1 }],
    ['killCursors', { killCursors: 'c', cursors: [], maxTimeMS: 1 }],
    ['endSessions', { endSessions: [], writeConcern: { w: 0 }, maxTimeMS: 1, comment: { any: 'bson' } }],
    ['killSessions', { killSessions: [], $readPreference: { mode: 'primaryPreferred' } }],
  ])('%s lets the harmless %j through', (handler, fields) => {
    expect(() => assertAllowedFields(handler, body(fields))).not.toThrow();
  });

  it("names the unknown field in the message, with the server's code for an unknown field (40415)", () => {
    try {
      assertAllowedFields('find', body({ find: 'c', someField: 1 }));
      throw new Error('expected a refusal');
    } catch (error) {
      expect((error as PolicyRefusal).rule).toBe('field.unknown');
      expect((error as PolicyRefusal).code).toBe(40415);
      expect((error as PolicyRefusal).message).toContain('"someField"');
    }
  });

  it('refuses a repeated top-level field (G3)', () => {
    const doc = new RawDocument([
      { name: 'find', type: 2, value: valueOf('c').value },
      { name: 'filter', type: 3, value: serialize({}) },
      { name: 'filter', type: 3, value: serialize({ a: 1 }) },
    ]);
    expect(refusalRule(() => assertAllowedFields('find', doc))).toBe('field.duplicate');
  });
});
