/**
 * What happens on every new upstream connection before it is handed out: the initial hello
 * (mongodb/specifications source/mongodb-handshake/handshake.md) carrying the PROXY's own client
 * metadata, compressor negotiation, and authentication (source/auth/auth.md): SCRAM-SHA-256,
 * SCRAM-SHA-1 or MONGODB-X509, started speculatively inside the hello when possible.
 *
 * Clients' handshakes are answered by the proxy itself (src/protocol/hello.ts); their metadata
 * never reaches the upstream.
 */

import { PROXY_VERSION } from '../version.js';
import * as os from 'node:os';
import type { Logger } from 'pino';
import type { CompressorName } from '../config/types.js';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import { Binary, type Document, deserialize, serialize } from '../wire/bson.js';
import { encodeOpMsg, parseOpMsg } from '../wire/op-msg.js';
import type { UpstreamConnection } from './connection.js';
import { ScramClient, type ScramKeyCache } from './scram.js';
import { AuthMechanism, type AuthMechanismName, type UpstreamCredentials, type UpstreamTarget } from './uri.js';

/** Replies of the handshake are small server documents; this only bounds a hostile one. */
const REPLY_MAX_BSON_DEPTH = 100;

/** saslContinue rounds after the proof before giving up on a server that never says done. */
const MAX_EMPTY_EXCHANGES = 2;

export const PROXY_DRIVER_NAME = 'mongo-tenant-proxy';

export { PROXY_VERSION };

export interface HandshakeOptions {
  target: UpstreamTarget;
  /** Shared by every connection of one Upstream (auth.md: derived SCRAM keys MUST be cached). */
  scramCache?: ScramKeyCache | undefined;
  logger?: Logger | undefined;
}

export interface HandshakeResult {
  /** The upstream's hello reply. */
  hello: Document;
  /** Compressor both sides agreed on, if any. */
  compressor: CompressorName | undefined;
  /** Mechanism that authenticated the connection; undefined without credentials. */
  mechanism: AuthMechanismName | undefined;
  /** Whether the first authentication step rode in the hello. */
  speculative: boolean;
}

/**
 * Runs hello and authentication on a fresh connection. Rejects with an UpstreamError (the
 * server's code for a refused hello or authentication); the caller closes the connection.
 */
export async function performHandshake(
  connection: UpstreamConnection,
  options: HandshakeOptions,
): Promise<HandshakeResult> {
  const { target } = options;
  const credentials = target.credentials;
  const speculative = credentials === undefined ? undefined : startSpeculative(credentials, options.scramCache);

  const helloCommand: Document = { hello: 1, client: clientMetadata(target.appName) };
  if (target.compressors.length > 0) helloCommand.compression = [...target.compressors];
  if (credentials !== undefined && credentials.mechanism === undefined) {
    // The raw user name, not SASLprep'd (auth.md, mechanism negotiation).
    helloCommand.saslSupportedMechs = `${credentials.source}.${credentials.username ?? ''}`;
  }
  if (speculative !== undefined) helloCommand.speculativeAuthenticate = speculative.command;

  let hello: Document;
  try {
    hello = await runCommand(connection, 'admin', helloCommand);
  } catch (error) {
    // Servers older than 4.4.2 know only the legacy name.
    if (!(ProxyError.is(error) && error.code === ErrorCodes.CommandNotFound)) throw error;
    const { hello: _hello, ...rest } = helloCommand;
    hello = await runCommand(connection, 'admin', { isMaster: 1, helloOk: true, ...rest });
  }

  const compressor = pickCompressor(target.compressors, hello.compression);
  connection.setCompression(compressor, target.zlibCompressionLevel);
  if (typeof hello.maxMessageSizeBytes === 'number' && hello.maxMessageSizeBytes > 0) {
    connection.setMaxMessageSize(hello.maxMessageSizeBytes);
  }

  // Arbiters hold no data and accept no authentication (auth.md, step 2).
  if (credentials === undefined || hello.arbiterOnly === true) {
    return { hello, compressor, mechanism: undefined, speculative: false };
  }

  const speculativeReply: unknown = hello.speculativeAuthenticate;
  const hasSpeculativeReply = isDocument(speculativeReply);
  let mechanism: AuthMechanismName;
  if (credentials.mechanism === AuthMechanism.x509) {
    mechanism = AuthMechanism.x509;
    if (!hasSpeculativeReply) await authenticateX509(connection, credentials, options);
  } else {
    mechanism = credentials.mechanism ?? defaultScramMechanism(hello.saslSupportedMechs);
    const scram =
      hasSpeculativeReply && speculative?.scram !== undefined && speculative.scram.mechanism === mechanism
        ? { client: speculative.scram, firstReply: speculativeReply }
        : undefined;
    await authenticateScram(connection, credentials, mechanism, options, scram);
  }
  options.logger?.debug(
    { mechanism, speculative: hasSpeculativeReply, compressor: compressor ?? null },
    'upstream connection authenticated',
  );
  return { hello, compressor, mechanism, speculative: hasSpeculativeReply };
}

