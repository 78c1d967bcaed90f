/**
 * Method `plain-jwt`: a signed JWT sent as the password of SASL PLAIN (RFC 4616,
 * `authMechanism=PLAIN`, `authSource=$external`), for example a Kubernetes projected
 * service-account token.
 *
 * The token is verified with `jose` against a public key file (PEM SPKI, PKCS#1, an X.509
 * certificate, or one JWK) or a local JWKS file: the `alg` must be on the configured
 * allowlist (`none` never is), `aud` must contain the configured audience, `iss` must equal the
 * configured issuer when one is set, `exp` is required, and `exp` / `nbf` are checked with the
 * configured clock tolerance. The tenant is the string at `tenantClaim`, a dotted path into nested
 * claims (`kubernetes.io.namespace` finds `{"kubernetes.io": {"namespace": …}}`).
 *
 * The key file is read synchronously so that a broken file stops start-up with a ConfigError;
 * later it is re-read when it changes on disk (a broken replacement keeps the previous keys).
 * Tokens are never logged.
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { JWT_ALGORITHMS } from '../config/types.js';
import { readFileSync } from 'node:fs';
import type * as Jose from 'jose';
import type { JSONWebKeySet, JWK, JWTPayload, JWTVerifyGetKey, JWTVerifyOptions } from 'jose';
import type { Logger } from 'pino';
import { onFirstUse } from '../wire/lazy-module.js';
import type { IdentityConfig } from '../config/types.js';
import { ConfigError, ErrorCodes, JwtKeyError, ProxyError } from '../errors.js';
import { watchFiles, type FileWatch } from './file-watch.js';
import type { AuthAttemptContext, SaslMechanism, SaslStartRequest, SaslStepResult } from './types.js';

export type JwtConfig = IdentityConfig['jwt'];

/**
 * `jose`, loaded when the first mechanism is made rather than at import (issue 16: some 170
 * modules that a proxy without plain-jwt never needs). Made at start or reload, so a broken
 * install still fails there.
 */
const jose = onFirstUse<typeof Jose>('jose');

export interface JwtMechanismOptions {
  /** How often the key / JWKS file is checked for changes; 0 disables hot reload. */
  reloadIntervalMS: number;
  /** Reload outcomes are logged here. */
  logger?: Logger;
}

export type JwtMechanism = SaslMechanism & { close(): void };

/**
 * JWS algorithms accepted in `identity.jwt.algorithms` (the schema's list): asymmetric only. HMAC
 * is refused on purpose: the proxy holds verification keys, never a secret that could mint tokens.
 */
export { JWT_ALGORITHMS };

/** Upper bound on a PLAIN payload: a JWT of a few KiB is normal, megabytes are not. */
export const MAX_PLAIN_PAYLOAD_BYTES = 64 * 1024;

type VerificationKey = KeyObject | JWK | JWTVerifyGetKey;

interface LoadedKeys {
  key: VerificationKey;
  /** For logs: what was loaded (never key material). */
  description: string;
}

function authenticationFailed(): ProxyError {
  return new ProxyError(ErrorCodes.AuthenticationFailed, 'Authentication failed.');
}

// --- SASL PLAIN ------------------------------------------------------------------------------

export interface PlainCredentials {
  authzid: string;
  authcid: string;
  password: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * `[authzid] NUL authcid NUL passwd` (RFC 4616 §2). Returns undefined for anything else: not
 * UTF-8, not exactly two NULs, an empty authcid or password, or an authzid other than the authcid
 * (the proxy does not act on behalf of another identity).
 */
export function parsePlainPayload(payload: Uint8Array): PlainCredentials | undefined {
  if (payload.byteLength === 0 || payload.byteLength > MAX_PLAIN_PAYLOAD_BYTES) return undefined;
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return undefined;
  }
  const parts = text.split('\0');
  if (parts.length !== 3) return undefined;
  const [authzid, authcid, password] = parts as [string, string, string];
  if (authcid.length === 0 || password.length === 0) return undefined;
  if (authzid.length > 0 && authzid !== authcid) return undefined;
  return { authzid, authcid, password };
}

// --- claims ----------------------------------------------------------------------------------

