import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { ScramMechanism } from '../../../src/config/types.js';
import { ConfigError, ErrorCodes, ProxyError } from '../../../src/errors.js';
import {
  credentialLookup,
  formatCredentialsFile,
  hashPassword,
  type CredentialEntry,
} from '../../../src/identity/credentials.js';
import { createScramService, scramServiceFor } from '../../../src/identity/scram-server.js';
import type { AuthAttemptContext, SaslMechanism, SaslStepResult, ScramService } from '../../../src/identity/types.js';
import {
  authMessage,
  clientProof,
  deriveKeys,
  escapeSaslName,
  hashOf,
  hi,
  mongoPasswordDigest,
} from '../../../src/protocol/scram-crypto.js';
import { ScramClient } from '../../../src/upstream/scram.js';

const b64 = (s: string): Buffer => Buffer.from(s, 'base64');
const utf8 = (b: Uint8Array): string => Buffer.from(b).toString('utf8');
const bytes = (s: string): Buffer => Buffer.from(s, 'utf8');

const context: AuthAttemptContext = {
  listener: { name: 'test', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['scram'], staticTenant: null },
  remoteAddress: '127.0.0.1',
  logger: pino({ level: 'silent' }),
};

// RFC 7677 §3 (SCRAM-SHA-256), the same as auth.md's SCRAM-SHA-256 conversation.
const RFC7677 = {
  salt: 'W22ZaJ0SNY7soEsUEjb6gQ==',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

// RFC 5802 §5 (SCRAM-SHA-1 over the plain password "pencil", no MongoDB digest).
const RFC5802 = {
  salt: 'QSXCR+Q6sek8bf92',
  clientFirst: 'n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL',
  serverNonce: '3rfcNHYJY1ZVvWVs7j',
  serverFirst: 'r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096',
  clientFinal: 'c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=',
  serverFinal: 'v=rmF9pqV8S7suAoZWja4dJRkFsKQ=',
};

// auth.md SCRAM-SHA-1 conversation (MongoDB password digest of user:mongo:pencil).
const MONGO_SHA1 = {
  salt: 'rQ9ZY3MntBeuP3E1TDVC4w==',
  clientFirst: 'n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL',
  serverNonce: 'Ho+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE',
  serverFirst: 'r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000',
  clientFinal: 'c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,p=MC2T8BvbmWRckDw8oWl5IVghwCY=',
  serverFinal: 'v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=',
};

const SKIP = { skipEmptyExchange: true };

function mechanismOf(service: ScramService, name: ScramMechanism): SaslMechanism {
  const mechanism = service.mechanisms.find((m) => m.name === name);
  if (mechanism === undefined) throw new Error(`${name} not enabled`);
  return mechanism;
}

/** Asserts the one failure every mistake produces. */
async function expectAuthFailure(promise: Promise<unknown>): Promise<ProxyError> {
  const error = await promise.then(
    () => {
      throw new Error('expected authentication to fail');
    },
    (e: unknown) => e,
  );
  expect(ProxyError.is(error)).toBe(true);
  const proxyError = error as ProxyError;
  expect(proxyError.code).toBe(ErrorCodes.AuthenticationFailed);
  expect(proxyError.message).toBe('Authentication failed.');
  return proxyError;
}

function notDone(result: SaslStepResult): Extract<SaslStepResult, { done: false }> {
  expect(result.done).toBe(false);
  if (result.done) throw new Error('unexpected done');
  return result;
}

function done(result: SaslStepResult): Extract<SaslStepResult, { done: true }> {
  expect(result.done).toBe(true);
  if (!result.done) throw new Error('not done');
  return result;
}

// Users shared by most tests: cheap iteration counts keep them fast.
const ALICE = hashPassword({
  user: 'alice',
  tenant: 'acme',
  password: 'alice-password',
  mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'],
  iterations: 4096,
});
const ODD_NAME = hashPassword({
  user: 'we,ird=name ünï',
  db: 'tenants',
  tenant: 'globex',
  password: 'pen\u00ADcil ☃',
  mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'],
  iterations: 4096,
});
const SHA1_ONLY = hashPassword({
  user: 'legacy',
  tenant: 'initech',
  password: 'old',
  mechanisms: ['SCRAM-SHA-1'],
  iterations: 4096,
});
const lookup = credentialLookup([ALICE, ODD_NAME, SHA1_ONLY]);
const service = scramServiceFor(lookup, ['SCRAM-SHA-256', 'SCRAM-SHA-1']);

/** A whole conversation with the proxy's own SCRAM client; returns the final result. */
async function converse(
  svc: ScramService,
  mechanismName: ScramMechanism,
  options: { user: string; password: string; db?: string; skipEmptyExchange?: boolean },
): Promise<Extract<SaslStepResult, { done: true }>> {
  const client = new ScramClient({ mechanism: mechanismName, username: options.user, password: options.password });
  const mechanism = mechanismOf(svc, mechanismName);
  const first = notDone(
    await mechanism.start(
      {
        db: options.db ?? 'admin',
        payload: client.clientFirst(),
        options: options.skipEmptyExchange === false ? undefined : SKIP,
      },
      context,
    ),
  );
  const second = await first.conversation.step(await client.clientFinal(first.payload));
  client.verifyServerFinal(second.payload);
  expect(client.verified).toBe(true);
  if (second.done) return second;
  return done(await second.conversation.step(Buffer.alloc(0)));
}

describe('server-side RFC vectors', () => {
  it('plays RFC 7677 (SCRAM-SHA-256) byte for byte', async () => {
    const entry = hashPassword({
      user: 'user',
      tenant: 'acme',
      password: 'pencil',
      iterations: 4096,
      salts: { 'SCRAM-SHA-256': b64(RFC7677.salt) },
    });
    const svc = scramServiceFor(credentialLookup([entry]), ['SCRAM-SHA-256'], {
      serverNonce: () => RFC7677.serverNonce,
    });
    const first = notDone(
      await mechanismOf(svc, 'SCRAM-SHA-256').start(
        { db: 'admin', payload: bytes(RFC7677.clientFirst), options: SKIP },
        context,
      ),
    );
    expect(utf8(first.payload)).toBe(RFC7677.serverFirst);
    const final = done(await first.conversation.step(bytes(RFC7677.clientFinal)));
    expect(utf8(final.payload)).toBe(RFC7677.serverFinal);
    expect(final.principal).toEqual({ user: 'user', db: 'admin', tenant: 'acme' });
  });

  it('plays RFC 5802 (SCRAM-SHA-1 over a plain password) byte for byte', async () => {
    const keys = deriveKeys('sha1', hi('sha1', 'pencil', b64(RFC5802.salt), 4096));
    const entry: CredentialEntry = {
      user: 'user',
      db: 'admin',
      tenant: 'acme',
      mechanisms: {
        'SCRAM-SHA-1': {
          iterationCount: 4096,
          salt: b64(RFC5802.salt),
          storedKey: keys.storedKey,
          serverKey: keys.serverKey,
        },
      },
    };
    const svc = scramServiceFor(credentialLookup([entry]), ['SCRAM-SHA-1'], { serverNonce: () => RFC5802.serverNonce });
    const first = notDone(
      await mechanismOf(svc, 'SCRAM-SHA-1').start(
        { db: 'admin', payload: bytes(RFC5802.clientFirst), options: SKIP },
        context,
      ),
    );
    expect(utf8(first.payload)).toBe(RFC5802.serverFirst);
    const final = done(await first.conversation.step(bytes(RFC5802.clientFinal)));
    expect(utf8(final.payload)).toBe(RFC5802.serverFinal);
  });

  it('plays the auth spec SCRAM-SHA-1 conversation (MongoDB password digest) byte for byte', async () => {
    const entry = hashPassword({
      user: 'user',
      tenant: 'acme',
      password: 'pencil',
      mechanisms: ['SCRAM-SHA-1'],
      salts: { 'SCRAM-SHA-1': b64(MONGO_SHA1.salt) },
    });
    expect(entry.mechanisms['SCRAM-SHA-1']?.iterationCount).toBe(10_000);
    const svc = scramServiceFor(credentialLookup([entry]), ['SCRAM-SHA-1'], {
      serverNonce: () => MONGO_SHA1.serverNonce,
    });
    const first = notDone(
      await mechanismOf(svc, 'SCRAM-SHA-1').start(
        { db: 'admin', payload: bytes(MONGO_SHA1.clientFirst), options: SKIP },
        context,
      ),
    );
    expect(utf8(first.payload)).toBe(MONGO_SHA1.serverFirst);
    const final = done(await first.conversation.step(bytes(MONGO_SHA1.clientFinal)));
    expect(utf8(final.payload)).toBe(MONGO_SHA1.serverFinal);
  });

  it('without skipEmptyExchange, answers the proof with done:false and finishes on an empty message (pre-4.4)', async () => {
    const entry = hashPassword({
      user: 'user',
      tenant: 'acme',
      password: 'pencil',
      iterations: 4096,
      salts: { 'SCRAM-SHA-256': b64(RFC7677.salt) },
    });
    const svc = scramServiceFor(credentialLookup([entry]), ['SCRAM-SHA-256'], {
      serverNonce: () => RFC7677.serverNonce,
    });
    for (const options of [undefined, {}, { skipEmptyExchange: false }, { skipEmptyExchange: 1 }]) {
      const first = notDone(
        await mechanismOf(svc, 'SCRAM-SHA-256').start(
          { db: 'admin', payload: bytes(RFC7677.clientFirst), options },
          context,
        ),
      );
      const second = notDone(await first.conversation.step(bytes(RFC7677.clientFinal)));
      expect(utf8(second.payload)).toBe(RFC7677.serverFinal);
      const last = done(await second.conversation.step(Buffer.alloc(0)));
      expect(last.payload.length).toBe(0);
      expect(last.principal).toEqual({ user: 'user', db: 'admin', tenant: 'acme' });
    }
  });

  it('refuses a non-empty message in the closing round', async () => {
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-password' });
    const first = notDone(
      await mechanismOf(service, 'SCRAM-SHA-256').start(
        { db: 'admin', payload: client.clientFirst(), options: undefined },
        context,
      ),
    );
    const second = notDone(await first.conversation.step(await client.clientFinal(first.payload)));
    await expectAuthFailure(second.conversation.step(bytes('v=whatever')));
  });
});

describe('conversations with the proxy SCRAM client', () => {
  const cases: Array<[string, CredentialEntry, string, ScramMechanism]> = [
    ['SCRAM-SHA-256', ALICE, 'alice-password', 'SCRAM-SHA-256'],
    ['SCRAM-SHA-1', ALICE, 'alice-password', 'SCRAM-SHA-1'],
    ['SCRAM-SHA-256, escaped name, SASLprep password', ODD_NAME, 'pen\u00ADcil ☃', 'SCRAM-SHA-256'],
    ['SCRAM-SHA-256, SASLprep-equivalent password', ODD_NAME, 'pencil ☃', 'SCRAM-SHA-256'],
    ['SCRAM-SHA-1, escaped name', ODD_NAME, 'pen\u00ADcil ☃', 'SCRAM-SHA-1'],
  ];
  it.each(cases)('%s', async (_title, entry, password, mechanism) => {
    for (const skipEmptyExchange of [true, false]) {
      const result = await converse(service, mechanism, {
        user: entry.user,
        password,
        db: entry.db,
        skipEmptyExchange,
      });
      expect(result.principal).toEqual({ user: entry.user, db: entry.db, tenant: entry.tenant });
    }
  });

  it('sends the user name SASL-escaped and resolves it unescaped', async () => {
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: ODD_NAME.user, password: 'x' });
    const first = utf8(client.clientFirst());
    expect(first).toContain(`n=${escapeSaslName(ODD_NAME.user)},`);
    expect(first).toContain('=2C');
    expect(first).toContain('=3D');
  });

  it('uses the stored salt and iteration count, and a fresh 32-character server nonce each time', async () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const first = notDone(
        await mechanismOf(service, 'SCRAM-SHA-256').start(
          { db: 'admin', payload: bytes('n,,n=alice,r=abc'), options: SKIP },
          context,
        ),
      );
      const match = /^r=abc([^,]+),s=([^,]+),i=(\d+)$/.exec(utf8(first.payload));
      expect(match).not.toBeNull();
      nonces.add(match![1]!);
      expect(match![1]).toHaveLength(32);
      expect(b64(match![2]!)).toEqual(ALICE.mechanisms['SCRAM-SHA-256']!.salt);
      expect(Number(match![3])).toBe(4096);
    }
    expect(nonces.size).toBe(3);
  });

  it('authenticates in the database of the entry only, and reports that database', async () => {
    const result = await converse(service, 'SCRAM-SHA-256', {
      user: ODD_NAME.user,
      password: 'pencil ☃',
      db: 'tenants',
    });
    expect(result.principal.db).toBe('tenants');
    await expectAuthFailure(
      converse(service, 'SCRAM-SHA-256', { user: ODD_NAME.user, password: 'pencil ☃', db: 'admin' }),
    );
    await expectAuthFailure(
      converse(service, 'SCRAM-SHA-256', { user: 'alice', password: 'alice-password', db: 'tenants' }),
    );
  });
});