/**
 * Sends one command on `connection` and returns the reply document. A reply with `ok` other
 * than 1 becomes an UpstreamError carrying the server's code and errmsg.
 */
export async function runCommand(connection: UpstreamConnection, db: string, command: Document): Promise<Document> {
  const body = serialize({ ...command, $db: db });
  const frame = encodeOpMsg({ requestId: 0, responseTo: 0, body });
  let replyFrame: Buffer | undefined;
  await connection.request(frame, (reply) => {
    replyFrame = reply;
  });
  if (replyFrame === undefined) throw new UpstreamError(ErrorCodes.ProtocolError, 'upstream sent no reply');
  let document: Document;
  try {
    const msg = parseOpMsg(replyFrame, { maxBsonDepth: REPLY_MAX_BSON_DEPTH });
    document = deserialize(msg.body, { promoteBuffers: true });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new UpstreamError(ErrorCodes.ProtocolError, `unreadable reply from upstream: ${message}`, { cause: error });
  }
  if (document.ok !== 1) {
    const code = typeof document.code === 'number' ? document.code : ErrorCodes.UnknownError;
    const errmsg = typeof document.errmsg === 'string' ? document.errmsg : 'command failed';
    const name = Object.keys(command)[0] ?? 'command';
    const labels = Array.isArray(document.errorLabels)
      ? document.errorLabels.filter((l): l is string => typeof l === 'string')
      : [];
    throw new UpstreamError(code, `upstream ${name} failed: ${errmsg}`, { labels });
  }
  return document;
}

/** The proxy's own client metadata (handshake.md, "client"); never a client's. */
export function clientMetadata(appName: string | undefined): Document {
  const metadata: Document = {
    driver: { name: PROXY_DRIVER_NAME, version: PROXY_VERSION },
    os: { type: os.type(), name: process.platform, architecture: process.arch, version: os.release() },
    platform: `Node.js ${process.version}`,
  };
  if (appName !== undefined) metadata.application = { name: appName };
  return metadata;
}

// --- authentication -------------------------------------------------------------------------

interface SpeculativeStart {
  command: Document;
  scram: ScramClient | undefined;
}

function startSpeculative(credentials: UpstreamCredentials, cache: ScramKeyCache | undefined): SpeculativeStart {
  if (credentials.mechanism === AuthMechanism.x509) {
    return { command: { ...x509Command(credentials), db: '$external' }, scram: undefined };
  }
  // Without a configured mechanism the speculative attempt MUST be SCRAM-SHA-256 (handshake.md).
  const scram = newScramClient(credentials, credentials.mechanism ?? AuthMechanism.scramSha256, cache);
  return { command: { ...saslStartCommand(scram), db: credentials.source }, scram };
}

function x509Command(credentials: UpstreamCredentials): Document {
  const command: Document = { authenticate: 1, mechanism: AuthMechanism.x509 };
  if (credentials.username !== undefined) command.user = credentials.username;
  return command;
}

async function authenticateX509(
  connection: UpstreamConnection,
  credentials: UpstreamCredentials,
  options: HandshakeOptions,
): Promise<void> {
  try {
    await runCommand(connection, '$external', x509Command(credentials));
  } catch (error) {
    throw authFailure(error, AuthMechanism.x509, '$external', credentials, options);
  }
}

function saslStartCommand(scram: ScramClient): Document {
  return {
    saslStart: 1,
    mechanism: scram.mechanism,
    payload: new Binary(scram.clientFirst()),
    autoAuthorize: 1,
    options: { skipEmptyExchange: true },
  };
}

