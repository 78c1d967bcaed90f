import { describe, expect, it } from 'vitest';
import type { ListenerConfig, PassthroughRule } from '../../../src/config/types.js';
import { ConfigError, ErrorCodes, ProxyError, UpstreamError } from '../../../src/errors.js';
import {
  authenticatedUserOf,
  compilePassthroughRules,
  createPassthroughService,
  mapUserToTenant,
} from '../../../src/identity/passthrough.js';
import type {
  AuthAttemptContext,
  RelayConnection,
  SaslMechanism,
  SaslStepResult,
} from '../../../src/identity/types.js';
import { createLogger } from '../../../src/observability/logger.js';
import {
  authMessage,
  deriveKeys,
  hi,
  mongoPasswordDigest,
  parseAttributes,
  serverSignature,
  unescapeSaslName,
  verifyClientProof,
} from '../../../src/protocol/scram-crypto.js';
import { ScramClient } from '../../../src/upstream/scram.js';
import { Binary, type Document } from '../../../src/wire/bson.js';

const SALT = Buffer.from('pepper-and-salt!');
const ITERATIONS = 4096;

interface UpstreamUserRecord {
  db: string;
  password: string;
  roles?: Array<{ role: string; db: string }>;
}

interface FakeUpstreamOptions {
  users?: Record<string, UpstreamUserRecord>;
  /** Answer done only after an empty round trip (servers without skipEmptyExchange). */
  legacyEmptyExchange?: boolean;
  /** Replace the connectionStatus reply (or throw). */
  connectionStatus?: (
    authenticated: Array<{ user: string; db: string }>,
    roles: Array<{ role: string; db: string }>,
  ) => Document;
  /** Payloads as BSON Binary (as a deserializer without promoteBuffers gives) instead of Buffer. */
  binaryPayloads?: boolean;
  /** Failed commands throw (like a runCommand that checks ok) instead of returning ok: 0. */
  throwOnError?: boolean;
}

interface FakeRelay extends RelayConnection {
  commands: Array<{ db: string; command: Document }>;
  discarded: number;
}

/**
 * A relay to a scripted upstream that really verifies SCRAM (both mechanisms) and answers
 * connectionStatus with whoever authenticated on this connection.
 */