describe('failures look the same whatever the cause', () => {
  it('wrong password and unknown user fail identically, at the proof step', async () => {
    const wrong = await expectAuthFailure(converse(service, 'SCRAM-SHA-256', { user: 'alice', password: 'nope' }));
    const unknown = await expectAuthFailure(converse(service, 'SCRAM-SHA-256', { user: 'mallory', password: 'nope' }));
    expect(wrong.message).toBe(unknown.message);
    expect(wrong.code).toBe(unknown.code);
    expect(wrong.labels).toEqual(unknown.labels);
  });

  it('gives an unknown user a stable salt of the real length and the default iteration count', async () => {
    const serverFirst = async (
      mechanism: ScramMechanism,
      user: string,
      db = 'admin',
    ): Promise<{ salt: Buffer; i: number }> => {
      const result = notDone(
        await mechanismOf(service, mechanism).start(
          { db, payload: bytes(`n,,n=${escapeSaslName(user)},r=abc`), options: SKIP },
          context,
        ),
      );
      const match = /^r=abc[^,]+,s=([^,]+),i=(\d+)$/.exec(utf8(result.payload));
      expect(match).not.toBeNull();
      return { salt: b64(match![1]!), i: Number(match![2]) };
    };
    const a = await serverFirst('SCRAM-SHA-256', 'mallory');
    const b = await serverFirst('SCRAM-SHA-256', 'mallory');
    expect(a.salt).toEqual(b.salt);
    expect(a.salt).toHaveLength(28);
    expect(a.i).toBe(15_000);
    expect((await serverFirst('SCRAM-SHA-256', 'trudy')).salt).not.toEqual(a.salt);
    expect((await serverFirst('SCRAM-SHA-256', 'mallory', 'other')).salt).not.toEqual(a.salt);
    const sha1 = await serverFirst('SCRAM-SHA-1', 'mallory');
    expect(sha1.salt).toHaveLength(16);
    expect(sha1.i).toBe(10_000);
    // Another proxy process (another secret) gives other fake salts.
    const other = scramServiceFor(lookup, ['SCRAM-SHA-256']);
    const result = notDone(
      await mechanismOf(other, 'SCRAM-SHA-256').start(
        { db: 'admin', payload: bytes('n,,n=mallory,r=abc'), options: SKIP },
        context,
      ),
    );
    expect(utf8(result.payload)).not.toContain(`s=${a.salt.toString('base64')}`);
  });

  it('fails a user who lacks the mechanism at the first step (as MongoDB does; saslSupportedMechs says so anyway)', async () => {
    // A driver left to choose tries SCRAM-SHA-256 speculatively in hello; it must get no answer
    // for a SCRAM-SHA-1-only user, or it would continue that conversation with SHA-1 keys.
    await expectAuthFailure(
      mechanismOf(service, 'SCRAM-SHA-256').start(
        { db: 'admin', payload: bytes('n,,n=legacy,r=abc'), options: SKIP },
        context,
      ),
    );
    expect(service.supportedMechanisms('admin', 'legacy')).toEqual(['SCRAM-SHA-1']);
    const ok = await converse(service, 'SCRAM-SHA-1', { user: 'legacy', password: 'old' });
    expect(ok.principal.tenant).toBe('initech');
  });

  it('refuses a client-final message with another nonce', async () => {
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-password' });
    const first = notDone(
      await mechanismOf(service, 'SCRAM-SHA-256').start(
        { db: 'admin', payload: client.clientFirst(), options: SKIP },
        context,
      ),
    );
    const final = utf8(await client.clientFinal(first.payload));
    const nonce = /,r=([^,]+),/.exec(final)![1]!;
    const tampered = final.replace(`r=${nonce}`, `r=${nonce.slice(0, -1)}${nonce.endsWith('A') ? 'B' : 'A'}`);
    await expectAuthFailure(first.conversation.step(bytes(tampered)));
  });

  it('refuses a proof replayed into another conversation', async () => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-password' },
      { nonce: 'fixed-nonce' },
    );
    const mechanism = mechanismOf(service, 'SCRAM-SHA-256');
    const first = notDone(
      await mechanism.start({ db: 'admin', payload: client.clientFirst(), options: SKIP }, context),
    );
    const final = await client.clientFinal(first.payload);
    done(await first.conversation.step(final));
    // Same client nonce again: the server nonce differs, so the old proof is worthless.
    const again = notDone(
      await mechanism.start({ db: 'admin', payload: bytes('n,,n=alice,r=fixed-nonce'), options: SKIP }, context),
    );
    await expectAuthFailure(again.conversation.step(final));
  });

  it('never reuses a conversation: after success, after failure, after abandon', async () => {
    const mechanism = mechanismOf(service, 'SCRAM-SHA-256');
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-password' });
    const first = notDone(
      await mechanism.start({ db: 'admin', payload: client.clientFirst(), options: SKIP }, context),
    );
    const final = await client.clientFinal(first.payload);
    done(await first.conversation.step(final));
    await expectAuthFailure(first.conversation.step(final));
    await expectAuthFailure(first.conversation.step(Buffer.alloc(0)));

    const client2 = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'wrong' });
    const failed = notDone(
      await mechanism.start({ db: 'admin', payload: client2.clientFirst(), options: SKIP }, context),
    );
    const wrongFinal = await client2.clientFinal(failed.payload);
    await expectAuthFailure(failed.conversation.step(bytes('garbage')));
    // The real (well-formed) message cannot be tried again on the failed conversation.
    await expectAuthFailure(failed.conversation.step(wrongFinal));

    const client3 = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-password' });
    const abandoned = notDone(
      await mechanism.start({ db: 'admin', payload: client3.clientFirst(), options: SKIP }, context),
    );
    const goodFinal = await client3.clientFinal(abandoned.payload);
    abandoned.conversation.abandon?.();
    await expectAuthFailure(abandoned.conversation.step(goodFinal));
  });
});