function newScramClient(
  credentials: UpstreamCredentials,
  mechanism: AuthMechanismName,
  cache: ScramKeyCache | undefined,
): ScramClient {
  if (mechanism === AuthMechanism.x509) throw new Error('not a SCRAM mechanism');
  return new ScramClient(
    { mechanism, username: credentials.username ?? '', password: credentials.password ?? '' },
    cache === undefined ? {} : { cache },
  );
}

async function authenticateScram(
  connection: UpstreamConnection,
  credentials: UpstreamCredentials,
  mechanism: AuthMechanismName,
  options: HandshakeOptions,
  speculative: { client: ScramClient; firstReply: Document } | undefined,
): Promise<void> {
  const db = credentials.source;
  try {
    let client: ScramClient;
    let reply: Document;
    if (speculative !== undefined) {
      client = speculative.client;
      reply = speculative.firstReply;
    } else {
      client = newScramClient(credentials, mechanism, options.scramCache);
      reply = await runCommand(connection, db, saslStartCommand(client));
    }
    const conversationId: unknown = reply.conversationId;
    if (reply.done === true) throw scramProtocolError('server ended the conversation before the proof');
    const clientFinal = await client.clientFinal(payloadOf(reply));
    reply = await runCommand(connection, db, { saslContinue: 1, conversationId, payload: new Binary(clientFinal) });
    client.verifyServerFinal(payloadOf(reply));
    // Servers that ignore skipEmptyExchange want one more, empty, round trip.
    for (let i = 0; reply.done !== true; i++) {
      if (i >= MAX_EMPTY_EXCHANGES) throw scramProtocolError('server never completed the conversation');
      reply = await runCommand(connection, db, {
        saslContinue: 1,
        conversationId,
        payload: new Binary(Buffer.alloc(0)),
      });
    }
  } catch (error) {
    throw authFailure(error, mechanism, db, credentials, options);
  }
}

function payloadOf(reply: Document): Buffer {
  const payload: unknown = reply.payload;
  if (Buffer.isBuffer(payload)) return payload;
  // Servers answer a base64 string payload in kind; we send binary, but accept both.
  if (typeof payload === 'string') return Buffer.from(payload, 'base64');
  throw scramProtocolError('reply has no payload');
}

function scramProtocolError(message: string): UpstreamError {
  return new UpstreamError(ErrorCodes.AuthenticationFailed, `upstream SCRAM authentication failed: ${message}`);
}

/**
 * An authentication failure as an UpstreamError with the server's code. The message names the
 * mechanism and database, never the user name or password (and scrubs the password should a
 * server ever echo it).
 */
function authFailure(
  error: unknown,
  mechanism: AuthMechanismName,
  db: string,
  credentials: UpstreamCredentials,
  options: HandshakeOptions,
): Error {
  if (!ProxyError.is(error)) return error instanceof Error ? error : new Error(String(error));
  // Transport failures keep their own code and label: they are not a verdict on credentials.
  if (error.labels.includes('NetworkError')) return error;
  let detail = error.message
    .replace(/^upstream \w+ failed: /, '')
    .replace(/^upstream SCRAM authentication failed: /, '');
  const password = credentials.password;
  if (password !== undefined && password.length >= 4) detail = detail.split(password).join('*****');
  options.logger?.warn({ mechanism, db, code: error.code }, 'upstream authentication failed');
  return new UpstreamError(error.code, `upstream authentication (${mechanism} on "${db}") failed: ${detail}`, {
    labels: error.labels,
  });
}

function defaultScramMechanism(saslSupportedMechs: unknown): AuthMechanismName {
  // auth.md: SCRAM-SHA-256 when listed, otherwise SCRAM-SHA-1 even if not listed.
  return Array.isArray(saslSupportedMechs) && saslSupportedMechs.includes(AuthMechanism.scramSha256)
    ? AuthMechanism.scramSha256
    : AuthMechanism.scramSha1;
}

function pickCompressor(offered: readonly CompressorName[], agreed: unknown): CompressorName | undefined {
  if (!Array.isArray(agreed)) return undefined;
  // The server lists the compressors it shares with us; the first one is used (OP_COMPRESSED.md).
  for (const name of agreed) {
    if (typeof name === 'string' && (offered as readonly string[]).includes(name)) return name as CompressorName;
  }
  return undefined;
}

function isDocument(value: unknown): value is Document {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}