/**
 * The value at a dotted `path` in `claims`. Claim names may contain dots themselves
 * (`kubernetes.io`), so every split of the path into existing keys is tried; the result is
 * returned only when all the ways that resolve agree (otherwise the path is ambiguous:
 * undefined).
 */
export function claimAt(claims: unknown, path: string): unknown {
  const segments = path.split('.');
  const found: unknown[] = [];
  const walk = (node: unknown, from: number): void => {
    if (found.length > 1) return;
    if (from === segments.length) {
      found.push(node);
      return;
    }
    if (typeof node !== 'object' || node === null || Array.isArray(node)) return;
    for (let to = segments.length; to > from; to--) {
      const key = segments.slice(from, to).join('.');
      if (Object.hasOwn(node, key)) walk((node as Record<string, unknown>)[key], to);
    }
  };
  walk(claims, 0);
  if (found.length === 0) return undefined;
  const [first, ...rest] = found;
  return rest.every((value) => value === first) ? first : undefined;
}

// --- keys ------------------------------------------------------------------------------------

/** Algorithms a key of this type can verify. */
function algorithmsFor(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return ['ES256'];
      if (curve === 'secp384r1') return ['ES384'];
      if (curve === 'secp521r1') return ['ES512'];
      return [];
    }
    case 'ed25519':
      return ['EdDSA', 'Ed25519'];
    case 'ed448':
      return ['EdDSA'];
    default:
      return [];
  }
}

function describeKey(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return `${key.asymmetricKeyType ?? 'unknown'}${curve === undefined ? '' : ` ${curve}`}`;
}

/** A public KeyObject for one JWK, or throws (RSA, EC and OKP; never a secret or private key). */
function keyObjectOfJwk(jwk: JWK): KeyObject {
  if (jwk.kty === 'oct') throw new JwtKeyError('a symmetric ("oct") key cannot verify tokens here; give a public key');
  if (typeof jwk.d === 'string' || typeof jwk.priv === 'string') {
    throw new JwtKeyError('the JWK holds a private key; give the public key only');
  }
  return createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkFits(key: KeyObject, algorithms: readonly string[], what: string): void {
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048)
    throw new JwtKeyError(`${what} is a ${bits}-bit RSA key; at least 2048 bits are required`);
  const usable = algorithmsFor(key);
  if (!algorithms.some((alg) => usable.includes(alg))) {
    throw new JwtKeyError(
      `${what} is a ${describeKey(key)} key, which none of identity.jwt.algorithms (${algorithms.join(', ')}) can use`,
    );
  }
}

/**
 * JSON.parse without its message: V8 quotes the text around the error, which in a key file can be
 * key material (logged with the error at start and on every failed reload).
 */
function parseJsonQuietly(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new JwtKeyError('the file is not valid JSON');
  }
}

/** Reads `keyFile`: a PEM public key or certificate, or one JWK. Throws JwtKeyError (or node:crypto's error) with a reason. */
function loadKeyFile(file: string, algorithms: readonly string[]): LoadedKeys {
  const text = readFileSync(file, 'utf8');
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    const parsed: unknown = parseJsonQuietly(trimmed);
    if (!isRecord(parsed)) throw new JwtKeyError('not a JSON object');
    if (Array.isArray(parsed.keys)) throw new JwtKeyError('this is a JWKS; configure it as identity.jwt.jwksFile');
    const jwk = parsed as JWK;
    const keyObject = keyObjectOfJwk(jwk);
    checkFits(keyObject, algorithms, 'the JWK');
    if (typeof jwk.alg === 'string' && !algorithms.includes(jwk.alg)) {
      throw new JwtKeyError(`the JWK's "alg" ${jwk.alg} is not in identity.jwt.algorithms`);
    }
    // jose checks the JWK's own "alg", "use" and "key_ops" at every verification.
    return { key: Object.freeze({ ...jwk }), description: `JWK (${describeKey(keyObject)})` };
  }
  if (!trimmed.includes('-----BEGIN')) throw new JwtKeyError('neither PEM nor a JSON Web Key');
  if (/-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/.test(trimmed)) {
    throw new JwtKeyError('the file holds a private key; give the public key (or certificate) only');
  }
  const keyObject = createPublicKey(trimmed); // SPKI, PKCS#1 RSA public key, or an X.509 certificate
  checkFits(keyObject, algorithms, 'the PEM key');
  return { key: keyObject, description: `PEM (${describeKey(keyObject)})` };
}

