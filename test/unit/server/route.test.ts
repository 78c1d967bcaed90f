/**
 * Routing (src/server/route.ts), table-driven: where each command goes for each connection
 * state, with no socket, upstream or clock. The engine is the real one (shared-collection defaults).
 */
import { Long, UUID } from 'bson';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import { ErrorCodes, ProxyError, UpstreamError } from '../../../src/errors.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { IsolationEngine } from '../../../src/rewrite/engine.js';
import { PolicyRefusal } from '../../../src/errors.js';
import { CommandView } from '../../../src/server/command-view.js';
import {
  FIRE_AND_FORGET_COMMANDS,
  PRE_AUTH_FORWARDED,
  PRE_AUTH_LOCAL_OK,
  denialRule,
  failureOutcome,
  route,
  type ConnectionState,
  type Route,
} from '../../../src/server/route.js';
import { TenantLimitExceeded } from '../../../src/server/tenant-limits.js';
import { commandTraits } from '../../../src/upstream/command-traits.js';
import { deserialize, serialize, type Document } from '../../../src/wire/bson.js';
import { OpMsgFlag } from '../../../src/wire/constants.js';

function command(body: Document, options: { moreToCome?: boolean } = {}): CommandView {
  return new CommandView({
    requestId: 7,
    responseTo: 0,
    flagBits: options.moreToCome === true ? OpMsgFlag.moreToCome : 0,
    body: Buffer.from(serialize(body)),
    sequences: [],
  });
}

function engine(values: Record<string, unknown> = {}): IsolationEngine {
  return new IsolationEngine({
    config: configFromObject({ isolation: values }).isolation,
    cursors: new CursorRegistry(),
    sessionKey: Buffer.alloc(32, 1),
    collationSupported: () => false,
  });
}

const unauthenticated: ConnectionState = {
  tenant: undefined,
  overConnectionLimit: undefined,
  engine: undefined,
  engineError: undefined,
  unauthorized: (name) => new ProxyError(ErrorCodes.Unauthorized, `command ${name} requires authentication`),
};

function tenant(overrides: Partial<ConnectionState> = {}): ConnectionState {
  return { ...unauthenticated, tenant: 'acme', engine: engine().forTenant('acme'), ...overrides };
}

const overLimit: ConnectionState = {
  ...tenant(),
  overConnectionLimit: new TenantLimitExceeded('connections', 'too many connections for tenant acme'),
};

/** The route in a few comparable words: action and what it names. */
function summary(next: Route): string {
  switch (next.action) {
    case 'local':
      return `local ${next.reply.kind}`;
    case 'refuse':
      return `refuse ${next.rule} ${next.refusal.codeName}`;
    case 'forward':
      return `forward ${next.plan.rewrite === undefined ? 'as sent' : 'rewritten'}`;
    case 'virtual':
      return `virtual ${next.operation.kind}`;
  }
}

const lsid = { id: new UUID('0123456789abcdef0123456789abcdef') };

