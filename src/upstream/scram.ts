/**
 * The client side of a SCRAM-SHA-1 / SCRAM-SHA-256 conversation (RFC 5802, RFC 7677), with
 * MongoDB's rules from mongodb/specifications source/auth/auth.md:
 * - the user name is escaped (saslname) but never SASLprep'd;
 * - SCRAM-SHA-256 SASLprep's the password, SCRAM-SHA-1 uses HEX(MD5(user:mongo:password));
 * - no channel binding ("n,,"), at least 4096 iterations, and the server signature is verified.
 *
 * This class only builds and checks payloads; handshake.ts carries them in saslStart /
 * saslContinue (or hello's speculativeAuthenticate).
 */

import { randomBytes } from 'node:crypto';
import { ErrorCodes, UpstreamError } from '../errors.js';
import {
  GS2_HEADER,
  SCRAM_MIN_ITERATIONS,
  type ScramHash,
  type ScramMechanismName,
  ScramMechanism,
  authMessage,
  clientProof,
  constantTimeEqual,
  decodeBase64Strict,
  deriveKeys,
  escapeSaslName,
  hashOf,
  hiAsync,
  isValidNonce,
  loadSaslprep,
  mongoPasswordDigest,
  parseAttributes,
  serverSignature,
} from '../protocol/scram-crypto.js';

export interface ScramCredentials {
  mechanism: ScramMechanismName;
  username: string;
  password: string;
}

interface CachedKeys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/**
 * Derived keys per (mechanism, salt, iterations), as auth.md requires drivers to cache them:
 * PBKDF2 with 15000 iterations costs milliseconds per connection otherwise. One cache belongs
 * to one set of credentials (one Upstream), so the password is not part of the key.
 */
export class ScramKeyCache {
  readonly #entries = new Map<string, CachedKeys>();
  readonly #maxEntries: number;

  constructor(maxEntries = 8) {
    this.#maxEntries = maxEntries;
  }

  get(mechanism: string, salt: Uint8Array, iterations: number): CachedKeys | undefined {
    return this.#entries.get(cacheKey(mechanism, salt, iterations));
  }

  set(mechanism: string, salt: Uint8Array, iterations: number, keys: CachedKeys): void {
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
    this.#entries.set(cacheKey(mechanism, salt, iterations), keys);
  }

  get size(): number {
    return this.#entries.size;
  }
}

function cacheKey(mechanism: string, salt: Uint8Array, iterations: number): string {
  return `${mechanism}\0${Buffer.from(salt).toString('base64')}\0${iterations}`;
}

const State = {
  initial: 0,
  sentFirst: 1,
  sentFinal: 2,
  verified: 3,
} as const;

type StateValue = (typeof State)[keyof typeof State];

export interface ScramClientOptions {
  /** Test hook: a fixed client nonce instead of 24 random bytes. */
  nonce?: string;
  cache?: ScramKeyCache;
}

export class ScramClient {
  readonly mechanism: ScramMechanismName;
  readonly #hash: ScramHash;
  readonly #username: string;
  readonly #password: string;
  readonly #nonce: string;
  readonly #cache: ScramKeyCache | undefined;
  #state: StateValue = State.initial;
  #clientFirstBare = '';
  #expectedServerSignature: Buffer | undefined;