/** Reads `jwksFile`: `{"keys": [...]}` with at least one public key usable with `algorithms`. */
function loadJwksFile(file: string, algorithms: readonly string[]): LoadedKeys {
  const parsed: unknown = parseJsonQuietly(readFileSync(file, 'utf8'));
  if (!isRecord(parsed) || !Array.isArray(parsed.keys))
    throw new JwtKeyError('not a JSON Web Key Set ({"keys": [...]})');
  let usable = 0;
  for (const [index, entry] of (parsed.keys as unknown[]).entries()) {
    if (!isRecord(entry)) throw new JwtKeyError(`keys[${index}] is not an object`);
    let keyObject: KeyObject;
    try {
      keyObject = keyObjectOfJwk(entry as JWK);
    } catch (error) {
      throw new JwtKeyError(`keys[${index}]: ${(error as Error).message}`);
    }
    if (algorithmsFor(keyObject).some((alg) => algorithms.includes(alg))) usable++;
  }
  if (usable === 0) throw new JwtKeyError(`no key usable with identity.jwt.algorithms (${algorithms.join(', ')})`);
  const jwks = jose().createLocalJWKSet(parsed as unknown as JSONWebKeySet);
  return { key: jwks, description: `JWKS (${usable} usable of ${(parsed.keys as unknown[]).length} keys)` };
}

// --- the mechanism ---------------------------------------------------------------------------

interface Settings {
  file: string;
  path: 'identity.jwt.keyFile' | 'identity.jwt.jwksFile';
  load: (file: string, algorithms: readonly string[]) => LoadedKeys;
  verifyOptions: JWTVerifyOptions;
  algorithms: string[];
  tenantClaim: string;
}

function checkConfig(config: JwtConfig): Settings {
  const { keyFile, jwksFile } = config;
  if ((keyFile === null) === (jwksFile === null)) {
    throw new ConfigError('identity.jwt', 'exactly one of keyFile and jwksFile is needed for plain-jwt');
  }
  if (config.audience === null || config.audience.length === 0) {
    throw new ConfigError(
      'identity.jwt.audience',
      'is required for plain-jwt (tokens for other services must not work here)',
    );
  }
  if (config.algorithms.length === 0) throw new ConfigError('identity.jwt.algorithms', 'must not be empty');
  for (const alg of config.algorithms) {
    if (!(JWT_ALGORITHMS as readonly string[]).includes(alg)) {
      throw new ConfigError(
        'identity.jwt.algorithms',
        `"${alg}" is not supported (one of ${JWT_ALGORITHMS.join(', ')})`,
      );
    }
  }
  if (config.tenantClaim.length === 0 || config.tenantClaim.split('.').some((s) => s.length === 0)) {
    throw new ConfigError('identity.jwt.tenantClaim', 'must be a claim name or a dotted path of claim names');
  }
  if (!Number.isFinite(config.clockToleranceSeconds) || config.clockToleranceSeconds < 0) {
    throw new ConfigError('identity.jwt.clockToleranceSeconds', 'must be a number of seconds >= 0');
  }
  const verifyOptions: JWTVerifyOptions = {
    algorithms: [...config.algorithms],
    audience: config.audience,
    requiredClaims: ['exp'],
    clockTolerance: config.clockToleranceSeconds,
  };
  if (config.issuer !== null) verifyOptions.issuer = config.issuer;
  return keyFile !== null
    ? {
        file: keyFile,
        path: 'identity.jwt.keyFile',
        load: loadKeyFile,
        verifyOptions,
        algorithms: [...config.algorithms],
        tenantClaim: config.tenantClaim,
      }
    : {
        file: jwksFile as string,
        path: 'identity.jwt.jwksFile',
        load: loadJwksFile,
        verifyOptions,
        algorithms: [...config.algorithms],
        tenantClaim: config.tenantClaim,
      };
}