function fakeUpstream(options: FakeUpstreamOptions = {}) {
  const users = options.users ?? { alice: { db: 'admin', password: 'alice-pw' } };
  const relays: FakeRelay[] = [];
  const open = async (): Promise<RelayConnection> => {
    const authenticated: Array<{ user: string; db: string }> = [];
    const roles: Array<{ role: string; db: string }> = [];
    const conversations = new Map<
      number,
      { mechanism: string; db: string; user: string; clientFirstBare: string; serverFirst: string; step: number }
    >();
    let nextId = 100;
    const payload = (text: string): Buffer | Binary =>
      options.binaryPayloads ? new Binary(Buffer.from(text)) : Buffer.from(text);
    const fail = (code: number, errmsg: string): Document => {
      if (options.throwOnError) throw new UpstreamError(code, `upstream failed: ${errmsg}`);
      return { ok: 0, code, errmsg };
    };
    const relay: FakeRelay = {
      commands: [],
      discarded: 0,
      discard() {
        relay.discarded++;
      },
      async runCommand(db, command) {
        relay.commands.push({ db, command });
        if (relay.discarded > 0) throw new UpstreamError(ErrorCodes.SocketException, 'connection closed');
        const name = Object.keys(command)[0];
        if (name === 'saslStart') {
          const mechanism = command.mechanism as string;
          const clientFirst = (command.payload as Buffer).toString('utf8');
          const clientFirstBare = clientFirst.slice(3);
          const attrs = parseAttributes(clientFirstBare);
          const user = unescapeSaslName(attrs?.get('n') ?? '') ?? '';
          const serverFirst = `r=${attrs?.get('r')}UPSTREAMNONCE,s=${SALT.toString('base64')},i=${ITERATIONS}`;
          const id = nextId++;
          conversations.set(id, { mechanism, db, user, clientFirstBare, serverFirst, step: 1 });
          return { conversationId: id, done: false, payload: payload(serverFirst), ok: 1 };
        }
        if (name === 'saslContinue') {
          const conversation = conversations.get(command.conversationId as number);
          if (conversation === undefined) return fail(17, 'No SASL session state found');
          if (conversation.step === 2) {
            authenticated.push({ user: conversation.user, db: conversation.db });
            roles.push(...(users[conversation.user]?.roles ?? []));
            return { conversationId: command.conversationId, done: true, payload: payload(''), ok: 1 };
          }
          const hash = conversation.mechanism === 'SCRAM-SHA-256' ? 'sha256' : 'sha1';
          const record = users[conversation.user];
          const clientFinal = (command.payload as Buffer).toString('utf8');
          const at = clientFinal.indexOf(',p=');
          const withoutProof = clientFinal.slice(0, at);
          const proof = Buffer.from(clientFinal.slice(at + 3), 'base64');
          const message = authMessage(conversation.clientFirstBare, conversation.serverFirst, withoutProof);
          if (record === undefined || record.db !== conversation.db) return fail(18, 'Authentication failed.');
          const password =
            hash === 'sha256' ? record.password : mongoPasswordDigest(conversation.user, record.password);
          const keys = deriveKeys(hash, hi(hash, password, SALT, ITERATIONS));
          if (!verifyClientProof(hash, keys.storedKey, message, proof)) return fail(18, 'Authentication failed.');
          const signature = serverSignature(hash, keys.serverKey, message);
          if (options.legacyEmptyExchange) {
            conversation.step = 2;
            return {
              conversationId: command.conversationId,
              done: false,
              payload: payload(`v=${signature.toString('base64')}`),
              ok: 1,
            };
          }
          authenticated.push({ user: conversation.user, db: conversation.db });
          roles.push(...(record.roles ?? []));
          return {
            conversationId: command.conversationId,
            done: true,
            payload: payload(`v=${signature.toString('base64')}`),
            ok: 1,
          };
        }
        if (name === 'connectionStatus') {
          if (options.connectionStatus) return options.connectionStatus(authenticated, roles);
          return { authInfo: { authenticatedUsers: [...authenticated], authenticatedUserRoles: [...roles] }, ok: 1 };
        }
        return fail(13, `command ${String(name)} requires authentication`);
      },
    };
    relays.push(relay);
    return relay;
  };
  return { open, relays };
}

function capturingContext(): { context: AuthAttemptContext; logText: () => string } {
  const chunks: string[] = [];
  const logger = createLogger({ level: 'trace', destination: { write: (line: string) => void chunks.push(line) } });
  const listener: ListenerConfig = {
    name: 'test',
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods: ['scram-passthrough'],
    staticTenant: null,
  };
  return { context: { listener, remoteAddress: '127.0.0.1', logger }, logText: () => chunks.join('') };
}

function mechanismNamed(mechanisms: readonly SaslMechanism[], name: string): SaslMechanism {
  const found = mechanisms.find((m) => m.name === name);
  if (found === undefined) throw new Error(`no mechanism ${name}`);
  return found;
}

/** Drives a whole SCRAM conversation as a driver would, through the passthrough mechanism. */
async function authenticate(
  mechanism: SaslMechanism,
  {
    user,
    password,
    db = 'admin',
    skipEmptyExchange = true,
  }: { user: string; password: string; db?: string; skipEmptyExchange?: boolean },
  context: AuthAttemptContext,
): Promise<Extract<SaslStepResult, { done: true }>> {
  const client = new ScramClient({
    mechanism: mechanism.name as 'SCRAM-SHA-256' | 'SCRAM-SHA-1',
    username: user,
    password,
  });
  let result = await mechanism.start(
    { db, payload: client.clientFirst(), options: skipEmptyExchange ? { skipEmptyExchange: true } : undefined },
    context,
  );
  if (result.done) throw new Error('done after saslStart');
  result = await result.conversation.step(await client.clientFinal(result.payload));
  if (!result.done) {
    client.verifyServerFinal(result.payload);
    result = await result.conversation.step(Buffer.alloc(0));
    if (!result.done) throw new Error('not done after the empty exchange');
    return result;
  }
  client.verifyServerFinal(result.payload);
  return result;
}

