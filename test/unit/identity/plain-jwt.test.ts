import { generateKeyPairSync } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { IdentityConfig, ListenerConfig } from '../../../src/config/types.js';
import { ConfigError, ErrorCodes, ProxyError } from '../../../src/errors.js';
import { claimAt, createJwtMechanism, parsePlainPayload, type JwtMechanism } from '../../../src/identity/plain-jwt.js';
import type { AuthAttemptContext } from '../../../src/identity/types.js';
import { createLogger } from '../../../src/observability/logger.js';
import { tempDir } from '../../helpers/config.js';

const AUDIENCE = 'mongo-tenant-proxy';
const ISSUER = 'https://issuer.test';

interface KeyPair {
  publicKey: CryptoKey;
  privateKey: CryptoKey;
}

const files = tempDir('mtp-jwt-');
let rsa: KeyPair;
let rsaOther: KeyPair;
let ec: KeyPair;
const mechanisms: JwtMechanism[] = [];

beforeAll(async () => {
  [rsa, rsaOther, ec] = await Promise.all([
    generateKeyPair('RS256', { extractable: true }),
    generateKeyPair('RS256', { extractable: true }),
    generateKeyPair('ES256', { extractable: true }),
  ]);
});

afterAll(() => {
  files.remove();
});

afterEach(() => {
  for (const mechanism of mechanisms.splice(0)) mechanism.close();
});

function jwtConfig(overrides: Partial<IdentityConfig['jwt']> = {}): IdentityConfig['jwt'] {
  return {
    keyFile: null,
    jwksFile: null,
    audience: AUDIENCE,
    issuer: null,
    tenantClaim: 'tenant',
    algorithms: ['RS256', 'ES256', 'EdDSA'],
    clockToleranceSeconds: 0,
    ...overrides,
  };
}

function capturingContext(): { context: AuthAttemptContext; logText: () => string } {
  const chunks: string[] = [];
  const logger = createLogger({ level: 'trace', destination: { write: (line: string) => void chunks.push(line) } });
  const listener: ListenerConfig = {
    name: 'jwt',
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods: ['plain-jwt'],
    staticTenant: null,
  };
  return { context: { listener, remoteAddress: '127.0.0.1', logger }, logText: () => chunks.join('') };
}

function mechanism(config: IdentityConfig['jwt'], reloadIntervalMS = 0): JwtMechanism {
  const created = createJwtMechanism(config, { reloadIntervalMS });
  mechanisms.push(created);
  return created;
}

async function pemFile(key: CryptoKey): Promise<string> {
  return files.file('key.pem', await exportSPKI(key));
}

const now = () => Math.floor(Date.now() / 1000);

async function token(
  privateKey: CryptoKey | Uint8Array,
  claims: JWTPayload = {},
  { alg = 'RS256', kid, exp = now() + 600 }: { alg?: string; kid?: string; exp?: number | null } = {},
): Promise<string> {
  const jwt = new SignJWT({ tenant: 'tenant-a', ...claims })
    .setProtectedHeader({ alg, ...(kid === undefined ? {} : { kid }) })
    .setIssuedAt()
    .setAudience(AUDIENCE)
    .setSubject('system:serviceaccount:tenant-a:app');
  if (exp !== null) jwt.setExpirationTime(exp);
  return jwt.sign(privateKey);
}

function plain(password: string, authcid = 'anything', authzid = ''): Buffer {
  return Buffer.from(`${authzid}\0${authcid}\0${password}`, 'utf8');
}