  constructor(credentials: ScramCredentials, options: ScramClientOptions = {}) {
    this.mechanism = credentials.mechanism;
    this.#hash = hashOf(credentials.mechanism);
    this.#username = credentials.username;
    this.#password = credentials.password;
    this.#nonce = options.nonce ?? randomBytes(24).toString('base64');
    this.#cache = options.cache;
    if (!isValidNonce(this.#nonce)) throw new RangeError('SCRAM nonce must be printable ASCII without ","');
  }

  /** client-first-message: `n,,n=<user>,r=<nonce>`. */
  clientFirst(): Buffer {
    this.#expectState(State.initial);
    this.#clientFirstBare = `n=${escapeSaslName(this.#username)},r=${this.#nonce}`;
    this.#state = State.sentFirst;
    return Buffer.from(GS2_HEADER + this.#clientFirstBare, 'utf8');
  }

  /** Checks server-first-message and answers with client-final-message (carrying the proof). */
  async clientFinal(serverFirstPayload: Uint8Array): Promise<Buffer> {
    this.#expectState(State.sentFirst);
    const serverFirst = Buffer.from(serverFirstPayload).toString('utf8');
    const attrs = parseAttributes(serverFirst);
    if (attrs === null) throw authError('server-first-message is malformed');
    if (attrs.has('m')) throw authError('server requires an unsupported SCRAM extension');
    if (attrs.has('e')) throw authError(`server refused: ${attrs.get('e')}`);
    const combinedNonce = attrs.get('r');
    const saltText = attrs.get('s');
    const iterationText = attrs.get('i');
    if (combinedNonce === undefined || saltText === undefined || iterationText === undefined) {
      throw authError('server-first-message lacks r, s or i');
    }
    // The server's nonce must extend ours, or this is a replay or a different conversation.
    if (!combinedNonce.startsWith(this.#nonce) || combinedNonce.length === this.#nonce.length) {
      throw authError('server nonce does not extend the client nonce');
    }
    if (!isValidNonce(combinedNonce)) throw authError('server nonce has invalid characters');
    const salt = decodeBase64Strict(saltText);
    if (salt === null || salt.length === 0) throw authError('server salt is not valid base64');
    if (!/^\d{1,10}$/.test(iterationText)) throw authError('iteration count is not a number');
    const iterations = Number(iterationText);
    if (iterations < SCRAM_MIN_ITERATIONS) {
      throw authError(`iteration count ${iterations} is below the minimum of ${SCRAM_MIN_ITERATIONS}`);
    }

    const keys = await this.#keys(salt, iterations);
    const clientFinalWithoutProof = `c=${Buffer.from(GS2_HEADER).toString('base64')},r=${combinedNonce}`;
    const message = authMessage(this.#clientFirstBare, serverFirst, clientFinalWithoutProof);
    const proof = clientProof(this.#hash, keys.clientKey, keys.storedKey, message);
    this.#expectedServerSignature = serverSignature(this.#hash, keys.serverKey, message);
    this.#state = State.sentFinal;
    return Buffer.from(`${clientFinalWithoutProof},p=${proof.toString('base64')}`, 'utf8');
  }

  /** Checks server-final-message `v=<signature>`: proof that the server knows the password too. */
  verifyServerFinal(serverFinalPayload: Uint8Array): void {
    this.#expectState(State.sentFinal);
    const attrs = parseAttributes(Buffer.from(serverFinalPayload).toString('utf8'));
    if (attrs === null) throw authError('server-final-message is malformed');
    if (attrs.has('e')) throw authError(`server refused: ${attrs.get('e')}`);
    const v = attrs.get('v');
    const signature = v === undefined ? null : decodeBase64Strict(v);
    const expected = this.#expectedServerSignature;
    if (signature === null || expected === undefined || !constantTimeEqual(signature, expected)) {
      throw authError('server signature did not verify');
    }
    this.#state = State.verified;
  }

  /** True once the server's signature has been checked. */
  get verified(): boolean {
    return this.#state === State.verified;
  }

  async #keys(salt: Buffer, iterations: number): Promise<CachedKeys> {
    const cached = this.#cache?.get(this.mechanism, salt, iterations);
    if (cached !== undefined) return cached;
    const salted = await hiAsync(this.#hash, this.#normalizedPassword(), salt, iterations);
    const keys = deriveKeys(this.#hash, salted);
    this.#cache?.set(this.mechanism, salt, iterations, keys);
    return keys;
  }

  #normalizedPassword(): string {
    if (this.mechanism === ScramMechanism.sha1) return mongoPasswordDigest(this.#username, this.#password);
    const saslprep = loadSaslprep();
    try {
      return saslprep(this.#password);
    } catch {
      // saslprep's message quotes the offending character; do not repeat any of the password.
      throw authError('password contains characters SASLprep prohibits');
    }
  }

  #expectState(state: StateValue): void {
    if (this.#state !== state) throw new Error(`ScramClient used out of order (state ${this.#state}, wanted ${state})`);
  }
}

function authError(message: string): UpstreamError {
  return new UpstreamError(ErrorCodes.AuthenticationFailed, `upstream SCRAM authentication failed: ${message}`);
}
