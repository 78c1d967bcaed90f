/**
 * The server side of SCRAM-SHA-256 / SCRAM-SHA-1 (RFC 5802, RFC 7677) as a MongoDB server plays
 * it (mongodb/specifications source/auth/auth.md), verifying clients against the credentials
 * file (method `scram`). The client's password never reaches the proxy, and nothing reaches the
 * upstream: the proxy uses its own credentials there.
 *
 *   client-first   n,,n=<saslname>,r=<client nonce>          (saslStart, or hello's speculativeAuthenticate)
 *   server-first   r=<client nonce><server nonce>,s=<salt>,i=<iterations>
 *   client-final   c=biws,r=<combined nonce>,p=<proof>       (saslContinue)
 *   server-final   v=<server signature>                      done when saslStart had skipEmptyExchange,
 *   (empty)        ──▶ done                                   else after one more empty round, as before 4.4
 *
 * Rules kept here:
 * - no channel binding: the gs2 header must be `n,` (a `p=` or `y` flag fails), an authzid
 *   (`a=`) is accepted only when it names the user itself, and `c=` must be base64 of the header;
 * - user names are SASL-unescaped (`=2C`, `=3D`), never SASLprep'd;
 * - an unknown user (including a known name in another database) gets a server-first message of
 *   the same shape: a salt derived from a per-process secret and `db.user` (stable across
 *   attempts, as a real salt is), the default iteration count, and fails at the proof. A user
 *   without credentials for this mechanism fails at once, as on a MongoDB server (see below);
 * - every failure is the same ProxyError(AuthenticationFailed, 'Authentication failed.'); the
 *   reason is only in `cause` for server-side logs;
 * - a conversation is used once: after success or failure every further step fails.
 */