async function expectAuthFailed(promise: Promise<unknown>): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(ProxyError.is(error)).toBe(true);
  expect(error).toMatchObject({ code: ErrorCodes.AuthenticationFailed, message: 'Authentication failed.' });
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe('createJwtMechanism: verification', () => {
  it('accepts a valid RS256 token: tenant from the claim, user from sub, db from saslStart', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    expect(m.name).toBe('PLAIN');
    const { context } = capturingContext();
    const result = await m.start(
      { db: '$external', payload: plain(await token(rsa.privateKey)), options: undefined },
      context,
    );
    expect(result).toEqual({
      done: true,
      payload: Buffer.alloc(0),
      principal: { user: 'system:serviceaccount:tenant-a:app', db: '$external', tenant: 'tenant-a' },
    });
  });

  it('accepts a valid ES256 token from a JWK key file', async () => {
    const jwk = await exportJWK(ec.publicKey);
    const m = mechanism(jwtConfig({ keyFile: files.file('ec.jwk', JSON.stringify(jwk)) }));
    const { context } = capturingContext();
    const result = await m.start(
      {
        db: '$external',
        payload: plain(await token(ec.privateKey, { tenant: 'tenant-e' }, { alg: 'ES256' })),
        options: undefined,
      },
      context,
    );
    expect(result.done && result.principal.tenant).toBe('tenant-e');
  });

  it.each(['EdDSA', 'Ed25519'])('accepts an Ed25519 token (alg %s) from a PEM key file', async (alg) => {
    const ed = await generateKeyPair(alg, { extractable: true });
    const m = mechanism(jwtConfig({ keyFile: await pemFile(ed.publicKey), algorithms: ['EdDSA', 'Ed25519'] }));
    const result = await m.start(
      { db: '$external', payload: plain(await token(ed.privateKey, {}, { alg })), options: undefined },
      capturingContext().context,
    );
    expect(result.done).toBe(true);
  });

  it('uses the PLAIN authcid as the user when the token has no sub', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const jwt = await new SignJWT({ tenant: 't' })
      .setProtectedHeader({ alg: 'RS256' })
      .setAudience(AUDIENCE)
      .setExpirationTime('5m')
      .sign(rsa.privateKey);
    const result = await m.start(
      { db: '$external', payload: plain(jwt, 'svc-user'), options: undefined },
      capturingContext().context,
    );
    expect(result.done && result.principal).toEqual({ user: 'svc-user', db: '$external', tenant: 't' });
  });

  it('checks the issuer when one is configured', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey), issuer: ISSUER }));
    const { context } = capturingContext();
    await expectAuthFailed(
      m.start({ db: '$external', payload: plain(await token(rsa.privateKey)), options: undefined }, context),
    );
    await expectAuthFailed(
      m.start(
        {
          db: '$external',
          payload: plain(await token(rsa.privateKey, { iss: 'https://evil.test' })),
          options: undefined,
        },
        context,
      ),
    );
    const ok = await m.start(
      { db: '$external', payload: plain(await token(rsa.privateKey, { iss: ISSUER })), options: undefined },
      context,
    );
    expect(ok.done).toBe(true);
  });

  it('refuses a token for another audience', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const jwt = await new SignJWT({ tenant: 't' })
      .setProtectedHeader({ alg: 'RS256' })
      .setAudience('another-service')
      .setExpirationTime('5m')
      .sign(rsa.privateKey);
    const { context, logText } = capturingContext();
    await expectAuthFailed(m.start({ db: '$external', payload: plain(jwt), options: undefined }, context));
    expect(logText()).toContain('"claim":"aud"');
    expect(logText()).not.toContain(jwt);
  });

  it('refuses an expired token, honouring the clock tolerance', async () => {
    const strict = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const tolerant = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey), clockToleranceSeconds: 120 }));
    const jwt = await token(rsa.privateKey, {}, { exp: now() - 60 });
    const { context } = capturingContext();
    await expectAuthFailed(strict.start({ db: '$external', payload: plain(jwt), options: undefined }, context));
    expect((await tolerant.start({ db: '$external', payload: plain(jwt), options: undefined }, context)).done).toBe(
      true,
    );
    await expectAuthFailed(
      tolerant.start(
        { db: '$external', payload: plain(await token(rsa.privateKey, {}, { exp: now() - 600 })), options: undefined },
        context,
      ),
    );
  });

  it('refuses a token that is not yet valid', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const jwt = await token(rsa.privateKey, { nbf: now() + 300 });
    await expectAuthFailed(
      m.start({ db: '$external', payload: plain(jwt), options: undefined }, capturingContext().context),
    );
  });

  it('refuses a token without exp', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const jwt = await token(rsa.privateKey, {}, { exp: null });
    const { context, logText } = capturingContext();
    await expectAuthFailed(m.start({ db: '$external', payload: plain(jwt), options: undefined }, context));
    expect(logText()).toContain('"claim":"exp"');
  });

  it('refuses a forged token (signed by another key)', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    await expectAuthFailed(
      m.start(
        { db: '$external', payload: plain(await token(rsaOther.privateKey)), options: undefined },
        capturingContext().context,
      ),
    );
  });

  it('refuses a token whose payload was altered after signing', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const [header, , signature] = (await token(rsa.privateKey)).split('.');
    const altered = `${header}.${b64url({ tenant: 'tenant-b', aud: AUDIENCE, exp: now() + 600 })}.${signature}`;
    await expectAuthFailed(
      m.start({ db: '$external', payload: plain(altered), options: undefined }, capturingContext().context),
    );
  });

  it('refuses alg none, even when "none" is sneaked into the header with an empty signature', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const claims = { tenant: 'tenant-a', aud: AUDIENCE, exp: now() + 600 };
    for (const header of [{ alg: 'none' }, { alg: 'None' }, { alg: 'none', typ: 'JWT' }]) {
      const unsigned = `${b64url(header)}.${b64url(claims)}.`;
      await expectAuthFailed(
        m.start({ db: '$external', payload: plain(unsigned), options: undefined }, capturingContext().context),
      );
    }
    expect(() =>
      createJwtMechanism(jwtConfig({ keyFile: files.file('k', 'x'), algorithms: ['none'] }), { reloadIntervalMS: 0 }),
    ).toThrow(ConfigError);
  });

  it('refuses HS256 tokens, including one "signed" with the public key as the HMAC secret', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const m = mechanism(jwtConfig({ keyFile: files.file('rsa.pem', pem) }));
    const secret = new TextEncoder().encode('a shared secret of thirty-two bytes!');
    await expectAuthFailed(
      m.start(
        { db: '$external', payload: plain(await token(secret, {}, { alg: 'HS256' })), options: undefined },
        capturingContext().context,
      ),
    );
    // The classic algorithm confusion: HMAC keyed with the (public) PEM text.
    const confused = await token(new TextEncoder().encode(pem), {}, { alg: 'HS256' });
    await expectAuthFailed(
      m.start({ db: '$external', payload: plain(confused), options: undefined }, capturingContext().context),
    );
  });

  it('never quotes a key file that is not valid JSON: the parser\'s excerpt could be key material (a private "d" put there by mistake)', () => {
    const broken = '{"kty":"RSA","d": privatekeymaterial}';
    for (const config of [
      jwtConfig({ keyFile: files.file('broken.jwk', broken) }),
      jwtConfig({ jwksFile: files.file('broken.jwks', `{"keys":[${broken}]}`) }),
    ]) {
      let message = '';
      try {
        createJwtMechanism(config, { reloadIntervalMS: 0 });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/not valid JSON/);
      expect(message).not.toContain('privatekey');
    }
  });

  it('never accepts HMAC: HS* algorithms and symmetric key files are configuration errors', () => {
    const secretJwk = JSON.stringify({
      kty: 'oct',
      k: Buffer.from('0123456789abcdef0123456789abcdef').toString('base64url'),
    });
    expect(() =>
      createJwtMechanism(jwtConfig({ keyFile: files.file('oct.jwk', secretJwk) }), { reloadIntervalMS: 0 }),
    ).toThrow(/symmetric/);
    expect(() =>
      createJwtMechanism(jwtConfig({ jwksFile: files.file('oct.jwks', `{"keys":[${secretJwk}]}`) }), {
        reloadIntervalMS: 0,
      }),
    ).toThrow(/symmetric/);
    expect(() =>
      createJwtMechanism(jwtConfig({ keyFile: files.file('x.pem', 'x'), algorithms: ['RS256', 'HS256'] }), {
        reloadIntervalMS: 0,
      }),
    ).toThrow(ConfigError);
  });

  it.each<[string, JWTPayload]>([
    ['missing', { tenant: undefined }],
    ['a number', { tenant: 42 }],
    ['an object', { tenant: { name: 'x' } }],
    ['an array', { tenant: ['x'] }],
    ['empty', { tenant: '' }],
  ])('refuses a token whose tenant claim is %s', async (_label, claims) => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const { context, logText } = capturingContext();
    await expectAuthFailed(
      m.start({ db: '$external', payload: plain(await token(rsa.privateKey, claims)), options: undefined }, context),
    );
    expect(logText()).toContain('tenant claim');
  });

  it('reads a nested tenant claim whose name contains dots (Kubernetes)', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey), tenantClaim: 'kubernetes.io.namespace' }));
    const claims = {
      tenant: undefined,
      'kubernetes.io': { namespace: 'team-blue', serviceaccount: { name: 'orders', uid: 'u-1' } },
    };
    const result = await m.start(
      { db: '$external', payload: plain(await token(rsa.privateKey, claims)), options: undefined },
      capturingContext().context,
    );
    expect(result.done && result.principal.tenant).toBe('team-blue');
  });

  it('never crashes on malformed PLAIN payloads', async () => {
    const m = mechanism(jwtConfig({ keyFile: await pemFile(rsa.publicKey) }));
    const valid = await token(rsa.privateKey);
    const { context, logText } = capturingContext();
    const payloads = [
      Buffer.alloc(0),
      Buffer.from('no nuls at all'),
      Buffer.from(`\0${valid}`), // one NUL
      Buffer.from(`\0user\0${valid}\0extra`), // three NULs
      Buffer.from('\0user\0'), // empty password
      Buffer.from(`\0\0${valid}`), // empty authcid
      Buffer.from(`someone-else\0user\0${valid}`), // authzid != authcid
      Buffer.concat([Buffer.from('\0user\0'), Buffer.from([0xff, 0xfe]), Buffer.from(valid)]), // not UTF-8
      Buffer.from('\0user\0not.a.jwt'),
      Buffer.from('\0user\0....'),
      Buffer.from(`\0user\0${'a'.repeat(70_000)}`), // too large
    ];
    for (const payload of payloads) {
      await expectAuthFailed(m.start({ db: '$external', payload, options: undefined }, context));
    }
    // authzid equal to authcid is allowed.
    expect(
      (await m.start({ db: '$external', payload: plain(valid, 'me', 'me'), options: undefined }, context)).done,
    ).toBe(true);
    expect(logText()).not.toContain(valid);

    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        await expectAuthFailed(m.start({ db: '$external', payload: Buffer.from(bytes), options: undefined }, context));
      }),
      { numRuns: 200 },
    );
    await fc.assert(
      fc.asyncProperty(fc.string(), fc.string(), async (a, b) => {
        await expectAuthFailed(
          m.start({ db: '$external', payload: plain(`${a}.${b}.${a}`), options: undefined }, context),
        );
      }),
      { numRuns: 100 },
    );
  });
});

