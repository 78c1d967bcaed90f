import { describe, expect, it } from 'vitest';
import { ErrorCodes, ProxyError } from '../../../src/errors.js';
import {
  authMessage,
  clientProof,
  decodeBase64Strict,
  deriveKeys,
  escapeSaslName,
  hi,
  hiAsync,
  mongoPasswordDigest,
  parseAttributes,
  serverSignature,
  unescapeSaslName,
  verifyClientProof,
} from '../../../src/protocol/scram-crypto.js';
import { ScramClient, ScramKeyCache } from '../../../src/upstream/scram.js';

const b64 = (s: string): Buffer => Buffer.from(s, 'base64');
const utf8 = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

// RFC 5802 §5 (SCRAM-SHA-1, plain password "pencil", no MongoDB digest).
const RFC5802 = {
  clientFirstBare: 'n=user,r=fyko+d2lbbFgONRv9qkxdawL',
  serverFirst: 'r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096',
  clientFinalWithoutProof: 'c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j',
  proof: 'v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=',
  serverSignature: 'rmF9pqV8S7suAoZWja4dJRkFsKQ=',
};

// RFC 7677 §3 (SCRAM-SHA-256), identical to the auth spec's SCRAM-SHA-256 example.
const RFC7677 = {
  nonce: 'rOprNGfwEbeRWgbNEkqO',
  clientFirstBare: 'n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal:
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

// mongodb/specifications source/auth/auth.md, SCRAM-SHA-1 conversation (MongoDB password digest).
const MONGO_SHA1 = {
  nonce: 'fyko+d2lbbFgONRv9qkxdawL',
  serverFirst: 'r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,s=rQ9ZY3MntBeuP3E1TDVC4w==,i=10000',
  clientFinal: 'c=biws,r=fyko+d2lbbFgONRv9qkxdawLHo+Vgk7qvUOKUwuWLIWg4l/9SraGMHEE,p=MC2T8BvbmWRckDw8oWl5IVghwCY=',
  serverFinal: 'v=UMWeI25JD1yNYZRMpZ4VHvhZ9e0=',
};

describe('scram-crypto primitives', () => {
  it('reproduce the RFC 5802 SCRAM-SHA-1 proof and server signature', () => {
    const salted = hi('sha1', 'pencil', b64('QSXCR+Q6sek8bf92'), 4096);
    const keys = deriveKeys('sha1', salted);
    const message = authMessage(RFC5802.clientFirstBare, RFC5802.serverFirst, RFC5802.clientFinalWithoutProof);
    expect(clientProof('sha1', keys.clientKey, keys.storedKey, message).toString('base64')).toBe(RFC5802.proof);
    expect(serverSignature('sha1', keys.serverKey, message).toString('base64')).toBe(RFC5802.serverSignature);
  });

  it('reproduce the RFC 7677 SCRAM-SHA-256 proof and server signature', async () => {
    const salted = await hiAsync('sha256', 'pencil', b64('W22ZaJ0SNY7soEsUEjb6gQ=='), 4096);
    const keys = deriveKeys('sha256', salted);
    const withoutProof = RFC7677.clientFinal.slice(0, RFC7677.clientFinal.indexOf(',p='));
    const message = authMessage(RFC7677.clientFirstBare, RFC7677.serverFirst, withoutProof);
    expect(clientProof('sha256', keys.clientKey, keys.storedKey, message).toString('base64')).toBe(
      'dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
    );
    expect(serverSignature('sha256', keys.serverKey, message).toString('base64')).toBe(
      '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
    );
  });

  it('verifyClientProof accepts the RFC proof and rejects a flipped bit (server side)', () => {
    const keys = deriveKeys('sha1', hi('sha1', 'pencil', b64('QSXCR+Q6sek8bf92'), 4096));
    const message = authMessage(RFC5802.clientFirstBare, RFC5802.serverFirst, RFC5802.clientFinalWithoutProof);
    const proof = b64(RFC5802.proof);
    expect(verifyClientProof('sha1', keys.storedKey, message, proof)).toBe(true);
    proof[0] = (proof[0] as number) ^ 1;
    expect(verifyClientProof('sha1', keys.storedKey, message, proof)).toBe(false);
    expect(verifyClientProof('sha1', keys.storedKey, message, proof.subarray(1))).toBe(false);
  });

  it('computes the MongoDB SCRAM-SHA-1 password digest (MD5 of user:mongo:password)', () => {
    // md5("user:mongo:pencil")
    expect(mongoPasswordDigest('user', 'pencil')).toBe('1c33006ec1ffd90f9cadcbcc0e118200');
  });

  it('escapes and unescapes sasl names', () => {
    expect(escapeSaslName('a,b=c')).toBe('a=2Cb=3Dc');
    expect(unescapeSaslName('a=2Cb=3Dc')).toBe('a,b=c');
    expect(unescapeSaslName('a=2Xb')).toBeNull();
  });

  it('parses attributes strictly', () => {
    expect(parseAttributes('r=abc,s=xy==,i=4096')).toEqual(
      new Map([
        ['r', 'abc'],
        ['s', 'xy=='],
        ['i', '4096'],
      ]),
    );
    expect(parseAttributes('r=a,r=b')).toBeNull();
    expect(parseAttributes('rr=a')).toBeNull();
    expect(parseAttributes('r=a,,s=b')).toBeNull();
  });

  it('decodes only strict base64', () => {
    expect(decodeBase64Strict('QQ==')).toEqual(Buffer.from('A'));
    expect(decodeBase64Strict('QQ')).toBeNull();
    expect(decodeBase64Strict('Q!==')).toBeNull();
  });
});

describe('ScramClient', () => {
  it('plays the RFC 7677 SCRAM-SHA-256 conversation byte for byte', async () => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-256', username: 'user', password: 'pencil' },
      { nonce: RFC7677.nonce },
    );
    expect(utf8(client.clientFirst())).toBe(`n,,${RFC7677.clientFirstBare}`);
    expect(utf8(await client.clientFinal(Buffer.from(RFC7677.serverFirst)))).toBe(RFC7677.clientFinal);
    client.verifyServerFinal(Buffer.from(RFC7677.serverFinal));
    expect(client.verified).toBe(true);
  });

  it('plays the auth spec SCRAM-SHA-1 conversation with the MongoDB password digest', async () => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-1', username: 'user', password: 'pencil' },
      { nonce: MONGO_SHA1.nonce },
    );
    expect(utf8(client.clientFirst())).toBe(`n,,n=user,r=${MONGO_SHA1.nonce}`);
    expect(utf8(await client.clientFinal(Buffer.from(MONGO_SHA1.serverFirst)))).toBe(MONGO_SHA1.clientFinal);
    client.verifyServerFinal(Buffer.from(MONGO_SHA1.serverFinal));
  });

  it('SASLprep-normalizes SCRAM-SHA-256 passwords (soft hyphen is mapped to nothing)', async () => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-256', username: 'user', password: 'pen\u00ADcil' },
      { nonce: RFC7677.nonce },
    );
    client.clientFirst();
    expect(utf8(await client.clientFinal(Buffer.from(RFC7677.serverFirst)))).toBe(RFC7677.clientFinal);
  });

  it('refuses a SASLprep-prohibited password without quoting it', async () => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-256', username: 'user', password: 'secret\u0007' },
      { nonce: RFC7677.nonce },
    );
    client.clientFirst();
    const err = await client.clientFinal(Buffer.from(RFC7677.serverFirst)).catch((e: unknown) => e);
    expect(ProxyError.is(err) && err.code).toBe(ErrorCodes.AuthenticationFailed);
    expect(String((err as Error).message)).not.toContain('secret');
  });

  it('escapes "," and "=" in the user name and random nonces differ', () => {
    const a = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'a,b=c', password: 'x' });
    const b = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: 'a,b=c', password: 'x' });
    const first = utf8(a.clientFirst());
    expect(first).toMatch(/^n,,n=a=2Cb=3Dc,r=[A-Za-z0-9+/=]{32}$/);
    expect(first).not.toBe(utf8(b.clientFirst()));
  });

  it.each([
    ['a nonce that does not extend ours', 'r=somethingelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', /nonce/],
    ['the bare client nonce', `r=${RFC7677.nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`, /nonce/],
    ['too few iterations', `r=${RFC7677.nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095`, /below the minimum/],
    ['a missing salt', `r=${RFC7677.nonce}xyz,i=4096`, /lacks/],
    ['bad base64 salt', `r=${RFC7677.nonce}xyz,s=***,i=4096`, /salt/],
    ['a server error', 'e=unknown-user', /unknown-user/],
    ['an extension', `m=ext,r=${RFC7677.nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`, /extension/],
    ['garbage', 'hello', /malformed/],
  ])('rejects server-first-message with %s', async (_name, serverFirst, pattern) => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-256', username: 'user', password: 'pencil' },
      { nonce: RFC7677.nonce },
    );
    client.clientFirst();
    const err = await client.clientFinal(Buffer.from(serverFirst)).catch((e: unknown) => e);
    expect(ProxyError.is(err)).toBe(true);
    expect((err as ProxyError).code).toBe(ErrorCodes.AuthenticationFailed);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).not.toContain('pencil');
  });

  it.each([
    ['a wrong signature', 'v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='],
    ['no signature', 'x=1'],
    ['a server error', 'e=invalid-proof'],
  ])('rejects server-final-message with %s', async (_name, serverFinal) => {
    const client = new ScramClient(
      { mechanism: 'SCRAM-SHA-256', username: 'user', password: 'pencil' },
      { nonce: RFC7677.nonce },
    );
    client.clientFirst();
    await client.clientFinal(Buffer.from(RFC7677.serverFirst));
    expect(() => client.verifyServerFinal(Buffer.from(serverFinal))).toThrow(/authentication failed/);
    expect(client.verified).toBe(false);
  });

  it('caches derived keys per salt and iteration count', async () => {
    const cache = new ScramKeyCache();
    for (let i = 0; i < 2; i++) {
      const client = new ScramClient(
        { mechanism: 'SCRAM-SHA-256', username: 'user', password: 'pencil' },
        { nonce: RFC7677.nonce, cache },
      );
      client.clientFirst();
      expect(utf8(await client.clientFinal(Buffer.from(RFC7677.serverFirst)))).toBe(RFC7677.clientFinal);
    }
    expect(cache.size).toBe(1);
  });

  it('throws when used out of order', async () => {
    const client = new ScramClient({ mechanism: 'SCRAM-SHA-1', username: 'u', password: 'p' });
    await expect(client.clientFinal(Buffer.from('r=x'))).rejects.toThrow(/out of order/);
  });
});