async function expectAuthFailed(promise: Promise<unknown>): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(ProxyError.is(error)).toBe(true);
  expect(error).toMatchObject({ code: ErrorCodes.AuthenticationFailed, message: 'Authentication failed.' });
}

const ALICE_RULES: PassthroughRule[] = [{ user: 'alice', db: 'admin', tenant: 'tenant-a' }];

describe('createPassthroughService', () => {
  it('relays a SCRAM-SHA-256 conversation, confirms the user with connectionStatus and maps it', async () => {
    const upstream = fakeUpstream();
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    expect(service.mechanisms.map((m) => m.name)).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    const { context } = capturingContext();

    const result = await authenticate(
      mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
      { user: 'alice', password: 'alice-pw' },
      context,
    );

    expect(result.principal).toEqual({ user: 'alice', db: 'admin', tenant: 'tenant-a' });
    const [relay] = upstream.relays;
    expect(result.relay).toBe(relay);
    expect(relay?.discarded).toBe(0);
    const sent = relay?.commands ?? [];
    expect(sent.map((c) => Object.keys(c.command)[0])).toEqual(['saslStart', 'saslContinue', 'connectionStatus']);
    expect(sent[0]).toMatchObject({
      db: 'admin',
      command: { saslStart: 1, mechanism: 'SCRAM-SHA-256', options: { skipEmptyExchange: true } },
    });
    // The upstream's own conversation id is what goes back upstream.
    expect(sent[1]?.command.conversationId).toBe(100);
    expect(sent[2]).toEqual({ db: 'admin', command: { connectionStatus: 1, showPrivileges: false } });
  });

  it('relays SCRAM-SHA-1 and the legacy empty exchange, with Binary payloads from the upstream', async () => {
    const upstream = fakeUpstream({
      legacyEmptyExchange: true,
      binaryPayloads: true,
      users: { bob: { db: 'app', password: 'bob-pw' } },
    });
    const service = createPassthroughService({
      rules: [{ user: 'bob', db: 'app', tenant: 'tenant-b' }],
      openRelay: upstream.open,
    });
    const { context } = capturingContext();
    const result = await authenticate(
      mechanismNamed(service.mechanisms, 'SCRAM-SHA-1'),
      { user: 'bob', password: 'bob-pw', db: 'app', skipEmptyExchange: false },
      context,
    );
    expect(result.principal).toEqual({ user: 'bob', db: 'app', tenant: 'tenant-b' });
    const sent = upstream.relays[0]?.commands ?? [];
    expect(sent.map((c) => Object.keys(c.command)[0])).toEqual([
      'saslStart',
      'saslContinue',
      'saslContinue',
      'connectionStatus',
    ]);
    expect(sent[0]?.command).not.toHaveProperty('options');
  });

  it.each([false, true])(
    'refuses a wrong password the upstream rejects (error thrown: %s) and discards the relay',
    async (throwOnError) => {
      const upstream = fakeUpstream({ throwOnError });
      const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
      const { context } = capturingContext();
      await expectAuthFailed(
        authenticate(mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'), { user: 'alice', password: 'nope' }, context),
      );
      expect(upstream.relays[0]?.discarded).toBe(1);
      expect(upstream.relays[0]?.commands.some((c) => 'connectionStatus' in c.command)).toBe(false);
    },
  );

  it('refuses an unknown user with the same error', async () => {
    const upstream = fakeUpstream();
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context } = capturingContext();
    await expectAuthFailed(
      authenticate(mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'), { user: 'mallory', password: 'x' }, context),
    );
    expect(upstream.relays[0]?.discarded).toBe(1);
  });

  it('fails closed when connectionStatus fails', async () => {
    const upstream = fakeUpstream({
      connectionStatus: () => {
        throw new UpstreamError(ErrorCodes.CommandNotFound, 'no such command: connectionStatus');
      },
    });
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context, logText } = capturingContext();
    await expectAuthFailed(
      authenticate(
        mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
        { user: 'alice', password: 'alice-pw' },
        context,
      ),
    );
    expect(upstream.relays[0]?.discarded).toBe(1);
    expect(logText()).toContain('fail closed');
  });

  it.each([
    ['ok: 0', () => ({ ok: 0, code: 13, errmsg: 'nope' })],
    ['no authInfo', () => ({ ok: 1 })],
    ['no authenticated user', () => ({ authInfo: { authenticatedUsers: [], authenticatedUserRoles: [] }, ok: 1 })],
    [
      'two users',
      () => ({
        authInfo: {
          authenticatedUsers: [
            { user: 'alice', db: 'admin' },
            { user: 'root', db: 'admin' },
          ],
          authenticatedUserRoles: [],
        },
        ok: 1,
      }),
    ],
    ['a user without db', () => ({ authInfo: { authenticatedUsers: [{ user: 'alice' }] }, ok: 1 })],
  ])('fails closed when connectionStatus reports %s', async (_label, reply) => {
    const upstream = fakeUpstream({ connectionStatus: reply });
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context } = capturingContext();
    await expectAuthFailed(
      authenticate(
        mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
        { user: 'alice', password: 'alice-pw' },
        context,
      ),
    );
    expect(upstream.relays[0]?.discarded).toBe(1);
  });

  it('refuses a user the upstream accepts but no rule maps, and logs who', async () => {
    const upstream = fakeUpstream({ users: { carol: { db: 'admin', password: 'carol-pw' } } });
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context, logText } = capturingContext();
    await expectAuthFailed(
      authenticate(
        mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
        { user: 'carol', password: 'carol-pw' },
        context,
      ),
    );
    expect(upstream.relays[0]?.discarded).toBe(1);
    expect(logText()).toContain('"user":"carol"');
  });

  it('maps by role', async () => {
    const upstream = fakeUpstream({
      users: {
        dave: {
          db: 'admin',
          password: 'dave-pw',
          roles: [
            { role: 'readWrite', db: 'blue' },
            { role: 'tenant-blue', db: 'admin' },
          ],
        },
      },
    });
    const service = createPassthroughService({
      rules: [
        { role: 'tenant-blue@other', tenant: 'wrong-db' },
        { role: 'tenant-blue@admin', tenant: 'blue' },
      ],
      openRelay: upstream.open,
    });
    const { context } = capturingContext();
    const result = await authenticate(
      mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
      { user: 'dave', password: 'dave-pw' },
      context,
    );
    expect(result.principal).toEqual({ user: 'dave', db: 'admin', tenant: 'blue' });
  });

  it('maps by pattern with a tenant group', async () => {
    const upstream = fakeUpstream({ users: { 'svc-orders.green': { db: 'admin', password: 'pw' } } });
    const service = createPassthroughService({
      rules: [{ userPattern: 'svc-[a-z]+\\.(?<tenant>[a-z]+)', db: 'admin' }],
      openRelay: upstream.open,
    });
    const { context } = capturingContext();
    const result = await authenticate(
      mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
      { user: 'svc-orders.green', password: 'pw' },
      context,
    );
    expect(result.principal.tenant).toBe('green');
  });

  it('fails when the relay cannot be opened', async () => {
    const service = createPassthroughService({
      rules: ALICE_RULES,
      openRelay: () => Promise.reject(new UpstreamError(ErrorCodes.HostUnreachable, 'connect ECONNREFUSED')),
    });
    const { context } = capturingContext();
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-pw' });
    await expectAuthFailed(
      mechanismNamed(service.mechanisms, 'SCRAM-SHA-256').start(
        { db: 'admin', payload: client.clientFirst(), options: undefined },
        context,
      ),
    );
  });

  it('discards the relay on abandon() and refuses later steps', async () => {
    const upstream = fakeUpstream();
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context } = capturingContext();
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-pw' });
    const first = await mechanismNamed(service.mechanisms, 'SCRAM-SHA-256').start(
      { db: 'admin', payload: client.clientFirst(), options: undefined },
      context,
    );
    if (first.done) throw new Error('unexpected');
    first.conversation.abandon?.();
    first.conversation.abandon?.();
    expect(upstream.relays[0]?.discarded).toBe(1);
    await expectAuthFailed(first.conversation.step(await client.clientFinal(first.payload)));
    expect(upstream.relays[0]?.commands).toHaveLength(1);
  });

  it('does not discard a relay it handed over, and refuses a step after the end', async () => {
    const upstream = fakeUpstream();
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context } = capturingContext();
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-pw' });
    const first = await mechanismNamed(service.mechanisms, 'SCRAM-SHA-256').start(
      { db: 'admin', payload: client.clientFirst(), options: undefined },
      context,
    );
    if (first.done) throw new Error('unexpected');
    const last = await first.conversation.step(await client.clientFinal(first.payload));
    expect(last.done).toBe(true);
    first.conversation.abandon?.();
    await expectAuthFailed(first.conversation.step(Buffer.alloc(0)));
    expect(upstream.relays[0]?.discarded).toBe(0);
  });

  it('refuses an upstream reply without payload or conversationId', async () => {
    const relay: RelayConnection & { discarded: number } = {
      discarded: 0,
      discard() {
        this.discarded++;
      },
      runCommand: async () => ({ ok: 1, done: false }),
    };
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: async () => relay });
    const { context } = capturingContext();
    await expectAuthFailed(
      service.mechanisms[0]!.start(
        { db: 'admin', payload: Buffer.from('n,,n=alice,r=abc'), options: undefined },
        context,
      ),
    );
    expect(relay.discarded).toBe(1);
  });

  it('relays only the skipEmptyExchange option', async () => {
    const upstream = fakeUpstream();
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context } = capturingContext();
    await service.mechanisms[0]!.start(
      {
        db: 'admin',
        payload: Buffer.from('n,,n=alice,r=abcdef'),
        options: { skipEmptyExchange: true, evil: { $where: 1 } },
      },
      context,
    );
    expect(upstream.relays[0]?.commands[0]?.command.options).toEqual({ skipEmptyExchange: true });
  });

  it('never logs SASL payloads', async () => {
    const upstream = fakeUpstream({ users: { carol: { db: 'admin', password: 'carol-pw' } } });
    const service = createPassthroughService({ rules: ALICE_RULES, openRelay: upstream.open });
    const { context, logText } = capturingContext();
    await expectAuthFailed(
      authenticate(
        mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'),
        { user: 'carol', password: 'carol-pw' },
        context,
      ),
    );
    await expectAuthFailed(
      authenticate(mechanismNamed(service.mechanisms, 'SCRAM-SHA-256'), { user: 'alice', password: 'wrong' }, context),
    );
    const text = logText();
    expect(text.length).toBeGreaterThan(0);
    expect(text).not.toMatch(/r=|p=|v=|UPSTREAMNONCE|carol-pw|wrong/);
  });

  it('rejects mechanisms it cannot relay', () => {
    expect(() =>
      createPassthroughService({ rules: [], openRelay: async () => ({}) as RelayConnection, mechanisms: ['PLAIN'] }),
    ).toThrow(ConfigError);
    const only = createPassthroughService({
      rules: [],
      openRelay: async () => ({}) as RelayConnection,
      mechanisms: ['SCRAM-SHA-256'],
    });
    expect(only.mechanisms.map((m) => m.name)).toEqual(['SCRAM-SHA-256']);
  });
});