describe('route', () => {
  const table: Array<[string, Document, { moreToCome?: boolean }, ConnectionState, string]> = [
    // Before authentication: the handshake, authentication and a few harmless commands only.
    ['hello', { hello: 1, $db: 'admin' }, {}, unauthenticated, 'local hello'],
    ['legacy isMaster', { isMaster: 1, $db: 'admin' }, {}, unauthenticated, 'local hello'],
    [
      'saslStart',
      { saslStart: 1, mechanism: 'SCRAM-SHA-256', $db: 'admin' },
      {},
      unauthenticated,
      'local authenticate',
    ],
    ['logout', { logout: 1, $db: 'admin' }, {}, unauthenticated, 'local authenticate'],
    ['connectionStatus', { connectionStatus: 1, $db: 'admin' }, {}, unauthenticated, 'local connectionStatus'],
    ['ping', { ping: 1, $db: 'admin' }, {}, unauthenticated, 'local document'],
    ['ping with moreToCome', { ping: 1, $db: 'admin' }, { moreToCome: true }, unauthenticated, 'local none'],
    [
      'endSessions with moreToCome',
      { endSessions: [], $db: 'admin' },
      { moreToCome: true },
      unauthenticated,
      'local none',
    ],
    ['buildInfo (names no data)', { buildInfo: 1, $db: 'admin' }, {}, unauthenticated, 'forward as sent'],
    ['find', { find: 'orders', $db: 'app' }, {}, unauthenticated, 'refuse auth.required Unauthorized'],
    ['unknown command', { frobnicate: 1, $db: 'app' }, {}, unauthenticated, 'refuse auth.required Unauthorized'],
    [
      'buildInfo with moreToCome',
      { buildInfo: 1, $db: 'admin' },
      { moreToCome: true },
      unauthenticated,
      'refuse moreToCome.command InvalidOptions',
    ],
    // Over the tenant's connection limit: every command, even the handshake.
    [
      'hello over the connection limit',
      { hello: 1, $db: 'admin' },
      {},
      overLimit,
      'refuse limit.connections OperationFailed',
    ],
    [
      'find over the connection limit',
      { find: 'c', $db: 'app' },
      {},
      overLimit,
      'refuse limit.connections OperationFailed',
    ],
    // With a tenant: the isolation engine decides.
    ['hello with a tenant', { hello: 1, $db: 'admin' }, {}, tenant(), 'local hello'],
    ['find', { find: 'orders', filter: {}, $db: 'app' }, {}, tenant(), 'forward rewritten'],
    ['ping', { ping: 1, $db: 'admin' }, {}, tenant(), 'forward rewritten'],
    [
      'w:0 insert',
      { insert: 'orders', documents: [{ a: 1 }], $db: 'app' },
      { moreToCome: true },
      tenant(),
      'forward rewritten',
    ],
    [
      'find with moreToCome',
      { find: 'orders', $db: 'app' },
      { moreToCome: true },
      tenant(),
      'refuse moreToCome.command InvalidOptions',
    ],
    ['mapReduce', { mapReduce: 'orders', $db: 'app' }, {}, tenant(), 'refuse command.server-js Unauthorized'],
    ['unknown command', { frobnicate: 1, $db: 'app' }, {}, tenant(), 'refuse command.unknown CommandNotFound'],
    [
      'a tenant the settings cannot represent',
      { find: 'orders', $db: 'app' },
      {},
      tenant({ engine: undefined, engineError: new ProxyError(ErrorCodes.BadValue, 'not an ObjectId') }),
      'refuse tenant.unrepresentable BadValue',
    ],
    [
      'no engine and no reason',
      { find: 'orders', $db: 'app' },
      {},
      tenant({ engine: undefined }),
      'refuse tenant.unrepresentable InternalError',
    ],
    [
      'an engine that throws a ProxyError (reloaded settings)',
      { find: 'orders', $db: 'app' },
      {},
      tenant({
        engine: {
          decide: () => {
            throw new ProxyError(ErrorCodes.BadValue, 'not an int64');
          },
        },
      }),
      'refuse tenant.unrepresentable BadValue',
    ],
    [
      'audit-only: a refused command',
      { mapReduce: 'orders', $db: 'app' },
      {},
      tenant({ engine: engine({ mode: 'audit-only' }).forTenant('acme') }),
      'forward as sent',
    ],
  ];

  it.each(table)('%s → %s', (_name, body, options, state, expected) => {
    expect(summary(route(command(body, options), state))).toBe(expected);
  });

  it('answers ping before authentication with ok: 1', () => {
    expect(route(command({ ping: 1, $db: 'admin' }), unauthenticated)).toMatchObject({
      action: 'local',
      reply: { kind: 'document', document: { ok: 1 } },
      outcome: 'ok',
      decisions: [],
    });
  });

  it('refuses an unauthenticated command with the authenticator’s error', () => {
    const next = route(command({ find: 'orders', $db: 'app' }), {
      ...unauthenticated,
      unauthorized: (name) => new ProxyError(ErrorCodes.Unauthorized, `${name}: the certificate maps to no tenant`),
    });
    expect(next).toMatchObject({ action: 'refuse', decided: false, decisions: [] });
    if (next.action !== 'refuse') throw new Error('expected a refusal');
    expect(next.refusal.message).toBe('find: the certificate maps to no tenant');
  });

  it('reports an engine refusal as its decision, so it is audited once', () => {
    const next = route(command({ mapReduce: 'orders', $db: 'app' }), tenant());
    expect(next).toMatchObject({
      action: 'refuse',
      rule: 'command.server-js',
      decided: true,
      decisions: [{ decision: 'refused', rule: 'command.server-js' }],
    });
    if (next.action !== 'refuse') throw new Error('expected a refusal');
    expect(next.refusal).toBeInstanceOf(PolicyRefusal);
  });

  it('forwards a rewrite with its reply plan, its decisions and the traits of the rewritten body', () => {
    const original = command({
      find: 'orders',
      filter: { status: 'open' },
      lsid,
      $readPreference: { mode: 'primary' },
      $db: 'app',
    });
    const next = route(original, tenant());
    if (next.action !== 'forward' || next.plan.rewrite === undefined) throw new Error('expected a rewrite');
    expect(next.outcome).toBe('rewritten');
    expect(next.decisions).toContainEqual({ decision: 'rewritten', rule: 'filter.tenant' });
    expect(next.plan.reply).toMatchObject({ registerCursor: { db: 'app', coll: 'orders' } });
    const sent = next.plan.rewrite.body.toBytes();
    expect(deserialize(sent)['filter']).toEqual({ $and: [{ tenantId: { $eq: 'acme' } }, { status: 'open' }] });
    // The traits are those of the bytes sent (the session id is mapped per tenant), read
    // without scanning those bytes again.
    expect(next.plan.traits).toEqual(commandTraits(sent));
    expect(next.plan.traits.lsid).not.toBe(original.traits.lsid);
    expect(next.plan.traits).toMatchObject({ name: 'find', db: 'app', readPreference: { mode: 'primary' } });
  });

  it('forwards buildInfo before authentication as sent, with the traits of the decoded command', () => {
    const original = command({ buildInfo: 1, $db: 'admin' });
    const next = route(original, unauthenticated);
    expect(next).toMatchObject({ action: 'forward', outcome: 'ok', decisions: [] });
    if (next.action !== 'forward') throw new Error('expected a forward');
    expect(next.plan).toEqual({ rewrite: undefined, reply: undefined, traits: original.traits });
    expect(next.plan.traits).toMatchObject({ name: 'buildInfo', db: 'admin' });
  });

  it('audit-only: forwards as sent with what enforcement would have done', () => {
    const auditOnly = tenant({ engine: engine({ mode: 'audit-only' }).forTenant('acme') });
    expect(route(command({ mapReduce: 'orders', $db: 'app' }), auditOnly)).toMatchObject({
      action: 'forward',
      outcome: 'ok',
      decisions: [{ decision: 'would-refuse', rule: 'command.server-js' }],
      plan: { rewrite: undefined, reply: undefined },
    });
    const find = route(command({ find: 'orders', filter: {}, $db: 'app' }), auditOnly);
    expect(find.decisions).toContainEqual({ decision: 'would-rewrite', rule: 'filter.tenant' });
  });

  it("answers the engine's local reply itself (killCursors naming only another tenant's cursors)", () => {
    const next = route(command({ killCursors: 'orders', cursors: [Long.fromNumber(42)], $db: 'app' }), tenant());
    expect(next).toMatchObject({ action: 'local', reply: { kind: 'document' } });
    if (next.action !== 'local' || next.reply.kind !== 'document') throw new Error('expected a local document');
    expect(next.reply.document).toMatchObject({ cursorsKilled: [], ok: 1 });
  });

  it('lets an engine bug surface (not a refusal)', () => {
    const broken = tenant({
      engine: {
        decide: () => {
          throw new TypeError('bug');
        },
      },
    });
    expect(() => route(command({ find: 'orders', $db: 'app' }), broken)).toThrow(TypeError);
  });

  it('keeps the pre-auth and moreToCome tables as documented', () => {
    expect([...PRE_AUTH_LOCAL_OK]).toEqual(['ping', 'endSessions']);
    expect([...PRE_AUTH_FORWARDED]).toEqual(['buildInfo', 'buildinfo']);
    expect([...FIRE_AND_FORGET_COMMANDS]).toEqual(['insert', 'update', 'delete', 'bulkWrite', 'endSessions']);
  });
});