describe('createJwtMechanism: JWKS', () => {
  it('picks the key by kid', async () => {
    const jwks = {
      keys: [
        { ...(await exportJWK(rsaOther.publicKey)), kid: 'old' },
        { ...(await exportJWK(rsa.publicKey)), kid: 'new' },
      ],
    };
    const m = mechanism(jwtConfig({ jwksFile: files.file('jwks.json', JSON.stringify(jwks)) }));
    const { context } = capturingContext();
    expect(
      (
        await m.start(
          { db: '$external', payload: plain(await token(rsa.privateKey, {}, { kid: 'new' })), options: undefined },
          context,
        )
      ).done,
    ).toBe(true);
    expect(
      (
        await m.start(
          { db: '$external', payload: plain(await token(rsaOther.privateKey, {}, { kid: 'old' })), options: undefined },
          context,
        )
      ).done,
    ).toBe(true);
    await expectAuthFailed(
      m.start(
        { db: '$external', payload: plain(await token(rsa.privateKey, {}, { kid: 'old' })), options: undefined },
        context,
      ),
    );
    await expectAuthFailed(
      m.start(
        { db: '$external', payload: plain(await token(rsa.privateKey, {}, { kid: 'unknown' })), options: undefined },
        context,
      ),
    );
  });

  it('tries every candidate when several keys match a token without kid', async () => {
    const jwks = {
      keys: [await exportJWK(rsaOther.publicKey), await exportJWK(rsa.publicKey), await exportJWK(ec.publicKey)],
    };
    const m = mechanism(jwtConfig({ jwksFile: files.file('jwks.json', JSON.stringify(jwks)) }));
    const { context } = capturingContext();
    expect(
      (await m.start({ db: '$external', payload: plain(await token(rsa.privateKey)), options: undefined }, context))
        .done,
    ).toBe(true);
    expect(
      (
        await m.start(
          { db: '$external', payload: plain(await token(ec.privateKey, {}, { alg: 'ES256' })), options: undefined },
          context,
        )
      ).done,
    ).toBe(true);
    const stranger = await generateKeyPair('RS256');
    await expectAuthFailed(
      m.start({ db: '$external', payload: plain(await token(stranger.privateKey)), options: undefined }, context),
    );
  });
});

