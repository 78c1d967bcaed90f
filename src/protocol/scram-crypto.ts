/**
 * Pure SCRAM primitives shared by the client side (src/upstream, authenticating the proxy to its
 * upstream) and the server side (src/identity, authenticating clients).
 *
 * RFC 5802 §3 (SCRAM), RFC 7677 (SCRAM-SHA-256), and mongodb/specifications source/auth/auth.md
 * for MongoDB's variations: usernames are never SASLprep'd, SCRAM-SHA-1 derives its key from an
 * MD5 digest of `user:mongo:password`, and channel binding is never advertised (gs2 header "n,,").
 * No I/O, no state but the SASLprep module, loaded on first use.
 *
 *   SaltedPassword  := Hi(Normalize(password), salt, i)      Hi = PBKDF2 with HMAC-H
 *   ClientKey       := HMAC(SaltedPassword, "Client Key")
 *   StoredKey       := H(ClientKey)
 *   AuthMessage     := client-first-bare + "," + server-first + "," + client-final-without-proof
 *   ClientSignature := HMAC(StoredKey, AuthMessage)
 *   ClientProof     := ClientKey XOR ClientSignature
 *   ServerKey       := HMAC(SaltedPassword, "Server Key")
 *   ServerSignature := HMAC(ServerKey, AuthMessage)
 */

import { createHash, createHmac, pbkdf2, pbkdf2Sync, timingSafeEqual } from 'node:crypto';
import type SaslprepFunction from '@mongodb-js/saslprep';
import { onFirstUse } from '../wire/lazy-module.js';

/**
 * SASLprep (RFC 4013), from `@mongodb-js/saslprep` loaded on the first call rather than at import
 * (issue 16: its code point tables are a few MiB of RSS that a proxy without SCRAM never needs).
 * Throws only when the module cannot load; call it outside the try that reports prohibited characters.
 */
export const loadSaslprep = onFirstUse<typeof SaslprepFunction>('@mongodb-js/saslprep');

export const ScramMechanism = {
  sha1: 'SCRAM-SHA-1',
  sha256: 'SCRAM-SHA-256',
} as const;

export type ScramMechanismName = (typeof ScramMechanism)[keyof typeof ScramMechanism];

/** Node digest names for each mechanism. */
export type ScramHash = 'sha1' | 'sha256';

/** Drivers MUST refuse fewer iterations (auth.md): a man in the middle could otherwise downgrade. */
export const SCRAM_MIN_ITERATIONS = 4096;

/** gs2 header without channel binding, base64 of "n,," is the `c=biws` every exchange carries. */
export const GS2_HEADER = 'n,,';

export function hashOf(mechanism: ScramMechanismName): ScramHash {
  return mechanism === ScramMechanism.sha256 ? 'sha256' : 'sha1';
}

export function isScramMechanism(value: string): value is ScramMechanismName {
  return value === ScramMechanism.sha1 || value === ScramMechanism.sha256;
}

/** The digest length of H, which is also Hi's output length. */
export function hashLength(hash: ScramHash): number {
  return hash === 'sha256' ? 32 : 20;
}

export function h(hash: ScramHash, data: Uint8Array): Buffer {
  return createHash(hash).update(data).digest();
}

export function hmac(hash: ScramHash, key: Uint8Array, data: Uint8Array | string): Buffer {
  return createHmac(hash, key).update(data).digest();
}

export function xor(a: Uint8Array, b: Uint8Array): Buffer {
  if (a.length !== b.length) throw new RangeError(`xor of ${a.length} and ${b.length} bytes`);
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] as number) ^ (b[i] as number);
  return out;
}

/** Hi(str, salt, i) of RFC 5802 §2.2: PBKDF2 with HMAC-H and a one-block output. */
export function hi(hash: ScramHash, password: string | Uint8Array, salt: Uint8Array, iterations: number): Buffer {
  return pbkdf2Sync(password, salt, iterations, hashLength(hash), hash);
}