import { createHmac, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { IdentityConfig, ScramMechanism } from '../config/types.js';
import { ConfigError, ErrorCodes, InvariantError, ProxyError } from '../errors.js';
import {
  authMessage,
  decodeBase64Strict,
  hashLength,
  hashOf,
  isValidNonce,
  parseAttributes,
  serverSignature,
  unescapeSaslName,
  verifyClientProof,
  type ScramHash,
} from '../protocol/scram-crypto.js';
import {
  CREDENTIALS_FILE_FIELD,
  DEFAULT_ITERATIONS,
  SCRAM_MECHANISMS,
  createCredentialStore,
  saltLengthOf,
  type CredentialLookup,
  type ScramStoredCredentials,
} from './credentials.js';
import type {
  AuthAttemptContext,
  AuthenticatedPrincipal,
  SaslConversation,
  SaslMechanism,
  SaslStartRequest,
  SaslStepResult,
  ScramService,
} from './types.js';

/** The one message every failure carries (no hint whether the user exists). */
export const AUTHENTICATION_FAILED_MESSAGE = 'Authentication failed.';

/** Client messages longer than this are refused before parsing (a real one is ~100–200 bytes). */
const MAX_CLIENT_MESSAGE_BYTES = 4096;

export function authenticationFailed(reason: string): ProxyError {
  return new ProxyError(ErrorCodes.AuthenticationFailed, AUTHENTICATION_FAILED_MESSAGE, { cause: new Error(reason) });
}

export interface ScramServerOptions {
  /** Test hook: the server's part of the nonce (printable ASCII without ","); 24 random bytes in base64 otherwise. */
  serverNonce?: () => string;
  /** Test hook: the secret behind unknown users' salts; random per process otherwise. */
  fakeSaltKey?: Buffer;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(payload: Buffer): string | null {
  if (payload.length > MAX_CLIENT_MESSAGE_BYTES) return null;
  try {
    return utf8Decoder.decode(payload);
  } catch {
    return null;
  }
}

interface ClientFirst {
  /** The gs2 header exactly as sent (e.g. `n,,`), which `c=` must echo in base64. */
  gs2Header: string;
  clientFirstBare: string;
  user: string;
  clientNonce: string;
}

/** Parses `gs2-header client-first-message-bare`; throws AuthenticationFailed. */
function parseClientFirst(message: string): ClientFirst {
  // gs2-header = gs2-cbind-flag "," [ authzid ] ","
  const firstComma = message.indexOf(',');
  const secondComma = firstComma < 0 ? -1 : message.indexOf(',', firstComma + 1);
  if (secondComma < 0) throw authenticationFailed('client-first-message lacks a gs2 header');
  const flag = message.slice(0, firstComma);
  if (flag !== 'n') {
    // "p=<cb-name>": the client wants channel binding; "y": it could, and thinks we cannot.
    // MongoDB advertises no -PLUS mechanism and accepts neither.
    throw authenticationFailed('channel binding is not supported');
  }
  const authzidPart = message.slice(firstComma + 1, secondComma);
  const gs2Header = message.slice(0, secondComma + 1);
  const clientFirstBare = message.slice(secondComma + 1);

  const attrs = clientFirstBare.split(',');
  const parsed = parseAttributes(clientFirstBare);
  if (parsed === null) throw authenticationFailed('client-first-message is malformed');
  // reserved-mext ("m=") is a mandatory extension nobody defines: RFC 5802 says fail.
  if (!attrs[0]?.startsWith('n=') || !attrs[1]?.startsWith('r=')) {
    throw authenticationFailed('client-first-message must start with n= and r=');
  }
  const user = unescapeSaslName(parsed.get('n') ?? '');
  if (user === null || user.length === 0) throw authenticationFailed('user name is empty or badly escaped');
  const clientNonce = parsed.get('r') ?? '';
  if (!isValidNonce(clientNonce)) throw authenticationFailed('client nonce is empty or has invalid characters');
  // Further attributes are extensions: RFC 5802 says unknown ones are ignored.

  if (authzidPart !== '') {
    if (!authzidPart.startsWith('a=')) throw authenticationFailed('gs2 header is malformed');
    const authzid = unescapeSaslName(authzidPart.slice(2));
    // Acting as another identity is not a thing here; naming oneself is harmless.
    if (authzid !== user) throw authenticationFailed('authorization identity differs from the user');
  }
  return { gs2Header, clientFirstBare, user, clientNonce };
}

interface Verifier {
  salt: Buffer;
  iterationCount: number;
  /** Undefined for an unknown user: the proof is still checked against a throwaway key, then fails. */
  stored: ScramStoredCredentials | undefined;
  tenant: string | undefined;
}

class ScramServerMechanism implements SaslMechanism {
  readonly name: ScramMechanism;
  readonly #hash: ScramHash;
  readonly #lookup: CredentialLookup;
  readonly #fakeSaltKey: Buffer;
  readonly #serverNonce: () => string;

  constructor(name: ScramMechanism, lookup: CredentialLookup, options: ScramServerOptions) {
    this.name = name;
    this.#hash = hashOf(name);
    this.#lookup = lookup;
    this.#fakeSaltKey = options.fakeSaltKey ?? randomBytes(32);
    this.#serverNonce = options.serverNonce ?? (() => randomBytes(24).toString('base64'));
  }

  async start(request: SaslStartRequest, _context: AuthAttemptContext): Promise<SaslStepResult> {
    const text = Buffer.isBuffer(request.payload) ? decodeUtf8(request.payload) : null;
    if (text === null) throw authenticationFailed('client-first-message is not UTF-8 or too long');
    const first = parseClientFirst(text);
    const db = request.db;
    if (typeof db !== 'string' || db.length === 0) throw authenticationFailed('no authentication database');

    const verifier = this.#verifierFor(db, first.user);
    const serverPart = this.#serverNonce();
    if (!isValidNonce(serverPart)) throw new InvariantError('SCRAM server nonce must be printable ASCII without ","');
    const combinedNonce = first.clientNonce + serverPart;
    const serverFirst = `r=${combinedNonce},s=${verifier.salt.toString('base64')},i=${verifier.iterationCount}`;
    const skipEmptyExchange = request.options?.skipEmptyExchange === true;
    const conversation = new ScramServerConversation({
      hash: this.#hash,
      first,
      db,
      serverFirst,
      combinedNonce,
      verifier,
      skipEmptyExchange,
    });
    return { done: false, payload: Buffer.from(serverFirst, 'utf8'), conversation };
  }

  #verifierFor(db: string, user: string): Verifier {
    const entry = this.#lookup.lookup(db, user);
    if (entry !== undefined && entry.db === db) {
      const stored = entry.mechanisms[this.name];
      // As a MongoDB server does, and necessarily: a driver left to choose (no authMechanism)
      // always tries SCRAM-SHA-256 speculatively in hello, and must get no reply to it when the
      // user has only SCRAM-SHA-1, or it would continue that conversation with SHA-1 keys. This
      // reveals nothing saslSupportedMechs does not already say.
      if (stored === undefined) throw authenticationFailed(`the user has no ${this.name} credentials`);
      return { salt: stored.salt, iterationCount: stored.iterationCount, stored, tenant: entry.tenant };
    }
    // Same salt for the same name every time (a real user's salt does not change either), the
    // length MongoDB uses, and the count a freshly created user would have.
    const salt = createHmac('sha256', this.#fakeSaltKey)
      .update(`${this.name}\0${db}.${user}`, 'utf8')
      .digest()
      .subarray(0, saltLengthOf(this.name));
    return { salt, iterationCount: DEFAULT_ITERATIONS[this.name], stored: undefined, tenant: undefined };
  }
}

const Step = {
  awaitingFinal: 0,
  awaitingEmpty: 1,
  finished: 2,
} as const;

type StepValue = (typeof Step)[keyof typeof Step];

interface ConversationInit {
  hash: ScramHash;
  first: ClientFirst;
  db: string;
  serverFirst: string;
  combinedNonce: string;
  verifier: Verifier;
  skipEmptyExchange: boolean;
}

class ScramServerConversation implements SaslConversation {
  readonly #init: ConversationInit;
  #step: StepValue = Step.awaitingFinal;
  #principal: AuthenticatedPrincipal | undefined;

  constructor(init: ConversationInit) {
    this.#init = init;
  }

  async step(payload: Buffer): Promise<SaslStepResult> {
    const step = this.#step;
    // Any failure ends the conversation; so does success.
    this.#step = Step.finished;
    switch (step) {
      case Step.awaitingFinal:
        return this.#clientFinal(payload);
      case Step.awaitingEmpty: {
        // The pre-4.4 closing round: the client has verified our signature and sends nothing.
        if (!Buffer.isBuffer(payload) || payload.length !== 0)
          throw authenticationFailed('expected an empty final message');
        return { done: true, payload: Buffer.alloc(0), principal: this.#principal as AuthenticatedPrincipal };
      }
      default:
        throw authenticationFailed('conversation is already finished');
    }
  }

  abandon(): void {
    this.#step = Step.finished;
  }

  #clientFinal(payload: Buffer): SaslStepResult {
    const { hash, first, verifier } = this.#init;
    const text = Buffer.isBuffer(payload) ? decodeUtf8(payload) : null;
    if (text === null) throw authenticationFailed('client-final-message is not UTF-8 or too long');
    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    const proofAt = text.lastIndexOf(',p=');
    if (proofAt < 0) throw authenticationFailed('client-final-message has no proof');
    const withoutProof = text.slice(0, proofAt);
    const attrs = parseAttributes(text);
    const parts = text.split(',');
    if (
      attrs === null ||
      !parts[0]?.startsWith('c=') ||
      !parts[1]?.startsWith('r=') ||
      !parts[parts.length - 1]?.startsWith('p=')
    ) {
      throw authenticationFailed('client-final-message is malformed');
    }
    if (attrs.get('c') !== Buffer.from(first.gs2Header, 'utf8').toString('base64')) {
      throw authenticationFailed('channel binding data does not match the gs2 header');
    }
    if (attrs.get('r') !== this.#init.combinedNonce) throw authenticationFailed('nonce does not match');
    const proof = decodeBase64Strict(attrs.get('p') ?? '');
    if (proof === null || proof.length !== hashLength(hash)) throw authenticationFailed('proof is malformed');

    const message = authMessage(first.clientFirstBare, this.#init.serverFirst, withoutProof);
    // An unknown user's proof is checked too, against a key nobody has, so both take as long.
    const storedKey = verifier.stored?.storedKey ?? randomBytes(hashLength(hash));
    const valid = verifyClientProof(hash, storedKey, message, proof);
    if (!valid || verifier.stored === undefined || verifier.tenant === undefined) {
      throw authenticationFailed(verifier.stored === undefined ? 'unknown user or mechanism' : 'proof does not verify');
    }
    const serverFinal = Buffer.from(
      `v=${serverSignature(hash, verifier.stored.serverKey, message).toString('base64')}`,
      'utf8',
    );
    const principal: AuthenticatedPrincipal = { user: first.user, db: this.#init.db, tenant: verifier.tenant };
    if (this.#init.skipEmptyExchange) return { done: true, payload: serverFinal, principal };
    this.#principal = principal;
    this.#step = Step.awaitingEmpty;
    return { done: false, payload: serverFinal, conversation: this };
  }
}

/** The SCRAM service over any credential lookup (an in-memory one in tests). */
export function scramServiceFor(
  lookup: CredentialLookup,
  mechanisms: readonly ScramMechanism[],
  options: ScramServerOptions = {},
): ScramService {
  const enabled = SCRAM_MECHANISMS.filter((name) => mechanisms.includes(name));
  // One secret for all mechanisms: each salt also covers the mechanism name.
  const shared: ScramServerOptions = { ...options, fakeSaltKey: options.fakeSaltKey ?? randomBytes(32) };
  const list: readonly SaslMechanism[] = enabled.map((name) => new ScramServerMechanism(name, lookup, shared));
  return {
    mechanisms: list,
    supportedMechanisms(db: string, user: string): string[] {
      const entry = lookup.lookup(db, user);
      // An unknown user gets every enabled mechanism, as most users have them: nothing to learn.
      if (entry === undefined) return [...enabled];
      return enabled.filter((name) => entry.mechanisms[name] !== undefined);
    },
  };
}

export interface CreateScramServiceOptions extends ScramServerOptions {
  /** identity.reloadIntervalMS: how often the credentials file is checked for changes. */
  reloadIntervalMS: number;
  logger?: Logger;
  /** After each reload attempt of the credentials file (metrics, tests). */
  onReload?(ok: boolean, error?: Error): void;
}

/**
 * Method `scram`: one SaslMechanism per configured mechanism, verified against the credentials
 * file, which is re-read when it changes. Throws ConfigError when the file is not configured or
 * cannot be loaded at start.
 */
export function createScramService(
  config: IdentityConfig['scram'],
  options: CreateScramServiceOptions,
): ScramService & { close(): void } {
  if (config.credentialsFile === null || config.credentialsFile === '') {
    throw new ConfigError(CREDENTIALS_FILE_FIELD, 'is required when a listener enables method "scram"');
  }
  if (config.mechanisms.length === 0) {
    throw new ConfigError('identity.scram.mechanisms', 'needs at least one of SCRAM-SHA-256, SCRAM-SHA-1');
  }
  const store = createCredentialStore(config.credentialsFile, {
    reloadIntervalMS: options.reloadIntervalMS,
    logger: options.logger,
    onReload: options.onReload,
  });
  const service = scramServiceFor(store, config.mechanisms, options);
  return { ...service, close: () => store.close() };
}