describe('createJwtMechanism: configuration', () => {
  const expectConfigError = (fn: () => unknown, pathName: string, text?: RegExp) => {
    try {
      fn();
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).path).toBe(pathName);
      if (text) expect((error as Error).message).toMatch(text);
    }
  };

  it('names the field whose file cannot be loaded', async () => {
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: path.join(files.path, 'missing.pem') }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
      /missing\.pem/,
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: files.file('garbage.pem', 'hello') }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
    );
    expectConfigError(
      () =>
        createJwtMechanism(
          jwtConfig({ keyFile: files.file('bad.pem', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n') }),
          { reloadIntervalMS: 0 },
        ),
      'identity.jwt.keyFile',
    );
    expectConfigError(
      () =>
        createJwtMechanism(jwtConfig({ jwksFile: files.file('jwks.json', '{"keys": 1}') }), { reloadIntervalMS: 0 }),
      'identity.jwt.jwksFile',
    );
    expectConfigError(
      () =>
        createJwtMechanism(jwtConfig({ jwksFile: files.file('jwks.json', '{"keys": [{"kty": "RSA"}]}') }), {
          reloadIntervalMS: 0,
        }),
      'identity.jwt.jwksFile',
    );
    expectConfigError(
      () =>
        createJwtMechanism(jwtConfig({ jwksFile: files.file('jwks.json', '{"keys": []}') }), { reloadIntervalMS: 0 }),
      'identity.jwt.jwksFile',
      /no key usable/,
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ jwksFile: files.file('jwks.json', 'not json') }), { reloadIntervalMS: 0 }),
      'identity.jwt.jwksFile',
    );
    const jwks = JSON.stringify({ keys: [await exportJWK(rsa.publicKey)] });
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: files.file('jwks-as-key.json', jwks) }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
      /jwksFile/,
    );
  });

  it('refuses private keys and keys no allowed algorithm can use', async () => {
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const privatePem = files.file('private.pem', await exportPKCS8(privateKey));
    const privateJwk = files.file('private.jwk', JSON.stringify(await exportJWK(privateKey)));
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: privatePem }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
      /private/,
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: privateJwk }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
      /private/,
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: files.file('empty.pem', '') }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
    );
    const ecPem = files.file('ec.pem', await exportSPKI(ec.publicKey));
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: ecPem, algorithms: ['RS256'] }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
      /ec prime256v1/,
    );
    const { publicKey: short } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const shortPem = files.file('short.pem', short.export({ type: 'spki', format: 'pem' }).toString());
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile: shortPem }), { reloadIntervalMS: 0 }),
      'identity.jwt.keyFile',
      /1024-bit/,
    );
    const ecJwks = files.file('ec.jwks', JSON.stringify({ keys: [await exportJWK(ec.publicKey)] }));
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ jwksFile: ecJwks, algorithms: ['RS256'] }), { reloadIntervalMS: 0 }),
      'identity.jwt.jwksFile',
      /no key usable/,
    );
  });

  it('requires exactly one key source, an audience, known algorithms and a claim path', async () => {
    const keyFile = await pemFile(rsa.publicKey);
    expectConfigError(() => createJwtMechanism(jwtConfig(), { reloadIntervalMS: 0 }), 'identity.jwt');
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile, jwksFile: keyFile }), { reloadIntervalMS: 0 }),
      'identity.jwt',
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile, audience: null }), { reloadIntervalMS: 0 }),
      'identity.jwt.audience',
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile, algorithms: [] }), { reloadIntervalMS: 0 }),
      'identity.jwt.algorithms',
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile, algorithms: ['RS256', 'none'] }), { reloadIntervalMS: 0 }),
      'identity.jwt.algorithms',
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile, tenantClaim: 'a..b' }), { reloadIntervalMS: 0 }),
      'identity.jwt.tenantClaim',
    );
    expectConfigError(
      () => createJwtMechanism(jwtConfig({ keyFile, clockToleranceSeconds: -1 }), { reloadIntervalMS: 0 }),
      'identity.jwt.clockToleranceSeconds',
    );
  });
});

