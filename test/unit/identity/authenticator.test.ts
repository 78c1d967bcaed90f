/**
 * The per-connection rules that hold whatever the method: static and certificate tenants at
 * connect, SASL dispatch and conversations, speculative authentication in hello, X.509, the
 * same failure for everything, throttling, and a tenant that never changes.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Binary } from 'bson';
import type { ListenerConfig } from '../../../src/config/types.js';
import { ConnectionAuthenticator, PRE_AUTH_COMMANDS } from '../../../src/identity/authenticator.js';
import { createFailureThrottle } from '../../../src/identity/throttle.js';
import { ErrorCodes, ProxyError } from '../../../src/errors.js';
import type {
  AuthenticationEvent,
  AuthOutcome,
  CertificateMapper,
  IdentityServices,
  PeerCertificate,
  RelayConnection,
  SaslMechanism,
  SaslStepResult,
} from '../../../src/identity/types.js';

const logger = pino({ level: 'silent' });

function listener(overrides: Partial<ListenerConfig> = {}): ListenerConfig {
  return {
    name: 'l',
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods: [],
    staticTenant: null,
    ...overrides,
  };
}

/** A two-step mechanism: start answers "challenge", step succeeds only with payload "secret". */
function fakeScram(name = 'SCRAM-SHA-256', tenantOf: (user: string) => string = () => 'acme'): SaslMechanism {
  return {
    name,
    async start(request): Promise<SaslStepResult> {
      const user = /n=([^,]*)/.exec(request.payload.toString())?.[1] ?? '';
      return {
        done: false,
        payload: Buffer.from('challenge'),
        conversation: {
          async step(payload) {
            if (payload.toString() !== 'secret')
              throw new ProxyError(ErrorCodes.AuthenticationFailed, 'Authentication failed.');
            return {
              done: true,
              payload: Buffer.from('v=ok'),
              principal: { user, db: request.db, tenant: tenantOf(user) },
            };
          },
        },
      };
    },
  };
}

function services(
  extra: Partial<IdentityServices> = {},
): IdentityServices & { outcomes: AuthOutcome[]; events: AuthenticationEvent[] } {
  const outcomes: AuthOutcome[] = [];
  const events: AuthenticationEvent[] = [];
  return {
    throttle: createFailureThrottle({ baseMS: 0, maxMS: 0 }),
    observer: {
      authentication: (event) => {
        outcomes.push(event.outcome);
        events.push(event);
      },
    },
    outcomes,
    events,
    ...extra,
  };
}

const certificates: CertificateMapper = {
  tenantOf: (cert) => (cert.raw.toString() === 'acme-cert' ? 'acme' : undefined),
  subjectOf: (cert) => `CN=${cert.raw.toString()}`,
};

function cert(name: string, authorized = true): PeerCertificate {
  return { raw: Buffer.from(name), authorized };
}

function auth(listenerConfig: ListenerConfig, svc: IdentityServices, peer?: PeerCertificate): ConnectionAuthenticator {
  return new ConnectionAuthenticator({
    listener: listenerConfig,
    services: svc,
    remoteAddress: '10.0.0.1',
    peerCertificate: peer,
    logger,
  });
}

async function expectCode(promise: Promise<unknown>, code: number): Promise<void> {
  const error = await promise.catch((e: unknown) => e);
  expect(ProxyError.is(error), String(error)).toBe(true);
  expect((error as ProxyError).code).toBe(code);
}