/** client-final for a hand-written exchange (gs2 headers the proxy's client never sends). */
function handFinal(options: {
  mechanism: ScramMechanism;
  user: string;
  password: string;
  clientFirstBare: string;
  serverFirst: string;
  channelBinding: string;
}): string {
  const hash = hashOf(options.mechanism);
  const match = /^r=([^,]+),s=([^,]+),i=(\d+)$/.exec(options.serverFirst)!;
  const normalized =
    options.mechanism === 'SCRAM-SHA-1' ? mongoPasswordDigest(options.user, options.password) : options.password;
  const keys = deriveKeys(hash, hi(hash, normalized, b64(match[2]!), Number(match[3])));
  const withoutProof = `c=${options.channelBinding},r=${match[1]}`;
  const proof = clientProof(
    hash,
    keys.clientKey,
    keys.storedKey,
    authMessage(options.clientFirstBare, options.serverFirst, withoutProof),
  );
  return `${withoutProof},p=${proof.toString('base64')}`;
}

describe('gs2 header and channel binding', () => {
  const mechanism = mechanismOf(service, 'SCRAM-SHA-256');
  const run = async (gs2: string, channelBinding: string, user = 'alice'): Promise<SaslStepResult> => {
    const clientFirstBare = `n=${escapeSaslName(user)},r=client-nonce`;
    const first = notDone(
      await mechanism.start({ db: 'admin', payload: bytes(gs2 + clientFirstBare), options: SKIP }, context),
    );
    const final = handFinal({
      mechanism: 'SCRAM-SHA-256',
      user,
      password: 'alice-password',
      clientFirstBare,
      serverFirst: utf8(first.payload),
      channelBinding,
    });
    return first.conversation.step(bytes(final));
  };

  it('accepts an authzid naming the user itself; c= must then be base64 of that header', async () => {
    const header = 'n,a=alice,';
    const result = done(await run(header, Buffer.from(header).toString('base64')));
    expect(result.principal.user).toBe('alice');
    await expectAuthFailure(run(header, 'biws'));
  });

  it('refuses an authzid naming someone else', async () => {
    await expectAuthFailure(run('n,a=bob,', Buffer.from('n,a=bob,').toString('base64')));
    await expectAuthFailure(run('n,a=,', Buffer.from('n,a=,').toString('base64')));
  });

  it('refuses c= that is not base64 of "n,,"', async () => {
    await expectAuthFailure(run('n,,', Buffer.from('y,,').toString('base64')));
    await expectAuthFailure(run('n,,', ''));
    await expectAuthFailure(run('n,,', 'biws='));
  });

  it.each(['p=tls-unique,,', 'p=tls-server-end-point,,', 'y,,', 'x,,', ',,', 'n,x=y,', 'n,a=alice', 'n'])(
    'refuses the gs2 header %j',
    async (header) => {
      await expectAuthFailure(
        mechanism.start({ db: 'admin', payload: bytes(`${header}n=alice,r=abc`), options: SKIP }, context),
      );
    },
  );
});