describe('createJwtMechanism: hot reload', () => {
  async function waitFor(check: () => Promise<boolean>, timeoutMS = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMS;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it('picks up a replaced key file, and keeps the old key when the new file is broken', async () => {
    const keyFile = await pemFile(rsa.publicKey);
    const chunks: string[] = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void chunks.push(line) } });
    const m = createJwtMechanism(jwtConfig({ keyFile }), { reloadIntervalMS: 20, logger });
    mechanisms.push(m);
    const { context } = capturingContext();
    const accepts = async (privateKey: CryptoKey): Promise<boolean> => {
      try {
        return (
          await m.start({ db: '$external', payload: plain(await token(privateKey)), options: undefined }, context)
        ).done;
      } catch {
        return false;
      }
    };
    expect(await accepts(rsa.privateKey)).toBe(true);
    expect(await accepts(rsaOther.privateKey)).toBe(false);

    // Replace atomically, as a Kubernetes secret update or `mv` does.
    const staged = `${keyFile}.new`;
    writeFileSync(staged, await exportSPKI(rsaOther.publicKey));
    renameSync(staged, keyFile);
    await waitFor(() => accepts(rsaOther.privateKey));
    expect(await accepts(rsa.privateKey)).toBe(false);
    expect(chunks.join('')).toContain('reloaded');

    writeFileSync(keyFile, '-----BEGIN PUBLIC KEY-----\ntruncated');
    await waitFor(async () => chunks.join('').includes('keeping the previous keys'));
    expect(await accepts(rsaOther.privateKey)).toBe(true);

    m.close();
    writeFileSync(keyFile, await exportSPKI(rsa.publicKey));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await accepts(rsa.privateKey)).toBe(false); // closed: no longer watching
  });

  it('reloads a JWKS file', async () => {
    const jwksFile = files.file(
      'jwks.json',
      JSON.stringify({ keys: [{ ...(await exportJWK(rsa.publicKey)), kid: 'one' }] }),
    );
    const m = mechanism(jwtConfig({ jwksFile }), 20);
    const { context } = capturingContext();
    const accepts = async (privateKey: CryptoKey, kid: string): Promise<boolean> =>
      m
        .start({ db: '$external', payload: plain(await token(privateKey, {}, { kid })), options: undefined }, context)
        .then(
          (r) => r.done,
          () => false,
        );
    expect(await accepts(rsaOther.privateKey, 'two')).toBe(false);
    writeFileSync(
      jwksFile,
      JSON.stringify({
        keys: [
          { ...(await exportJWK(rsa.publicKey)), kid: 'one' },
          { ...(await exportJWK(rsaOther.publicKey)), kid: 'two' },
        ],
      }),
    );
    await waitFor(() => accepts(rsaOther.privateKey, 'two'));
    expect(await accepts(rsa.privateKey, 'one')).toBe(true);
  });
});