describe('ConnectionAuthenticator', () => {
  it('allows exactly the handshake and authentication commands before a tenant exists', () => {
    expect([...PRE_AUTH_COMMANDS].sort()).toEqual(
      [
        'authenticate',
        'buildInfo',
        'buildinfo',
        'connectionStatus',
        'endSessions',
        'hello',
        'isMaster',
        'ismaster',
        'logout',
        'ping',
        'saslContinue',
        'saslStart',
      ].sort(),
    );
    const a = auth(listener(), services());
    expect(a.identity).toBeUndefined();
    expect(a.unauthorized('find').code).toBe(ErrorCodes.Unauthorized);
  });

  it('gives a static listener its tenant at connect', () => {
    const a = auth(listener({ methods: ['static'], staticTenant: 'solo' }), services());
    expect(a.identity).toEqual({ tenant: 'solo', method: 'static', principal: 'static' });
  });

  it('takes the tenant from a verified, matching certificate at connect', () => {
    const svc = services({ certificates });
    expect(auth(listener({ methods: ['mtls'] }), svc, cert('acme-cert')).identity?.tenant).toBe('acme');
    const unmatched = auth(listener({ methods: ['mtls'] }), svc, cert('stranger'));
    expect(unmatched.identity).toBeUndefined();
    expect(unmatched.unauthorized('find').message).toMatch(/matches no tenant mapping rule/);
    expect(auth(listener({ methods: ['mtls'] }), svc, cert('acme-cert', false)).identity).toBeUndefined();
    expect(
      svc.events.map(({ method, mechanism, outcome, user, tenant }) => ({ method, mechanism, outcome, user, tenant })),
    ).toEqual([
      { method: 'mtls', mechanism: 'certificate', outcome: 'success', user: 'CN=acme-cert', tenant: 'acme' },
      { method: 'mtls', mechanism: 'certificate', outcome: 'failure', user: 'CN=stranger', tenant: undefined },
    ]);
  });

  it('runs a SASL conversation and binds the tenant on success', async () => {
    const svc = services({ scram: { mechanisms: [fakeScram()], supportedMechanisms: () => ['SCRAM-SHA-256'] } });
    const a = auth(listener({ methods: ['scram'] }), svc);
    const first = await a.handle(
      'saslStart',
      { saslStart: 1, mechanism: 'SCRAM-SHA-256', payload: new Binary(Buffer.from('n,,n=ada,r=x')) },
      'admin',
    );
    expect(first.done).toBe(false);
    const final = await a.handle(
      'saslContinue',
      { saslContinue: 1, conversationId: first.conversationId, payload: new Binary(Buffer.from('secret')) },
      'admin',
    );
    expect(final.done).toBe(true);
    expect(a.identity).toMatchObject({ tenant: 'acme', method: 'scram', principal: 'ada@admin' });
    expect(a.connectionStatus()).toMatchObject({
      authInfo: { authenticatedUsers: [{ user: 'ada', db: 'admin' }] },
      tenant: 'acme',
      ok: 1,
    });
    expect(svc.outcomes).toEqual(['success']);
    expect(svc.events).toEqual([
      {
        listener: 'l',
        method: 'scram',
        mechanism: 'SCRAM-SHA-256',
        outcome: 'success',
        user: 'ada',
        tenant: 'acme',
        remoteAddress: '10.0.0.1',
      },
    ]);
  });

  it('answers every failure with the same AuthenticationFailed, and counts it', async () => {
    const svc = services({ scram: { mechanisms: [fakeScram()], supportedMechanisms: () => [] } });
    const a = auth(listener({ methods: ['scram'] }), svc);
    const first = await a.handle(
      'saslStart',
      { mechanism: 'SCRAM-SHA-256', payload: Buffer.from('n,,n=ada,r=x') },
      'admin',
    );
    await expectCode(
      a.handle('saslContinue', { conversationId: first.conversationId, payload: Buffer.from('wrong') }, 'admin'),
      18,
    );
    // The conversation is over after a failure.
    await expectCode(
      a.handle('saslContinue', { conversationId: first.conversationId, payload: Buffer.from('secret') }, 'admin'),
      ErrorCodes.ProtocolError,
    );
    expect(a.identity).toBeUndefined();
    expect(svc.outcomes).toEqual(['failure']);
    // Failures and successes report the same method and mechanism labels; never the payload.
    expect(svc.events).toEqual([
      expect.objectContaining({
        method: 'scram',
        mechanism: 'SCRAM-SHA-256',
        outcome: 'failure',
        user: 'ada',
        reason: 'AuthenticationFailed',
      }),
    ]);
    expect(JSON.stringify(svc.events)).not.toContain('wrong');
  });

  it('refuses mechanisms the listener does not enable', async () => {
    const a = auth(listener({ methods: ['static'], staticTenant: 't' }), services());
    await expectCode(
      a.handle('saslStart', { mechanism: 'SCRAM-SHA-256', payload: Buffer.alloc(0) }, 'admin'),
      ErrorCodes.MechanismUnavailable,
    );
    await expectCode(
      a.handle('saslStart', { mechanism: 'PLAIN', payload: Buffer.alloc(0) }, '$external'),
      ErrorCodes.MechanismUnavailable,
    );
  });

  it('refuses re-authentication as another identity; the same identity again is fine', async () => {
    const svc = services({
      scram: {
        mechanisms: [fakeScram('SCRAM-SHA-256', (u) => (u === 'eve' ? 'evil' : 'acme'))],
        supportedMechanisms: () => [],
      },
    });
    const a = auth(listener({ methods: ['scram'] }), svc);
    const login = async (user: string): Promise<unknown> => {
      const first = await a.handle(
        'saslStart',
        { mechanism: 'SCRAM-SHA-256', payload: Buffer.from(`n,,n=${user},r=x`) },
        'admin',
      );
      return a.handle(
        'saslContinue',
        { conversationId: first.conversationId, payload: Buffer.from('secret') },
        'admin',
      );
    };
    await login('ada');
    await login('ada');
    await expectCode(login('bob') as Promise<unknown>, 18);
    await expectCode(login('eve') as Promise<unknown>, 18);
    expect(a.identity).toMatchObject({ tenant: 'acme', method: 'scram', principal: 'ada@admin' });
    // logout cannot undo a tenant.
    expect(await a.handle('logout', { logout: 1 }, 'admin')).toEqual({ ok: 1 });
    expect(a.identity?.tenant).toBe('acme');
  });

  it('authenticates MONGODB-X509 against the presented certificate only', async () => {
    const svc = services({ certificates });
    const a = auth(listener({ methods: ['mtls'] }), svc, cert('acme-cert'));
    expect(await a.handle('authenticate', { authenticate: 1, mechanism: 'MONGODB-X509' }, '$external')).toEqual({
      dbname: '$external',
      user: 'CN=acme-cert',
      ok: 1,
    });
    await expectCode(
      a.handle('authenticate', { authenticate: 1, mechanism: 'MONGODB-X509', user: 'CN=someone-else' }, '$external'),
      18,
    );
    const none = auth(listener({ methods: ['mtls'] }), svc, undefined);
    await expectCode(none.handle('authenticate', { authenticate: 1, mechanism: 'MONGODB-X509' }, '$external'), 18);
    const wrongDb = auth(listener({ methods: ['mtls'] }), svc, cert('acme-cert'));
    await expectCode(wrongDb.handle('authenticate', { authenticate: 1, mechanism: 'MONGODB-X509' }, 'admin'), 18);
  });

  it('answers speculativeAuthenticate and saslSupportedMechs in hello; a failed speculative step is just omitted', async () => {
    const svc = services({
      scram: {
        mechanisms: [fakeScram()],
        supportedMechanisms: (db, user) => (user === 'ada' ? ['SCRAM-SHA-256'] : ['SCRAM-SHA-256', 'SCRAM-SHA-1']),
      },
    });
    const a = auth(listener({ methods: ['scram'] }), svc);
    const fields = await a.helloFields({
      hello: 1,
      saslSupportedMechs: 'admin.ada',
      speculativeAuthenticate: {
        saslStart: 1,
        mechanism: 'SCRAM-SHA-256',
        payload: Buffer.from('n,,n=ada,r=x'),
        db: 'admin',
      },
    });
    expect(fields.saslSupportedMechs).toEqual(['SCRAM-SHA-256']);
    expect(fields.speculativeAuthenticate).toMatchObject({ done: false });
    expect(fields.speculativeAuthenticate.ok).toBeUndefined();
    await a.handle(
      'saslContinue',
      { conversationId: fields.speculativeAuthenticate.conversationId, payload: Buffer.from('secret') },
      'admin',
    );
    expect(a.identity?.tenant).toBe('acme');

    const b = auth(listener({ methods: ['scram'] }), svc);
    const failed = await b.helloFields({
      hello: 1,
      speculativeAuthenticate: { saslStart: 1, mechanism: 'NOPE', payload: Buffer.alloc(0), db: 'admin' },
    });
    expect(failed.speculativeAuthenticate).toBeUndefined();
  });

  it('pins a passthrough relay on success', async () => {
    let discarded = 0;
    const relay: RelayConnection = { runCommand: async () => ({ ok: 1 }), discard: () => void (discarded += 1) };
    const mechanism: SaslMechanism = {
      name: 'SCRAM-SHA-256',
      start: async (request) => ({
        done: true,
        payload: Buffer.alloc(0),
        principal: { user: 'u', db: request.db, tenant: 't' },
        relay,
      }),
    };
    const a = auth(
      listener({ methods: ['scram-passthrough'] }),
      services({ passthrough: { mechanisms: [mechanism] } }),
    );
    await a.handle('saslStart', { mechanism: 'SCRAM-SHA-256', payload: Buffer.alloc(0) }, 'admin');
    expect(a.identity).toMatchObject({ tenant: 't', method: 'scram-passthrough', principal: 'u@admin' });
    expect(a.relay).toBe(relay);
    expect(discarded).toBe(0);
  });

  it('slows down repeated failures per user and per address', async () => {
    let clock = 0;
    const throttle = createFailureThrottle({ baseMS: 100, maxMS: 1000, now: () => clock });
    const key = { user: 'ada', address: '10.0.0.1' };
    expect(throttle.delayFor(key)).toBe(0);
    throttle.recordFailure(key);
    expect(throttle.delayFor(key)).toBe(100);
    throttle.recordFailure(key);
    throttle.recordFailure(key);
    expect(throttle.delayFor(key)).toBe(400);
    for (let i = 0; i < 10; i += 1) throttle.recordFailure(key);
    expect(throttle.delayFor(key)).toBe(1000);
    // Another user from the same address is slowed too; the same user elsewhere as well.
    expect(throttle.delayFor({ user: 'bob', address: '10.0.0.1' })).toBe(1000);
    expect(throttle.delayFor({ user: 'ada', address: '10.9.9.9' })).toBe(1000);
    throttle.recordSuccess(key);
    expect(throttle.delayFor({ user: 'ada', address: '10.9.9.9' })).toBe(0);
    clock += 16 * 60_000;
    expect(throttle.delayFor({ user: undefined, address: '10.0.0.1' })).toBe(0);
  });

  it('keeps the throttle table bounded', () => {
    const throttle = createFailureThrottle({ baseMS: 10, maxMS: 100, maxEntries: 3 });
    for (let i = 0; i < 10; i += 1) throttle.recordFailure({ user: `u${i}`, address: 'a' });
    expect(throttle.delayFor({ user: 'u0', address: 'elsewhere' })).toBe(0);
    expect(throttle.delayFor({ user: 'u9', address: 'elsewhere' })).toBe(10);
  });
});