/** The same as `hi`, run on the libuv pool so that thousands of iterations do not block the loop. */
export function hiAsync(
  hash: ScramHash,
  password: string | Uint8Array,
  salt: Uint8Array,
  iterations: number,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pbkdf2(password, salt, iterations, hashLength(hash), hash, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/**
 * SCRAM-SHA-1's password "normalization" in MongoDB: HEX(MD5(UTF8(user + ":mongo:" + password))),
 * neither part SASLprep'd (auth.md, SCRAM-SHA-1).
 */
export function mongoPasswordDigest(username: string, password: string): string {
  return createHash('md5').update(`${username}:mongo:${password}`, 'utf8').digest('hex');
}

export interface ScramKeys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** ClientKey, StoredKey and ServerKey from a salted password. */
export function deriveKeys(hash: ScramHash, saltedPassword: Uint8Array): ScramKeys {
  const clientKey = hmac(hash, saltedPassword, 'Client Key');
  return {
    clientKey,
    storedKey: h(hash, clientKey),
    serverKey: hmac(hash, saltedPassword, 'Server Key'),
  };
}

export function clientSignature(hash: ScramHash, storedKey: Uint8Array, authMessage: string): Buffer {
  return hmac(hash, storedKey, authMessage);
}

export function clientProof(
  hash: ScramHash,
  clientKey: Uint8Array,
  storedKey: Uint8Array,
  authMessage: string,
): Buffer {
  return xor(clientKey, clientSignature(hash, storedKey, authMessage));
}

export function serverSignature(hash: ScramHash, serverKey: Uint8Array, authMessage: string): Buffer {
  return hmac(hash, serverKey, authMessage);
}

/**
 * Server side: recovers ClientKey from a proof (ClientProof XOR ClientSignature) and checks that
 * H(ClientKey) is the StoredKey. Constant time in the comparison.
 */
export function verifyClientProof(
  hash: ScramHash,
  storedKey: Uint8Array,
  authMessage: string,
  proof: Uint8Array,
): boolean {
  if (proof.length !== hashLength(hash) || storedKey.length !== hashLength(hash)) return false;
  const clientKey = xor(proof, clientSignature(hash, storedKey, authMessage));
  return timingSafeEqual(h(hash, clientKey), storedKey);
}

/** Constant-time comparison that is false (not a throw) for different lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** `AuthMessage` of RFC 5802 §3. */
export function authMessage(clientFirstBare: string, serverFirst: string, clientFinalWithoutProof: string): string {
  return `${clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;
}

/** saslname of RFC 5802 §5.1: "," is sent as "=2C" and "=" as "=3D". */
export function escapeSaslName(name: string): string {
  return name.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

/** Inverse of `escapeSaslName`; null when a "=" is followed by anything but 2C or 3D. */
export function unescapeSaslName(name: string): string | null {
  if (/=(?!2C|3D)/.test(name)) return null;
  return name.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

/**
 * Splits a SCRAM message into its `k=value` attributes (RFC 5802 §5.1). Values may contain "=",
 * never ",". Returns null for a malformed attribute or a repeated key.
 */
export function parseAttributes(message: string): Map<string, string> | null {
  const out = new Map<string, string>();
  if (message.length === 0) return out;
  for (const part of message.split(',')) {
    if (part.length < 2 || part[1] !== '=' || !/^[A-Za-z]$/.test(part[0] as string)) return null;
    const key = part[0] as string;
    if (out.has(key)) return null;
    out.set(key, part.slice(2));
  }
  return out;
}

/** Printable ASCII except ",", as RFC 5802 requires of nonces. */
export function isValidNonce(nonce: string): boolean {
  return nonce.length > 0 && /^[\x21-\x2b\x2d-\x7e]+$/.test(nonce);
}

/** Strict base64 (RFC 4648 alphabet, padded): Buffer.from(s, 'base64') alone accepts garbage. */
export function decodeBase64Strict(value: string): Buffer | null {
  if (value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return null;
  return Buffer.from(value, 'base64');
}