describe('parsePlainPayload and claimAt', () => {
  it('splits RFC 4616 messages', () => {
    expect(parsePlainPayload(Buffer.from('\0user\0pass'))).toEqual({ authzid: '', authcid: 'user', password: 'pass' });
    expect(parsePlainPayload(Buffer.from('user\0user\0pass'))).toEqual({
      authzid: 'user',
      authcid: 'user',
      password: 'pass',
    });
    expect(parsePlainPayload(Buffer.from('other\0user\0pass'))).toBeUndefined();
  });

  it('resolves dotted paths, including claim names with dots, and refuses ambiguity', () => {
    expect(claimAt({ a: { b: { c: 'x' } } }, 'a.b.c')).toBe('x');
    expect(claimAt({ 'a.b': { c: 'x' } }, 'a.b.c')).toBe('x');
    expect(claimAt({ 'a.b.c': 'x' }, 'a.b.c')).toBe('x');
    expect(claimAt({ 'a.b': { c: 'x' }, a: { b: { c: 'y' } } }, 'a.b.c')).toBeUndefined();
    expect(claimAt({ 'a.b': { c: 'x' }, a: { b: { c: 'x' } } }, 'a.b.c')).toBe('x');
    expect(claimAt({ a: ['x'] }, 'a.0')).toBeUndefined();
    expect(claimAt({ a: 'x' }, 'a.b')).toBeUndefined();
    expect(claimAt({}, '__proto__')).toBeUndefined();
    expect(claimAt({}, 'constructor.name')).toBeUndefined();
  });
});