/** jwtVerify, trying each candidate when a JWKS has several keys matching the token's header. */
async function verifyToken(token: string, key: VerificationKey, options: JWTVerifyOptions): Promise<JWTPayload> {
  const { jwtVerify } = jose();
  try {
    // Two calls because jwtVerify's overloads take a key or a key resolver, not the union.
    if (typeof key === 'function') return (await jwtVerify(token, key, options)).payload;
    return (await jwtVerify(token, key, options)).payload;
  } catch (error) {
    const candidates = error as Partial<AsyncIterable<unknown>> & { code?: unknown };
    if (candidates.code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS' || candidates[Symbol.asyncIterator] === undefined)
      throw error;
    let last: unknown = error;
    for await (const candidate of candidates as AsyncIterable<KeyObject>) {
      try {
        return (await jwtVerify(token, candidate, options)).payload;
      } catch (attempt) {
        last = attempt;
      }
    }
    throw last;
  }
}

/** Why a token was refused, for logs: jose's error code and the claim, never the token. */
function reasonOf(error: unknown): Record<string, unknown> {
  if (typeof error !== 'object' || error === null) return { reason: 'unknown' };
  const { code, claim } = error as { code?: unknown; claim?: unknown };
  return {
    reason: typeof code === 'string' ? code : (error as Error).name,
    ...(typeof claim === 'string' ? { claim } : {}),
  };
}

class JwtPlainMechanism implements JwtMechanism {
  readonly name = 'PLAIN';
  readonly #settings: Settings;
  readonly #logger: Logger | undefined;
  #keys: LoadedKeys;
  #watch: FileWatch | undefined;

  constructor(config: JwtConfig, options: JwtMechanismOptions) {
    this.#settings = checkConfig(config);
    this.#logger = options.logger;
    const { file, path, load, algorithms } = this.#settings;
    try {
      this.#keys = load(file, algorithms);
    } catch (error) {
      throw new ConfigError(path, `cannot load ${file}: ${(error as Error).message}`);
    }
    this.#logger?.info({ file, keys: this.#keys.description }, 'plain-jwt verification keys loaded');
    if (options.reloadIntervalMS > 0) {
      this.#watch = watchFiles([file], options.reloadIntervalMS, () => this.#reload());
    }
  }

  #reload(): void {
    const { file, path, load, algorithms } = this.#settings;
    try {
      this.#keys = load(file, algorithms);
      this.#logger?.info({ file, keys: this.#keys.description }, 'plain-jwt verification keys reloaded');
    } catch (error) {
      this.#logger?.warn(
        { file, setting: path, reason: (error as Error).message },
        'plain-jwt key file changed but cannot be loaded; keeping the previous keys',
      );
    }
  }

  async start(request: SaslStartRequest, context: AuthAttemptContext): Promise<SaslStepResult> {
    const credentials = parsePlainPayload(request.payload);
    if (credentials === undefined) {
      context.logger.debug({ reason: 'malformed PLAIN payload' }, 'plain-jwt refused');
      throw authenticationFailed();
    }
    let claims: JWTPayload;
    try {
      claims = await verifyToken(credentials.password, this.#keys.key, this.#settings.verifyOptions);
    } catch (error) {
      context.logger.info(reasonOf(error), 'plain-jwt refused the token');
      throw authenticationFailed();
    }
    const tenant = claimAt(claims, this.#settings.tenantClaim);
    if (typeof tenant !== 'string' || tenant.length === 0) {
      context.logger.info(
        { reason: 'tenant claim missing or not a non-empty string', claim: this.#settings.tenantClaim },
        'plain-jwt refused the token',
      );
      throw authenticationFailed();
    }
    const user = typeof claims.sub === 'string' && claims.sub.length > 0 ? claims.sub : credentials.authcid;
    return { done: true, payload: Buffer.alloc(0), principal: { user, db: request.db, tenant } };
  }

  close(): void {
    this.#watch?.close();
    this.#watch = undefined;
  }
}

/**
 * The PLAIN mechanism of method `plain-jwt`. Throws ConfigError when the configuration is
 * incomplete or the key / JWKS file cannot be loaded; `close()` stops watching the file.
 */
export function createJwtMechanism(config: JwtConfig, options: JwtMechanismOptions): JwtMechanism {
  jose();
  return new JwtPlainMechanism(config, options);
}