describe('passthrough rules', () => {
  const user = (name: string, db = 'admin', roles: Array<{ role: string; db: string }> = []) => ({
    user: name,
    db,
    roles,
  });

  it('takes the first matching rule, in order', () => {
    const rules = compilePassthroughRules([
      { user: 'alice', db: 'app', tenant: 'first' },
      { user: 'alice', tenant: 'second' },
      { userPattern: '.*', tenant: 'catch-all' },
    ]);
    expect(mapUserToTenant(rules, user('alice', 'app'))).toBe('first');
    expect(mapUserToTenant(rules, user('alice', 'admin'))).toBe('second');
    expect(mapUserToTenant(rules, user('zed'))).toBe('catch-all');
  });

  it('anchors patterns to the whole user name and honours db', () => {
    const rules = compilePassthroughRules([{ userPattern: 'svc-(?<tenant>[a-z]+)', db: 'admin' }]);
    expect(mapUserToTenant(rules, user('svc-blue'))).toBe('blue');
    expect(mapUserToTenant(rules, user('evil-svc-blue'))).toBeUndefined();
    expect(mapUserToTenant(rules, user('svc-blue-x'))).toBeUndefined();
    expect(mapUserToTenant(rules, user('svc-blue', 'app'))).toBeUndefined();
  });

  it('uses the rule tenant for a pattern without a group; an empty tenant group is no match', () => {
    const rules = compilePassthroughRules([
      { userPattern: 'reporting-.*', tenant: 'reports' },
      { userPattern: 'x(?<tenant>[a-z]*)' },
    ]);
    expect(mapUserToTenant(rules, user('reporting-nightly'))).toBe('reports');
    expect(mapUserToTenant(rules, user('xabc'))).toBe('abc');
    expect(mapUserToTenant(rules, user('x'))).toBeUndefined();
  });

  it('matches roles with or without a role database (role@db or db)', () => {
    const rules = compilePassthroughRules([
      { role: 'tenant-red@admin', tenant: 'red' },
      { role: 'tenant-green', db: 'admin', tenant: 'green' },
      { role: 'blue-team', tenant: 'blue' },
    ]);
    expect(mapUserToTenant(rules, user('u', 'app', [{ role: 'tenant-red', db: 'admin' }]))).toBe('red');
    expect(mapUserToTenant(rules, user('u', 'app', [{ role: 'tenant-red', db: 'app' }]))).toBeUndefined();
    expect(mapUserToTenant(rules, user('u', 'app', [{ role: 'tenant-green', db: 'admin' }]))).toBe('green');
    expect(mapUserToTenant(rules, user('u', 'admin', [{ role: 'tenant-green', db: 'app' }]))).toBeUndefined();
    expect(mapUserToTenant(rules, user('u', 'app', [{ role: 'blue-team', db: 'anything' }]))).toBe('blue');
  });

  it.each<[string, PassthroughRule, string]>([
    ['no matcher', { tenant: 't' }, 'identity.passthrough.rules[0]'],
    ['two matchers', { user: 'a', role: 'r', tenant: 't' }, 'identity.passthrough.rules[0]'],
    ['user without tenant', { user: 'a' }, 'identity.passthrough.rules[0].tenant'],
    ['role without tenant', { role: 'r' }, 'identity.passthrough.rules[0].tenant'],
    ['pattern without tenant or group', { userPattern: 'a.*' }, 'identity.passthrough.rules[0].tenant'],
    ['invalid pattern', { userPattern: '(', tenant: 't' }, 'identity.passthrough.rules[0].userPattern'],
    ['empty role db', { role: 'r@', tenant: 't' }, 'identity.passthrough.rules[0].role'],
    ['empty tenant', { user: 'a', tenant: '' }, 'identity.passthrough.rules[0].tenant'],
    [
      'a tenant group and a tenant',
      { userPattern: '(?<tenant>.+)', tenant: 't' },
      'identity.passthrough.rules[0].tenant',
    ],
    ['two role databases', { role: 'r@admin', db: 'app', tenant: 't' }, 'identity.passthrough.rules[0].db'],
  ])('rejects a rule with %s', (_label, rule, path) => {
    try {
      compilePassthroughRules([rule]);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).path).toBe(path);
    }
  });

  it('reads connectionStatus defensively', () => {
    expect(
      authenticatedUserOf({
        authInfo: {
          authenticatedUsers: [{ user: 'a', db: 'admin' }],
          authenticatedUserRoles: [{ role: 'r', db: 'admin' }, 'junk', { role: 1 }],
        },
        ok: 1,
      }),
    ).toEqual({ user: 'a', db: 'admin', roles: [{ role: 'r', db: 'admin' }] });
    expect(authenticatedUserOf({ authInfo: { authenticatedUsers: ['a'] }, ok: 1 })).toBeUndefined();
    expect(authenticatedUserOf({ authInfo: null, ok: 1 })).toBeUndefined();
  });
});
