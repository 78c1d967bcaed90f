import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, ProxyError } from '../../../src/errors.js';
import {
  authMessage,
  deriveKeys,
  hi,
  mongoPasswordDigest,
  parseAttributes,
  serverSignature,
  verifyClientProof,
} from '../../../src/protocol/scram-crypto.js';
import { UpstreamConnection } from '../../../src/upstream/connection.js';
import { PROXY_DRIVER_NAME, PROXY_VERSION, performHandshake } from '../../../src/upstream/handshake.js';
import { ScramKeyCache } from '../../../src/upstream/scram.js';
import { parseUpstreamUri } from '../../../src/upstream/uri.js';
import { Binary, type Document } from '../../../src/wire/bson.js';
import {
  FAKE_HELLO,
  type FakePeer,
  type FakeUpstream,
  type ReceivedMessage,
  startFakeUpstream,
} from '../../helpers/fake-upstream.js';

const USER = 'app,user';
const PASSWORD = 'correct horse';
const SALT = Buffer.from('0123456789abcdef');
const ITERATIONS = 4096;

interface ScramServerOptions {
  /** Behave like servers before skipEmptyExchange: done only after an empty round trip. */
  legacyEmptyExchange?: boolean;
  /** Answer speculativeAuthenticate in hello. */
  speculative?: boolean;
  /** Sign with the wrong key. */
  badSignature?: boolean;
  mechs?: string[];
  helloExtra?: Document;
  /** Reply CommandNotFound to `hello`. */
  legacyHelloOnly?: boolean;
}

/** A SASL payload's bytes (the fake upstream decodes binaries as bson Binary). */
const payloadOf = (command: Document): Buffer => Buffer.from((command.payload as Binary).value());

/** A SCRAM server built on the shared primitives (what the identity layer will do). */
function scramServer(options: ScramServerOptions = {}) {
  const conversations = new Map<
    number,
    { mechanism: string; clientFirstBare: string; serverFirst: string; step: number }
  >();
  let nextConversation = 1;

  const start = (command: Document): Document => {
    const mechanism = command.mechanism as string;
    const hash = mechanism === 'SCRAM-SHA-256' ? 'sha256' : 'sha1';
    const clientFirst = payloadOf(command).toString('utf8');
    expect(clientFirst.startsWith('n,,')).toBe(true);
    const clientFirstBare = clientFirst.slice(3);
    const attrs = parseAttributes(clientFirstBare);
    expect(attrs?.get('n')).toBe('app=2Cuser');
    const serverFirst = `r=${attrs?.get('r')}SERVERNONCE,s=${SALT.toString('base64')},i=${ITERATIONS}`;
    const id = nextConversation++;
    conversations.set(id, { mechanism, clientFirstBare, serverFirst, step: 1 });
    void hash;
    return { conversationId: id, done: false, payload: new Binary(Buffer.from(serverFirst)), ok: 1 };
  };

  const next = (command: Document): Document => {
    const conversation = conversations.get(command.conversationId as number);
    if (conversation === undefined) return { ok: 0, code: 17, errmsg: 'no conversation' };
    const hash = conversation.mechanism === 'SCRAM-SHA-256' ? 'sha256' : 'sha1';
    if (conversation.step === 2) {
      expect(payloadOf(command).length).toBe(0);
      return { conversationId: command.conversationId, done: true, payload: new Binary(Buffer.alloc(0)), ok: 1 };
    }
    const clientFinal = payloadOf(command).toString('utf8');
    const withoutProof = clientFinal.slice(0, clientFinal.indexOf(',p='));
    const proof = Buffer.from(clientFinal.slice(clientFinal.indexOf(',p=') + 3), 'base64');
    const password = hash === 'sha256' ? PASSWORD : mongoPasswordDigest(USER, PASSWORD);
    const keys = deriveKeys(hash, hi(hash, password, SALT, ITERATIONS));
    const message = authMessage(conversation.clientFirstBare, conversation.serverFirst, withoutProof);
    if (!verifyClientProof(hash, keys.storedKey, message, proof)) {
      return { ok: 0, code: 18, codeName: 'AuthenticationFailed', errmsg: 'Authentication failed.' };
    }
    const signature = serverSignature(hash, options.badSignature ? keys.clientKey : keys.serverKey, message);
    conversation.step = 2;
    return {
      conversationId: command.conversationId,
      done: options.legacyEmptyExchange !== true,
      payload: new Binary(Buffer.from(`v=${signature.toString('base64')}`)),
      ok: 1,
    };
  };

  return async (m: ReceivedMessage, peer: FakePeer): Promise<void> => {
    const name = Object.keys(m.body)[0];
    let reply: Document;
    if (name === 'hello' || name === 'isMaster') {
      if (name === 'hello' && options.legacyHelloOnly) {
        reply = { ok: 0, code: 59, codeName: 'CommandNotFound', errmsg: 'no such command: hello' };
      } else {
        reply = { ...FAKE_HELLO, ...options.helloExtra };
        if (m.body.saslSupportedMechs !== undefined)
          reply.saslSupportedMechs = options.mechs ?? ['SCRAM-SHA-1', 'SCRAM-SHA-256'];
        const spec = m.body.speculativeAuthenticate as Document | undefined;
        if (spec !== undefined && options.speculative) {
          if (spec.saslStart === 1) {
            const { ok: _ok, ...rest } = start(spec);
            reply.speculativeAuthenticate = rest;
          } else if (spec.authenticate === 1) {
            reply.speculativeAuthenticate = { dbname: '$external', user: 'CN=client' };
          }
        }
      }
    } else if (name === 'saslStart') {
      reply = start(m.body);
    } else if (name === 'saslContinue') {
      reply = next(m.body);
    } else if (name === 'authenticate') {
      reply = { dbname: '$external', user: m.body.user ?? 'CN=client', ok: 1 };
    } else {
      reply = { ok: 1 };
    }
    await peer.reply(reply, m);
  };
}

