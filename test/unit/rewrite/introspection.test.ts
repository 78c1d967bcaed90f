/**
 * Server introspection answered by the proxy (src/rewrite/introspection.ts; catalogue 25, 26):
 * every answer is built from what every tenant may know, forwards nothing, and holds nothing of
 * another tenant or of the upstream's host.
 */
import { Long, UUID, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { IsolationEngine, commandInput, type Decision } from '../../../src/rewrite/engine.js';
import { createIntrospectionHandlers, emptyAdminRead } from '../../../src/rewrite/introspection.js';
import type { CommandInput, TenantContext } from '../../../src/policy/types.js';
import { RawDocument } from '../../../src/wire/raw-bson.js';

const BUILD_INFO = { version: '8.0.4', versionArray: [8, 0, 4, 0], ok: 1 };
const HELLO = { isWritablePrimary: true, logicalSessionTimeoutMinutes: 45, hosts: ['db-1.internal:27017'] };
const STARTED = Date.UTC(2026, 0, 1);

function input(body: Document, db = 'admin'): CommandInput {
  return {
    name: Object.keys(body)[0]!,
    db,
    body: RawDocument.parse(serialize({ ...body, $db: db })),
    sequences: new Map(),
    moreToCome: false,
  };
}

const context = { tenant: 'acme', clientAddress: '10.0.0.7:51234' } as TenantContext;

function handlers(kind: 'standalone' | 'sharded' = 'standalone', buildInfo: Document | null = BUILD_INFO) {
  return createIntrospectionHandlers({
    upstream: () => ({ kind, ...(buildInfo === null ? {} : { buildInfo }), hello: HELLO }),
    startedAt: STARTED,
    now: () => STARTED + 90_500,
    host: 'proxy-host',
    newSessionId: () => new UUID('00112233-4455-6677-8899-aabbccddeeff'),
  });
}

function answer(name: keyof ReturnType<typeof handlers>, body: Document, h = handlers()): Document {
  const result = h[name](input(body), context);
  expect(result.reply.localReply, name).toBeDefined();
  return result.reply.localReply!;
}

describe('introspection answers', () => {
  it("serverStatus: the upstream's version, the process kind, the proxy's uptime and clock; nothing else", () => {
    expect(answer('serverStatus', { serverStatus: 1, repl: 0, metrics: 0 })).toEqual({
      host: 'proxy-host',
      version: '8.0.4',
      process: 'mongod',
      uptime: 90.5,
      uptimeMillis: Long.fromNumber(90_500),
      uptimeEstimate: Long.fromNumber(90),
      localTime: new Date(STARTED + 90_500),
      ok: 1,
    });
    expect(answer('serverStatus', { serverStatus: 1 }, handlers('sharded')).process).toBe('mongos');
    expect(answer('serverStatus', { serverStatus: 1 }, handlers('standalone', null))).not.toHaveProperty('version');
  });

  it('hostInfo and getCmdLineOpts show no upstream host, command line or secret', () => {
    const hostInfo = answer('hostInfo', { hostInfo: 1 });
    expect(hostInfo.system).toEqual({
      currentTime: new Date(STARTED + 90_500),
      hostname: 'proxy-host',
      cpuAddrSize: 64,
      numaEnabled: false,
    });
    expect(JSON.stringify(hostInfo)).not.toContain('db-1.internal');
    expect(answer('getCmdLineOpts', { getCmdLineOpts: 1 })).toEqual({ argv: [], parsed: {}, ok: 1 });
  });

  it('getParameter: featureCompatibilityVersion and requireApiVersion in every form; nothing else; none → InvalidOptions', () => {
    expect(answer('getParameter', { getParameter: 1, featureCompatibilityVersion: 1 })).toEqual({
      featureCompatibilityVersion: { version: '8.0' },
      ok: 1,
    });
    expect(answer('getParameter', { getParameter: '*' })).toEqual({
      featureCompatibilityVersion: { version: '8.0' },
      requireApiVersion: false,
      ok: 1,
    });
    expect(
      answer('getParameter', {
        getParameter: { showDetails: true },
        requireApiVersion: 1,
        authenticationMechanisms: 1,
      }),
    ).toEqual({ requireApiVersion: { value: false, settableAtRuntime: false, settableAtStartup: false }, ok: 1 });
    expect(answer('getParameter', { getParameter: { allParameters: true } })).toMatchObject({
      featureCompatibilityVersion: { version: '8.0' },
    });
    for (const body of [{ getParameter: 'foo' }, { getParameter: 1, ldapServers: 1, logLevel: 1 }]) {
      expect(answer('getParameter', body)).toEqual({
        ok: 0,
        errmsg: 'no option found to get',
        code: 72,
        codeName: 'InvalidOptions',
      });
    }
  });

  it('getLog: the log names, each with no line; an unknown name or a wrong type as the server answers', () => {
    expect(answer('getLog', { getLog: '*' })).toEqual({ names: ['global', 'startupWarnings'], ok: 1 });
    expect(answer('getLog', { getLog: 'startupWarnings' })).toEqual({ totalLinesWritten: 0, log: [], ok: 1 });
    expect(answer('getLog', { getLog: 'global' })).toEqual({ totalLinesWritten: 0, log: [], ok: 1 });
    expect(answer('getLog', { getLog: 'x' })).toMatchObject({ ok: 0, code: 96, codeName: 'OperationFailed' });
    expect(answer('getLog', { getLog: 1 })).toMatchObject({ ok: 0, code: 14, codeName: 'TypeMismatch' });
  });

  it('currentOp shows no operation, top no namespace, free monitoring disabled; whatsmyuri the caller', () => {
    expect(answer('currentOp', { currentOp: 1, $all: true, $ownOps: false })).toEqual({ inprog: [], ok: 1 });
    expect(answer('top', { top: 1 })).toEqual({ totals: { note: 'all times in microseconds' }, ok: 1 });
    expect(answer('getFreeMonitoringStatus', { getFreeMonitoringStatus: 1 })).toEqual({ state: 'disabled', ok: 1 });
    expect(answer('whatsmyuri', { whatsmyuri: 1 })).toEqual({ you: '10.0.0.7:51234', ok: 1 });
  });

  it('listCommands: what the proxy answers or forwards, never a refused command', () => {
    const { commands } = answer('listCommands', { listCommands: 1 });
    for (const name of ['find', 'insert', 'hello', 'serverStatus', 'getParameter', 'killSessions', 'endSessions']) {
      expect(commands[name], name).toBeDefined();
    }
    for (const name of ['killOp', 'mapReduce', 'eval', 'setParameter', 'killAllSessions', 'collStats']) {
      expect(commands[name], name).toBeUndefined();
    }
    expect(commands.hello.requiresAuth).toBe(false);
    expect(commands.find.requiresAuth).toBe(true);
    expect(commands.endSessions.adminOnly).toBe(true);
  });

  it("startSession: a new id and the upstream's session timeout", () => {
    expect(answer('startSession', { startSession: 1 })).toEqual({
      id: { id: new UUID('00112233-4455-6677-8899-aabbccddeeff') },
      timeoutMinutes: 45,
      ok: 1,
    });
  });
});

describe('emptyAdminRead: the tenant’s admin database is empty', () => {
  it('find, aggregate, count and distinct on admin.<collection> answer empty, noted namespace.admin-empty', () => {
    const find = emptyAdminRead(input({ find: 'atlascli', filter: {} }));
    expect(find?.reply.localReply).toEqual({
      cursor: { id: Long.ZERO, ns: 'admin.atlascli', firstBatch: [] },
      ok: 1,
    });
    expect(find?.notes).toEqual([{ kind: 'rewrite', rule: 'namespace.admin-empty', namespace: 'admin' }]);
    expect(
      emptyAdminRead(input({ aggregate: 'atlascli', pipeline: [{ $match: {} }, { $group: { _id: 1 } }], cursor: {} }))
        ?.reply.localReply,
    ).toEqual({ cursor: { id: Long.ZERO, ns: 'admin.atlascli', firstBatch: [] }, ok: 1 });
    expect(emptyAdminRead(input({ count: 'x' }))?.reply.localReply).toEqual({ n: 0, ok: 1 });
    expect(emptyAdminRead(input({ distinct: 'x', key: 'a' }))?.reply.localReply).toEqual({ values: [], ok: 1 });
  });

  it('leaves everything else to the namespace rules: system.*, other databases, writes, explain, aggregate: 1', () => {
    expect(emptyAdminRead(input({ find: 'system.users', filter: {} }))).toBeUndefined();
    expect(emptyAdminRead(input({ find: 'oplog.rs', filter: {} }, 'local'))).toBeUndefined();
    expect(emptyAdminRead(input({ find: 'x', filter: {} }, 'Admin'))).toBeUndefined();
    expect(emptyAdminRead(input({ insert: 'x', documents: [] }))).toBeUndefined();
    expect(emptyAdminRead(input({ aggregate: 'x', pipeline: [], explain: true }))).toBeUndefined();
    expect(emptyAdminRead(input({ aggregate: 1, pipeline: [{ $currentOp: {} }], cursor: {} }))).toBeUndefined();
  });
});

describe('through the engine: answered locally, never forwarded, any option accepted', () => {
  const engine = new IsolationEngine({
    config: configFromObject({}).isolation,
    cursors: new CursorRegistry(),
    sessionKey: Buffer.alloc(32, 1),
    collationSupported: () => true,
    upstreamFacts: () => ({ kind: 'replicaSet', buildInfo: BUILD_INFO, hello: HELLO }),
    now: () => STARTED,
    host: 'proxy-host',
  });
  const acme = engine.forTenant('acme', { clientAddress: '[::1]:4000' });
  const decide = (body: Document, db = 'admin'): Decision =>
    acme.decide(commandInput(Object.keys(body)[0]!, db, serialize({ ...body, $db: db }), [], false));
  const local = (decision: Decision): Document => {
    if (decision.action !== 'forward') throw new Error(`expected an answer, got ${decision.action}`);
    expect(decision.result.reply.localReply).toBeDefined();
    return decision.result.reply.localReply!;
  };

  it('serverStatus with section switches, getParameter for mongosh, whatsmyuri', () => {
    expect(local(decide({ serverStatus: 1, repl: 0, locks: false, comment: 'x' })).version).toBe('8.0.4');
    expect(local(decide({ getParameter: 1, featureCompatibilityVersion: 1 })).featureCompatibilityVersion).toEqual({
      version: '8.0',
    });
    expect(local(decide({ whatsmyuri: 1 })).you).toBe('[::1]:4000');
    expect(local(decide({ find: 'atlascli', filter: { managedClusterType: 'x' } })).cursor.firstBatch).toEqual([]);
  });

  it('internal fields are still refused; so are commands that act on others (killOp, $currentOp)', () => {
    expect(decide({ serverStatus: 1, $tenant: 'globex' })).toMatchObject({
      action: 'refuse',
      refusal: { rule: 'field.internal' },
    });
    expect(decide({ killOp: 1, op: 1 })).toMatchObject({ action: 'refuse', refusal: { rule: 'command.admin' } });
    expect(decide({ aggregate: 1, pipeline: [{ $currentOp: {} }], cursor: {} }).action).toBe('refuse');
  });
});

describe('every command the classification rewrites has a handler', () => {
  it('no rewritten command falls through to command.unhandled', async () => {
    const { buildHandlers } = await import('../../../src/rewrite/handlers.js');
    const { CLASSIFIED_COMMANDS, classify } = await import('../../../src/policy/commands.js');
    const table = buildHandlers(new CursorRegistry(), Buffer.alloc(32, 1));
    const missing = CLASSIFIED_COMMANDS.filter((name) => {
      const cls = classify(name);
      return cls.kind === 'rewrite' && table[cls.handler] === undefined;
    });
    expect(missing).toEqual([]);
  });
});