describe('malformed input never crashes', () => {
  const mechanism = mechanismOf(service, 'SCRAM-SHA-256');

  it.each([
    ['empty', ''],
    ['no bare message', 'n,,'],
    ['mandatory extension', 'n,,m=ext,n=alice,r=abc'],
    ['nonce before name', 'n,,r=abc,n=alice'],
    ['no nonce', 'n,,n=alice'],
    ['empty nonce', 'n,,n=alice,r='],
    ['nonce with a space', 'n,,n=alice,r=a b'],
    ['empty user', 'n,,n=,r=abc'],
    ['bad escape', 'n,,n=al=2Xice,r=abc'],
    ['raw "=" in name', 'n,,n=a=b,r=abc'],
    ['repeated attribute', 'n,,n=alice,r=abc,r=def'],
    ['garbage attribute', 'n,,n=alice,r=abc,xyz'],
    ['empty attribute', 'n,,n=alice,,r=abc'],
    ['not SCRAM at all', 'hello world'],
  ])('client-first: %s', async (_title, payload) => {
    await expectAuthFailure(mechanism.start({ db: 'admin', payload: bytes(payload), options: SKIP }, context));
  });

  it('ignores unknown extensions after the nonce (RFC 5802)', async () => {
    const result = await mechanism.start(
      { db: 'admin', payload: bytes('n,,n=alice,r=abc,x=ext'), options: SKIP },
      context,
    );
    expect(result.done).toBe(false);
  });

  it('refuses invalid UTF-8, oversize payloads, a missing database and a non-buffer payload', async () => {
    await expectAuthFailure(
      mechanism.start({ db: 'admin', payload: Buffer.from([0x6e, 0x2c, 0x2c, 0xff, 0xfe]), options: SKIP }, context),
    );
    await expectAuthFailure(
      mechanism.start({ db: 'admin', payload: bytes(`n,,n=alice,r=${'a'.repeat(10_000)}`), options: SKIP }, context),
    );
    await expectAuthFailure(mechanism.start({ db: '', payload: bytes('n,,n=alice,r=abc'), options: SKIP }, context));
    await expectAuthFailure(
      mechanism.start({ db: 'admin', payload: 'n,,n=alice,r=abc' as unknown as Buffer, options: SKIP }, context),
    );
  });

  it.each([
    ['empty', () => ''],
    ['no proof', (n: string) => `c=biws,r=${n}`],
    ['proof first', (n: string) => `p=AAAA,c=biws,r=${n}`],
    ['extension after the proof', (n: string) => `c=biws,r=${n},p=${'A'.repeat(43)}=,x=1`],
    ['proof not base64', (n: string) => `c=biws,r=${n},p=!!!!`],
    ['proof too short', (n: string) => `c=biws,r=${n},p=AAAA`],
    ['proof too long', (n: string) => `c=biws,r=${n},p=${Buffer.alloc(64).toString('base64')}`],
    ['missing channel binding', (n: string) => `r=${n},p=${Buffer.alloc(32).toString('base64')}`],
    ['missing nonce', () => `c=biws,p=${Buffer.alloc(32).toString('base64')}`],
    ['client nonce only', () => `c=biws,r=abc,p=${Buffer.alloc(32).toString('base64')}`],
    ['zero proof', (n: string) => `c=biws,r=${n},p=${Buffer.alloc(32).toString('base64')}`],
    ['repeated proof', (n: string) => `c=biws,r=${n},p=${Buffer.alloc(32).toString('base64')},p=x`],
    [
      'extension before the proof, wrong proof',
      (n: string) => `c=biws,r=${n},x=1,p=${Buffer.alloc(32).toString('base64')}`,
    ],
  ])('client-final: %s', async (_title, make) => {
    const first = notDone(
      await mechanism.start({ db: 'admin', payload: bytes('n,,n=alice,r=abc'), options: SKIP }, context),
    );
    const nonce = /^r=([^,]+),/.exec(utf8(first.payload))![1]!;
    await expectAuthFailure(first.conversation.step(bytes(make(nonce))));
  });

  it('random client-first and client-final bytes only ever fail with AuthenticationFailed', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 200 }), async (raw, text) => {
        for (const payload of [Buffer.from(raw), bytes(text), bytes(`n,,${text}`)]) {
          const outcome = await mechanism
            .start({ db: 'admin', payload, options: SKIP }, context)
            .catch((e: unknown) => e);
          if (ProxyError.is(outcome)) expect(outcome.code).toBe(ErrorCodes.AuthenticationFailed);
          else expect((outcome as SaslStepResult).done).toBe(false);
        }
        const first = notDone(
          await mechanism.start({ db: 'admin', payload: bytes('n,,n=alice,r=abc'), options: SKIP }, context),
        );
        const outcome = await first.conversation.step(Buffer.from(raw)).catch((e: unknown) => e);
        expect(ProxyError.is(outcome) && outcome.code === ErrorCodes.AuthenticationFailed).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('saslSupportedMechs', () => {
  it("lists a known user's mechanisms among those enabled", () => {
    expect(service.supportedMechanisms('admin', 'alice')).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    expect(service.supportedMechanisms('admin', 'legacy')).toEqual(['SCRAM-SHA-1']);
    expect(scramServiceFor(lookup, ['SCRAM-SHA-256']).supportedMechanisms('admin', 'alice')).toEqual(['SCRAM-SHA-256']);
  });

  it('answers every enabled mechanism for an unknown user (no enumeration)', () => {
    expect(service.supportedMechanisms('admin', 'mallory')).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    expect(service.supportedMechanisms('tenants', 'alice')).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    expect(scramServiceFor(lookup, ['SCRAM-SHA-1']).supportedMechanisms('admin', 'nobody')).toEqual(['SCRAM-SHA-1']);
  });

  it('offers one mechanism object per enabled mechanism', () => {
    expect(service.mechanisms.map((m) => m.name)).toEqual(['SCRAM-SHA-256', 'SCRAM-SHA-1']);
    expect(scramServiceFor(lookup, ['SCRAM-SHA-1']).mechanisms.map((m) => m.name)).toEqual(['SCRAM-SHA-1']);
  });
});

/** Replaces a file in one step (write aside, rename), as a deploy or a Kubernetes secret update does. */
function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

describe('createScramService', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mtp-scram-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const options = { reloadIntervalMS: 20, logger: pino({ level: 'silent' }) };

  it('needs a credentials file and at least one mechanism', () => {
    expect(() => createScramService({ credentialsFile: null, mechanisms: ['SCRAM-SHA-256'] }, options)).toThrow(
      ConfigError,
    );
    expect(() => createScramService({ credentialsFile: null, mechanisms: ['SCRAM-SHA-256'] }, options)).toThrow(
      /identity\.scram\.credentialsFile/,
    );
    const file = join(dir, 'empty-mechs.yaml');
    writeFileSync(file, formatCredentialsFile([ALICE]));
    expect(() => createScramService({ credentialsFile: file, mechanisms: [] }, options)).toThrow(
      /identity\.scram\.mechanisms/,
    );
  });

  it('fails at start with a ConfigError naming identity.scram.credentialsFile', () => {
    const missing = join(dir, 'missing.yaml');
    const error = (() => {
      try {
        createScramService({ credentialsFile: missing, mechanisms: ['SCRAM-SHA-256'] }, options);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).path).toBe('identity.scram.credentialsFile');
    expect((error as ConfigError).message).toContain('no such file');
  });

  it('verifies users from the file and sees a replaced file for new conversations', async () => {
    const file = join(dir, 'users.yaml');
    writeFileSync(file, formatCredentialsFile([ALICE]));
    const reloads: boolean[] = [];
    const svc = createScramService(
      { credentialsFile: file, mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'] },
      { ...options, onReload: (ok) => reloads.push(ok) },
    );
    try {
      expect(
        (await converse(svc, 'SCRAM-SHA-256', { user: 'alice', password: 'alice-password' })).principal.tenant,
      ).toBe('acme');
      await expectAuthFailure(converse(svc, 'SCRAM-SHA-1', { user: 'legacy', password: 'old' }));

      // A conversation started before the reload finishes against what it started with.
      const client = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'alice', password: 'alice-password' });
      const pending = notDone(
        await mechanismOf(svc, 'SCRAM-SHA-256').start(
          { db: 'admin', payload: client.clientFirst(), options: SKIP },
          context,
        ),
      );

      replaceFile(file, formatCredentialsFile([SHA1_ONLY]));
      await vi.waitFor(() => expect(reloads).toEqual([true]), { timeout: 2000, interval: 10 });
      expect((await converse(svc, 'SCRAM-SHA-1', { user: 'legacy', password: 'old' })).principal.tenant).toBe(
        'initech',
      );
      await expectAuthFailure(converse(svc, 'SCRAM-SHA-256', { user: 'alice', password: 'alice-password' }));
      done(await pending.conversation.step(await client.clientFinal(pending.payload)));

      // A broken file keeps the users in force.
      replaceFile(file, 'users:\n  - user: half-writ');
      await vi.waitFor(() => expect(reloads).toEqual([true, false]), { timeout: 2000, interval: 10 });
      expect((await converse(svc, 'SCRAM-SHA-1', { user: 'legacy', password: 'old' })).principal.tenant).toBe(
        'initech',
      );
    } finally {
      svc.close();
    }
  });
});