let server: FakeUpstream | undefined;
let connection: UpstreamConnection | undefined;

afterEach(async () => {
  connection?.close();
  await server?.close();
  server = undefined;
});

async function handshake(uriQuery: string, serverOptions: ScramServerOptions = {}, credentials = true) {
  server = await startFakeUpstream(scramServer(serverOptions), { answerHandshake: false });
  const auth = credentials ? `${encodeURIComponent(USER)}:${encodeURIComponent(PASSWORD)}@` : '';
  const target = parseUpstreamUri(`mongodb://${auth}127.0.0.1:${server.port}/${uriQuery}`);
  connection = await UpstreamConnection.connect({ address: server.address, connectTimeoutMS: 1_000 });
  const result = await performHandshake(connection, { target, scramCache: new ScramKeyCache() });
  return { result, received: server.peers[0]?.received ?? [] };
}

const names = (received: ReceivedMessage[]) => received.map((m) => Object.keys(m.body)[0]);

describe('performHandshake', () => {
  it('sends the proxy metadata, never auth, without credentials', async () => {
    const { result, received } = await handshake('?appName=edge-proxy&compressors=zstd,zlib', {}, false);
    expect(names(received)).toEqual(['hello']);
    const hello = received[0]?.body as Document;
    expect(hello.$db).toBe('admin');
    expect(hello.client.driver).toEqual({ name: PROXY_DRIVER_NAME, version: PROXY_VERSION });
    expect(PROXY_VERSION).toMatch(/^\d+\.\d+\.\d+/);
    expect(hello.client.application).toEqual({ name: 'edge-proxy' });
    expect(typeof hello.client.os.type).toBe('string');
    expect(hello.compression).toEqual(['zstd', 'zlib']);
    expect(hello.saslSupportedMechs).toBeUndefined();
    expect(hello.speculativeAuthenticate).toBeUndefined();
    expect(hello.helloOk).toBeUndefined();
    expect(result.mechanism).toBeUndefined();
    expect(result.compressor).toBeUndefined();
  });

  it('negotiates SCRAM-SHA-256 through saslSupportedMechs and saslStart/saslContinue', async () => {
    const { result, received } = await handshake('?authSource=admin');
    expect(names(received)).toEqual(['hello', 'saslStart', 'saslContinue']);
    expect(received[0]?.body.compression).toBeUndefined();
    expect(received[0]?.body.saslSupportedMechs).toBe(`admin.${USER}`);
    expect(received[0]?.body.speculativeAuthenticate?.mechanism).toBe('SCRAM-SHA-256');
    expect(received[1]?.body).toMatchObject({
      mechanism: 'SCRAM-SHA-256',
      options: { skipEmptyExchange: true },
      $db: 'admin',
    });
    expect(result).toMatchObject({ mechanism: 'SCRAM-SHA-256', speculative: false });
  });

  it('falls back to SCRAM-SHA-1 when the server does not list SCRAM-SHA-256', async () => {
    const { result, received } = await handshake('', { mechs: ['SCRAM-SHA-1'] });
    expect(result.mechanism).toBe('SCRAM-SHA-1');
    expect(received[1]?.body.mechanism).toBe('SCRAM-SHA-1');
  });

  it('continues a speculative conversation started in hello', async () => {
    const { result, received } = await handshake('appdb?authMechanism=SCRAM-SHA-256', { speculative: true });
    expect(names(received)).toEqual(['hello', 'saslContinue']);
    expect(received[0]?.body.speculativeAuthenticate).toMatchObject({ saslStart: 1, db: 'appdb' });
    expect(received[0]?.body.saslSupportedMechs).toBeUndefined();
    expect(received[1]?.body.$db).toBe('appdb');
    expect(result).toMatchObject({ mechanism: 'SCRAM-SHA-256', speculative: true });
  });

  it('does the extra empty round trip for servers without skipEmptyExchange', async () => {
    const { result, received } = await handshake('?authMechanism=SCRAM-SHA-1', { legacyEmptyExchange: true });
    expect(names(received)).toEqual(['hello', 'saslStart', 'saslContinue', 'saslContinue']);
    expect(result.mechanism).toBe('SCRAM-SHA-1');
  });

  it('refuses a server whose signature does not verify', async () => {
    const error = await handshake('?authMechanism=SCRAM-SHA-256', { badSignature: true }).catch((e: unknown) => e);
    expect(ProxyError.is(error) && error.code).toBe(ErrorCodes.AuthenticationFailed);
    expect((error as Error).message).toMatch(/server signature did not verify/);
    expect((error as Error).message).not.toContain(PASSWORD);
  });

  it('falls back to isMaster for servers without hello', async () => {
    const { received } = await handshake('', { legacyHelloOnly: true }, false);
    expect(names(received)).toEqual(['hello', 'isMaster']);
    expect(received[1]?.body.helloOk).toBe(true);
  });

  it('adopts the first compressor the server agreed to and its message size limit', async () => {
    const { result } = await handshake(
      '?compressors=zlib,snappy',
      { helloExtra: { compression: ['snappy', 'zstd'] } },
      false,
    );
    expect(result.compressor).toBe('snappy');
    expect(connection?.compressor).toBe('snappy');
  });

  it('authenticates MONGODB-X509 with the authenticate command on $external', async () => {
    // TLS itself is not exercised here: performHandshake runs on whatever socket it is given.
    const { result, received } = await handshake('?authMechanism=MONGODB-X509&tlsCertificateKeyFile=/x.pem', {}, false);
    expect(names(received)).toEqual(['hello', 'authenticate']);
    expect(received[0]?.body.speculativeAuthenticate).toMatchObject({
      authenticate: 1,
      mechanism: 'MONGODB-X509',
      db: '$external',
    });
    expect(received[1]?.body).toMatchObject({ authenticate: 1, mechanism: 'MONGODB-X509', $db: '$external' });
    expect(received[1]?.body.user).toBeUndefined();
    expect(result.mechanism).toBe('MONGODB-X509');
  });

  it('skips the X509 command when the speculative one succeeded', async () => {
    const { result, received } = await handshake(
      '?authMechanism=MONGODB-X509&tlsCertificateKeyFile=/x.pem',
      { speculative: true },
      false,
    );
    expect(names(received)).toEqual(['hello']);
    expect(result.speculative).toBe(true);
  });
});