describe('how a failed command counts', () => {
  const refusal = new PolicyRefusal('filter.where', 'no $where');
  const limit = new TenantLimitExceeded('rate', 'over the rate');
  const unauthorized = new ProxyError(ErrorCodes.Unauthorized, 'authenticate first');
  const authFailed = new ProxyError(ErrorCodes.AuthenticationFailed, 'Authentication failed.');
  const upstream = new UpstreamError(ErrorCodes.HostUnreachable, 'gone');

  it.each([
    [refusal, 'ok', 'find', 'denied', 'filter.where'],
    [limit, 'ok', 'find', 'denied', 'limit.rate'],
    [unauthorized, 'denied', 'find', 'denied', 'auth.required'],
    [authFailed, 'ok', 'saslContinue', 'denied', 'denied'],
    [authFailed, 'ok', 'find', 'error', 'denied'],
    [upstream, 'ok', 'find', 'upstream_error', 'denied'],
    [new ProxyError(ErrorCodes.HostUnreachable, 'relay lost'), 'rewritten', 'find', 'upstream_error', 'denied'],
    [new TypeError('bug'), 'ok', 'find', 'error', 'denied'],
  ] as const)('%s (outcome so far %s, command %s) → %s, audit rule %s', (error, current, name, outcome, rule) => {
    expect(failureOutcome(error, current, name)).toBe(outcome);
    expect(denialRule(error)).toBe(rule);
  });
});
